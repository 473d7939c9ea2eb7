"""The positive-rate schedule (SIIM-ACR 1st place): a training sampler whose share of images with
pneumothorax moves linearly from ``start`` to ``end`` over the first ``iters`` iterations, then stays.

Registered in mmseg's DATA_SAMPLERS on import (``custom_imports`` of the dataset config): a config switches
it on with ``train_dataloader.sampler = dict(type='PositiveRateSampler', start=0.8, end=0.4)``, or 03_train
with ``positive_rate=[0.8, 0.4]``. helpers.modeling.train fills ``batch_size`` and ``iters`` (default:
the run's ``max_iters``) from the config.

Like mmengine's InfiniteSampler it yields indices forever, and every rank of a distributed run takes its
own slice of one global stream: global draw ``g`` belongs to iteration ``g // (batch_size * world_size)``
and to rank ``g % world_size``, so the ranks' streams are disjoint, together follow the schedule, and
are the same for the same seed. Each draw is positive with the scheduled probability; positives and
negatives are each taken from a fresh permutation of their pool, pool after pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from mmengine.dist import get_dist_info, sync_random_seed
from mmseg.registry import DATA_SAMPLERS
from torch.utils.data import Sampler

from helpers.data.prepared_folder import LABELS_FILE, positive_names


def positive_flags(dataset) -> np.ndarray:
    """(len(dataset),) bool: which entries of a PneumothoraxDataset have pneumothorax, from its labels.csv."""
    positive = positive_names(dataset.data_root, "the positive-rate sampler")
    suffix = getattr(dataset, "img_suffix", ".png")
    names = [Path(dataset.get_data_info(i)["img_path"]).name.removesuffix(suffix) for i in range(len(dataset))]
    return np.array([name in positive for name in names], dtype=bool)


def scheduled_share(iteration: int | np.ndarray, start: float, end: float, iters: int) -> np.ndarray:
    """The positive share at ``iteration``: linear from ``start`` at 0 to ``end`` at ``iters``, then ``end``."""
    progress = np.clip(np.asarray(iteration, dtype=np.float64) / max(1, iters), 0.0, 1.0)
    return start + (end - start) * progress


@DATA_SAMPLERS.register_module()
class PositiveRateSampler(Sampler):
    """An infinite, rank-aware sampler drawing positives at a share scheduled over training iterations.

    ``rank`` / ``world_size`` default to mmengine's distributed state; tests pass them to simulate ranks.
    """

    def __init__(
        self,
        dataset,
        start: float = 0.8,
        end: float = 0.4,
        iters: int | None = None,
        batch_size: int | None = None,
        seed: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if not (0.0 <= start <= 1.0 and 0.0 <= end <= 1.0):
            raise ValueError(f"positive shares must lie in [0, 1], not start={start}, end={end}")
        if iters is None or batch_size is None:
            raise ValueError("PositiveRateSampler needs iters and batch_size (helpers.modeling.train sets them)")
        dist_rank, dist_world = get_dist_info()
        self.rank = dist_rank if rank is None else int(rank)
        self.world_size = dist_world if world_size is None else int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world size {self.world_size}")
        self.dataset = dataset
        self.start, self.end, self.iters, self.batch_size = float(start), float(end), int(iters), int(batch_size)
        self.seed = sync_random_seed() if seed is None else int(seed)
        flags = positive_flags(dataset)
        self.positives, self.negatives = np.flatnonzero(flags), np.flatnonzero(~flags)
        if len(self.positives) == 0 or len(self.negatives) == 0:
            raise ValueError(
                f"{Path(dataset.data_root) / LABELS_FILE}: the training split needs both positive and "
                f"negative images for a positive-rate schedule ({len(self.positives)} positive, "
                f"{len(self.negatives)} negative)"
            )

    def _global_stream(self) -> Iterator[int]:
        rng = np.random.default_rng(self.seed)
        pools = {True: self.positives, False: self.negatives}
        queues: dict[bool, list[int]] = {True: [], False: []}
        draws_per_iter = self.batch_size * self.world_size
        iteration = 0
        while True:
            share = float(scheduled_share(iteration, self.start, self.end, self.iters))
            for positive in (rng.random(draws_per_iter) < share).tolist():
                if not queues[positive]:
                    queues[positive] = rng.permutation(pools[positive]).tolist()[::-1]
                yield queues[positive].pop()
            iteration += 1

    def __iter__(self) -> Iterator[int]:
        for g, index in enumerate(self._global_stream()):
            if g % self.world_size == self.rank:
                yield index

    def __len__(self) -> int:
        return len(self.dataset)
