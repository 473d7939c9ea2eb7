"""03_train options from the SIIM-ACR winners' toolkit, applied to a built config (helpers.modeling.train).

- ``fold=k``: train on ``fold<k>_train.txt`` and validate on ``fold<k>_val.txt`` (02_prepare with ``folds=K``).
- ``positive_rate=[start, end]`` (or ``[start, end, iters]``): helpers.samplers.PositiveRateSampler; the
  positive share goes from start to end over ``iters`` (default: all) iterations. It replaces the dataset's
  ``positive_repeats`` oversampling, which is set to 1.
- ``load_from``: a run folder (its best checkpoint, else its last) or a ``.pth``: the weights a fine-tune
  starts from (mmengine's ``load_from``; the optimizer and iteration count start afresh).
- ``pretrained``: a local checkpoint file for the backbone (``init_cfg=dict(type='Pretrained', ...)``), in
  place of the published weights a config names (for nodes without internet).
- ``keep_checkpoints``: how many interval checkpoints a run keeps (-1: all), so that the top-k of them
  can be averaged afterwards (helpers.modeling.ensemble).
"""

from __future__ import annotations

import logging
from pathlib import Path

from mmengine.config import Config

from helpers import paths
from helpers.prepared import fold_split_file
from helpers.runs import find_checkpoints

log = logging.getLogger(__name__)

SAMPLER_TYPE = "PositiveRateSampler"


def resolve_load_from(load_from: str | Path) -> Path:
    """A ``.pth`` file as given, or a run folder's best checkpoint (else its last)."""
    path = paths.resolve(load_from)
    if path.is_dir():
        best, last = find_checkpoints(path)
        if (best or last) is None:
            raise FileNotFoundError(f"{path}: load_from names a run folder without a best_*.pth or last_checkpoint")
        return (best or last).resolve()
    if path.suffix == ".pth" and path.is_file():
        return path.resolve()
    raise FileNotFoundError(f"{path}: load_from must be a run folder or a .pth checkpoint")


def apply_fold(cfg: Config, fold: int) -> None:
    """Point the train and val loaders at one fold's split files (they must exist under the data root)."""
    for loader, part in (("train_dataloader", "train"), ("val_dataloader", "val")):
        dataset = cfg[loader].dataset
        split_file = fold_split_file(fold, part)
        if not (Path(dataset.data_root) / split_file).is_file():
            raise FileNotFoundError(f"{Path(dataset.data_root) / split_file}: no such fold file "
                                    f"(run 02_prepare with folds > {fold})")
        dataset.ann_file = split_file


def apply_positive_rate(cfg: Config, positive_rate: list[float] | tuple[float, ...] | None) -> None:
    """Switch the train loader to the positive-rate schedule (when asked, or when the config names the
    sampler) and give the sampler the run's batch size and schedule length."""
    loader = cfg.train_dataloader
    if positive_rate is not None:
        if len(positive_rate) not in (2, 3):
            raise ValueError(f"positive_rate is [start, end] or [start, end, iters], not {positive_rate!r}")
        start, end = float(positive_rate[0]), float(positive_rate[1])
        iters = int(positive_rate[2]) if len(positive_rate) == 3 else None
        loader.sampler = dict(type=SAMPLER_TYPE, start=start, end=end, iters=iters)
    if loader.sampler.get("type") != SAMPLER_TYPE:
        return
    loader.sampler["batch_size"] = int(loader.batch_size)
    if loader.sampler.get("iters") is None:
        loader.sampler["iters"] = int(cfg.train_cfg.max_iters)
    if loader.dataset.get("positive_repeats", 1) != 1:
        log.info("positive-rate schedule: positive_repeats %s -> 1 (the sampler sets the share)", loader.dataset.positive_repeats)
        loader.dataset.positive_repeats = 1


def apply_pretrained(cfg: Config, pretrained: str | Path) -> None:
    """Initialize the backbone from a local checkpoint file instead of the config's published weights."""
    path = paths.resolve(pretrained)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such pretrained checkpoint file")
    cfg.model.pretrained = None
    cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=str(path.resolve()))


def apply_winners_options(cfg: Config, *, fold: int | None = None, positive_rate=None, load_from=None,
                          pretrained=None, keep_checkpoints: int | None = None) -> None:
    """Apply the options above that are set (None leaves the config as it is)."""
    if fold is not None:
        apply_fold(cfg, int(fold))
    apply_positive_rate(cfg, positive_rate)
    if load_from is not None:
        cfg.load_from = str(resolve_load_from(load_from))
    if pretrained is not None:
        apply_pretrained(cfg, pretrained)
    if keep_checkpoints is not None:
        cfg.default_hooks.checkpoint.max_keep_ckpts = int(keep_checkpoints)
