"""Several training processes on one node: how many, and the process group each torchrun process joins.

``gpus > 1`` (a GPU node) or ``nproc > 1`` (CPU processes) makes 03_train launch ``torchrun`` in a
subprocess; every process runs ``python -m helpers.modeling.train <config.py> --launcher pytorch``, which
calls :func:`init_process_group` before mmengine's Runner. mmengine's own pytorch launcher calls
``torch.cuda.set_device`` and so cannot start a CPU process; with the group already initialised, the Runner
skips it. On a GPU the group uses nccl and one device per local rank; on the CPU gloo, DDP without
``device_ids`` and plain BatchNorm (torch's SyncBatchNorm runs on GPUs only), whose running statistics
DDP broadcasts from rank 0 at every step and mmengine's SyncBuffersHook averages before validation and at
the end, so that every rank holds the same model.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist
from mmengine.config import Config

log = logging.getLogger(__name__)


def process_count(gpus: int, nproc: int) -> int:
    """The number of training processes: ``gpus`` when above 1 (one per GPU), else ``nproc``."""
    if gpus > 1 and nproc > 1:
        raise ValueError(f"gpus={gpus} and nproc={nproc}: give one of them (gpus on a GPU node, nproc on the CPU)")
    if gpus < 0 or nproc < 1:
        raise ValueError(f"gpus={gpus}, nproc={nproc}: gpus must be >= 0 and nproc >= 1")
    return gpus if gpus > 1 else nproc


def backend() -> str:
    """nccl where CUDA is, gloo on the CPU."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def _sync_bn_to_bn(node) -> None:
    """Replace every ``SyncBN`` norm layer type in a (nested) config by ``BN``, in place."""
    if isinstance(node, dict):
        if node.get("type") == "SyncBN":
            node["type"] = "BN"
        for value in node.values():
            _sync_bn_to_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _sync_bn_to_bn(value)


def init_process_group(cfg: Config) -> None:
    """Join torchrun's process group (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` from its environment) and set
    ``cfg`` up for DDP on this device: call before ``Runner.from_cfg(cfg)`` in every process."""
    if "RANK" not in os.environ or "LOCAL_RANK" not in os.environ:
        raise RuntimeError("--launcher pytorch needs torchrun's environment (RANK, LOCAL_RANK): start it with torchrun")
    name = backend()
    if name == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    else:
        _sync_bn_to_bn(cfg.model)
        cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=True)
        # DDP broadcasts rank 0's BatchNorm statistics before each forward; each rank then updates its own:
        # mmengine's SyncBuffersHook averages them before validating and at the end of training.
        cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(type="SyncBuffersHook")]
    cfg.env_cfg.dist_cfg = dict(backend=name)
    if not dist.is_initialized():
        dist.init_process_group(backend=name)
    log.info("rank %d of %d joined the %s process group", dist.get_rank(), dist.get_world_size(), name)
