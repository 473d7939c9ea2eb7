"""03_train options from the SIIM-ACR winners' toolkit, as overrides of a loaded config (helpers.modeling.train).

- ``fold=k``: train on ``fold<k>_train.txt`` and validate on ``fold<k>_val.txt`` (02_prepare with ``folds=K``).
- ``positive_rate=[start, end]`` (or ``[start, end, iters]``): helpers.data.samplers.PositiveRateSampler; the
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

from helpers.core import paths
from helpers.core.run_folders import find_checkpoints
from helpers.data.prepared_folder import fold_split_file

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


def replacing(cfg: Config, key: str, value: dict) -> dict:
    """``value`` as an override that replaces the dict at the dotted ``key`` (mmengine's ``_delete_``) rather
    than merging into it; a key the config lacks is simply set."""
    node = cfg.to_dict()
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return dict(value)
        node = node[part]
    return {"_delete_": True, **value}


def fold_overrides(data_root: str | Path, fold: int) -> dict:
    """The train and val loaders on one fold's split files (they must exist under ``data_root``)."""
    overrides = {}
    for loader, part in (("train_dataloader", "train"), ("val_dataloader", "val")):
        split_file = fold_split_file(fold, part)
        if not (Path(data_root) / split_file).is_file():
            raise FileNotFoundError(
                f"{Path(data_root) / split_file}: no such fold file (run 02_prepare with folds > {fold})"
            )
        overrides[f"{loader}.dataset.ann_file"] = split_file
    return overrides


def positive_rate_overrides(
    cfg: Config, positive_rate: list[float] | tuple[float, ...] | None, batch_size: int, max_iters: int
) -> dict:
    """The train loader on the positive-rate schedule (when asked, or when the config names the sampler), the
    sampler given the run's batch size and schedule length."""
    sampler = dict(cfg.train_dataloader.sampler)
    if positive_rate is not None:
        if len(positive_rate) not in (2, 3):
            raise ValueError(f"positive_rate is [start, end] or [start, end, iters], not {positive_rate!r}")
        iters = int(positive_rate[2]) if len(positive_rate) == 3 else None
        sampler = dict(type=SAMPLER_TYPE, start=float(positive_rate[0]), end=float(positive_rate[1]), iters=iters)
    if sampler.get("type") != SAMPLER_TYPE:
        return {}
    sampler["batch_size"] = int(batch_size)
    if sampler.get("iters") is None:
        sampler["iters"] = int(max_iters)
    overrides: dict = {"train_dataloader.sampler": replacing(cfg, "train_dataloader.sampler", sampler)}
    repeats = cfg.train_dataloader.dataset.get("positive_repeats", 1)
    if repeats != 1:
        log.info("positive-rate schedule: positive_repeats %s -> 1 (the sampler sets the share)", repeats)
        overrides["train_dataloader.dataset.positive_repeats"] = 1
    return overrides


def pretrained_overrides(cfg: Config, pretrained: str | Path) -> dict:
    """The backbone initialized from a local checkpoint file instead of the config's published weights."""
    path = paths.resolve(pretrained)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such pretrained checkpoint file")
    return {
        "model.pretrained": None,
        "model.backbone.init_cfg": replacing(
            cfg, "model.backbone.init_cfg", {"type": "Pretrained", "checkpoint": str(path.resolve())}
        ),
    }


def winners_overrides(
    cfg: Config,
    *,
    data_root: str | Path,
    batch_size: int,
    max_iters: int,
    fold: int | None = None,
    positive_rate=None,
    load_from=None,
    pretrained=None,
    keep_checkpoints: int | None = None,
) -> dict:
    """The options above that are set, as config overrides (dotted keys for ``cfg.merge_from_dict``); None
    leaves the config as it is."""
    overrides = fold_overrides(data_root, int(fold)) if fold is not None else {}
    overrides.update(positive_rate_overrides(cfg, positive_rate, batch_size, max_iters))
    if load_from is not None:
        overrides["load_from"] = str(resolve_load_from(load_from))
    if pretrained is not None:
        overrides.update(pretrained_overrides(cfg, pretrained))
    if keep_checkpoints is not None:
        overrides["default_hooks.checkpoint.max_keep_ckpts"] = int(keep_checkpoints)
    return overrides
