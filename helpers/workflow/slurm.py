"""The sweep as a SLURM array script: one job per lr (and fold), each the sweep's own command."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

from helpers.core import paths
from helpers.core.fileio import atomic_write_text
from helpers.core.parameters import LR, check_parameters, check_value, declared_names

log = logging.getLogger(__name__)


SET_PER_JOB = ("config", "lr", "work_dir", "gpus", "fold")  # write_sbatch's script sets these itself, per job


def write_sbatch(
    lrs: list[float] | tuple[float, ...],
    parameters: dict,
    path: Path | str,
    *,
    gpus: int = 1,
    cpus_per_gpu: int = 8,
    hours: int = 4,
    outputs: Path | str = paths.OUTPUTS_DIR,
    folds: int = 0,
) -> Path:
    """A SLURM array script, one job per lr (per lr and fold with ``folds=K``), each running the sweep for its
    own lr (and fold) on its own node share (``gpus=0``: CPU jobs, no GPU requested). Each job is the sweep's
    command, so a re-submitted or requeued job skips a finished run and resumes an interrupted one. The ``-p``
    flags are the 03_train parameters (helpers.core.parameters.TrainParams) given, checked, in their declared order
    (values as YAML, lists included); the script sets :data:`SET_PER_JOB` itself."""
    check_parameters("03_train", parameters, source="the sweep's parameters", paths_exist=False)
    for lr in lrs:
        check_value("03_train", "lr", lr, LR)
    config = parameters.get("config") or paths.SWEEP_CONFIG
    extra = " ".join(
        f"-p {shlex.quote(f'{k}={json.dumps(parameters[k])}')}"
        for k in declared_names("03_train")
        if k in parameters and k not in SET_PER_JOB
    )
    lr_list = " ".join(f"{lr:g}" for lr in lrs)
    if folds:  # job i: lr i // K, fold i % K
        select = f"""LR=${{LRS[$((SLURM_ARRAY_TASK_ID / {folds}))]}}
FOLD=$((SLURM_ARRAY_TASK_ID % {folds}))"""
        which = f'--folds {folds} --fold "$FOLD"'
    else:
        select = "LR=${LRS[$SLURM_ARRAY_TASK_ID]}"
        which = ""
    script = f"""#!/bin/bash
#SBATCH --job-name=pneumothorax-sweep
#SBATCH --array=0-{len(lrs) * max(1, folds) - 1}
{f"#SBATCH --gres=gpu:{gpus}" if gpus else "#SBATCH --ntasks=1"}
#SBATCH --cpus-per-task={cpus_per_gpu * max(1, gpus)}
#SBATCH --time={hours}:00:00
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output={Path(outputs) / "runs" / "slurm-%A_%a.out"}
# Written by `python -m helpers sweep --sbatch`: one job per lr, each runs the sweep for its lr
# (notebooks/03_train.ipynb through papermill; gpus > 1 launches torchrun from inside helpers, never DDP in the
# kernel). A finished run is skipped and an interrupted one resumes from its last checkpoint, so a requeued or
# re-submitted job picks up.
set -euo pipefail
cd {shlex.quote(str(paths.REPO_ROOT))}
LRS=({lr_list})
{select}
{shlex.quote(sys.executable)} -m helpers sweep --no-yaml --lrs "$LR" {which} --config {shlex.quote(config)} \
    --outputs {shlex.quote(str(outputs))} -p gpus={gpus} {extra}
"""
    path = Path(path)
    atomic_write_text(path, script)
    path.chmod(0o755)
    return path
