"""A hook for tests/test_distributed.py, loaded into every torchrun process through the test config's
``custom_imports``: each rank writes what it trained on and the weights it ended with, and creates its files
with its own umask (rank 0: 022, others: 077) so that the test can tell which rank wrote a file."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

RANK_UMASK = {0: 0o022}
OTHER_RANKS_UMASK = 0o077


@HOOKS.register_module()
class DDPProbeHook(Hook):
    """Record each rank's data shard, the batches it trained on and its weights (at the start of the session
    and at the end) in ``out_dir``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.record: dict = {}

    def before_train(self, runner) -> None:
        os.umask(RANK_UMASK.get(runner.rank, OTHER_RANKS_UMASK))
        loader = runner.train_dataloader
        sampler = loader.sampler
        # a fresh sampler like the loader's: the same seed and this process's rank and world size
        fresh = type(sampler)(loader.dataset, shuffle=sampler.shuffle, seed=sampler.seed)
        stream = list(itertools.islice(iter(fresh), runner.max_iters * loader.batch_size))
        first_pass = stream[: len(loader.dataset) // sampler.world_size]
        self.record = {
            "rank": runner.rank,
            "world_size": runner.world_size,
            "start_iter": runner.iter,
            "sampler_rank": sampler.rank,
            "sampler_world_size": sampler.world_size,
            "dataset_size": len(loader.dataset),
            "first_pass": first_pass,
            "stream_paths": [loader.dataset.get_data_info(i)["img_path"] for i in stream],
            "wrapper": type(runner.model).__name__,
            "seen_paths": [],
        }

        self._save_weights(runner, f"rank{runner.rank}-from{runner.iter}.pt")

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self.record["seen_paths"].append([sample.img_path for sample in data_batch["data_samples"]])

    def after_train(self, runner) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        name = f"rank{runner.rank}-iter{runner.iter}"
        (self.out_dir / f"{name}.json").write_text(json.dumps(self.record))
        self._save_weights(runner, f"{name}.pt")

    def _save_weights(self, runner, file_name: str) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        torch.save({key: value.detach().cpu() for key, value in model.state_dict().items()}, self.out_dir / file_name)
