"""The layout of a training run's folder and of its evaluation folders: file names, readers, the run's label.

A run folder (``outputs/runs/<config>/lr<lr>/``, ``lr<lr>_fold<k>/`` for a fold of a k-fold sweep; 03_train's
``work_dir``)::

    config.py                    the config the run trained with (dumped by 03_train)
    manifest.json                parameters, lr, code version, packages, device
    record.json                  what the run was made from, started / finished (the sweep skips a finished one)
    metrics.json                 best and last val metrics, throughput (written when training ends)
    best_mDice_iter_*.pth, last_checkpoint, iter_*.pth
    averaged_top<k>.pth          the mean weights of the top-k checkpoints (helpers.modeling.ensemble)
    <timestamp>/vis_data/scalars.json    mmengine's logged scalars, one folder per session

An ensemble's folder (``outputs/ensembles/<name>/``) holds its manifest.json (members, checkpoints, TTA);
it stands for a run folder in its evaluation (helpers.modeling.ensemble).

An evaluation folder (``outputs/eval/<config>_lr<lr>/<split>/``, 04_evaluate's output)::

    eval.json                    what was evaluated, how, and the files below
    metrics.json                 every metric of the split (EVAL_METRICS_FILE: not the run's METRICS_FILE)
    per_image.csv, probs.npy, mmseg_pred.npy, postprocess_grid.csv
    MODEL_CARD.md                the model, data, metrics, post-processing, intended use and limits
    .predicting-<host>-<pid>-*/  while it runs: its per-pixel predictions (val for tuning, the split's truth);
                                 removed when it ends, or by the next evaluation when its process died

Everyone else imports these names; no other module types them.
"""

from __future__ import annotations

import glob
import json
import math
import re
from pathlib import Path

from helpers.core import paths
from helpers.core.data_profile import DEMO, choose_profile
from helpers.core.fileio import read_json

CONFIG_FILE = "config.py"
MANIFEST_FILE = "manifest.json"
RECORD_FILE = "record.json"  # helpers.workflow.stage_records: the sweep's record of the run's inputs and state
METRICS_FILE = "metrics.json"
LAST_CHECKPOINT_FILE = "last_checkpoint"
BEST_METRIC = "mDice"
SCALARS_GLOB = "*/vis_data/scalars.json"
AVERAGED_CHECKPOINT = "averaged_top{k}.pth"

EVAL_INFO_FILE = "eval.json"
EVAL_METRICS_FILE = "metrics.json"
PER_IMAGE_FILE = "per_image.csv"
PROBS_FILE = "probs.npy"
MMSEG_PRED_FILE = "mmseg_pred.npy"
GRID_FILE = "postprocess_grid.csv"
MODEL_CARD_FILE = "MODEL_CARD.md"  # helpers.evaluation.model_card
PAIRED_FILE = "paired.csv"  # in outputs/eval/, beside comparison.csv: helpers.evaluation.paired
SCRATCH_PREFIX = ".predicting-"  # + "<host>-<pid>-": an evaluation's scratch folder, inside its evaluation folder

FOLD_SUFFIX = "_fold"  # a fold run's folder: lr<lr>_fold<k>
RUN_FOLDER = re.compile(rf"^lr(?P<lr>.+?)(?:{FOLD_SUFFIX}(?P<fold>\d+))?$")


def run_dir(config: str, lr: float, outputs: Path | str = paths.OUTPUTS_DIR) -> Path:
    """The work_dir of one training run: ``outputs/runs/<config>/lr<lr>/``."""
    return paths.resolve(outputs) / "runs" / paths.config_name(config) / f"lr{lr:g}"


def fold_run_dir(config: str, lr: float, fold: int, outputs: Path | str = paths.OUTPUTS_DIR) -> Path:
    """The work_dir of one fold's run in a k-fold sweep: ``outputs/runs/<config>/lr<lr>_fold<k>/``."""
    single = run_dir(config, lr, outputs)
    return single.with_name(f"{single.name}{FOLD_SUFFIX}{int(fold)}")


def ensemble_dir(name: str, outputs: Path | str = paths.OUTPUTS_DIR) -> Path:
    """The folder of one ensemble of runs (its manifest.json names the members): ``outputs/ensembles/<name>/``."""
    return paths.resolve(outputs) / "ensembles" / name


def eval_dir(run: Path | str, split: str, outputs: Path | str = paths.OUTPUTS_DIR) -> Path:
    """Where 04_evaluate writes the results of one run on one split."""
    run = Path(run)
    return paths.resolve(outputs) / "eval" / f"{run.parent.name}_{run.name}" / split


def trained_runs(outputs: Path | str = paths.OUTPUTS_DIR) -> list[Path]:
    """Every finished run folder under ``outputs/runs/`` (one with a metrics.json)."""
    return sorted(p.parent for p in (paths.resolve(outputs) / "runs").glob(f"*/lr*/{METRICS_FILE}"))


def evaluations(outputs: Path | str = paths.OUTPUTS_DIR, split: str = "test") -> list[Path]:
    """Every 04_evaluate folder of ``split`` under ``outputs/eval/``."""
    return sorted(p.parent for p in (paths.resolve(outputs) / "eval").glob(f"*/{split}/{EVAL_INFO_FILE}"))


def read_scalars(work_dir: Path | str) -> tuple[list[dict], list[dict]]:
    """mmengine's ``vis_data/scalars.json`` of every session of a run (resumed ones too), split into
    train rows (loss, lr, time) and val rows (metrics), one per step, later sessions winning."""
    train, val = {}, {}
    for path in sorted(glob.glob(str(Path(work_dir) / SCALARS_GLOB))):
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            (val if "mIoU" in row else train)[row["step"]] = row
    return [train[k] for k in sorted(train)], [val[k] for k in sorted(val)]


def find_checkpoints(work_dir: Path | str) -> tuple[Path | None, Path | None]:
    """(best by val mDice, last) checkpoints of a run folder.

    ``last_checkpoint`` (mmengine's pointer) holds the absolute path it was saved under; it is read relative to
    the run folder: the checkpoint of that name in this folder, so that a copied or moved outputs folder finds
    its own checkpoint, never the original tree's (a pointer outside the folder whose file is not here names
    none)."""
    work_dir = Path(work_dir)
    best = sorted(work_dir.glob(f"best_{BEST_METRIC}_iter_*.pth"), key=lambda p: p.stat().st_mtime)
    last_file = work_dir / LAST_CHECKPOINT_FILE
    pointer = last_file.read_text().strip() if last_file.is_file() else ""
    last = work_dir / Path(pointer).name if pointer else None
    return (best[-1] if best else None), (last if last is not None and last.is_file() else None)


def step_checkpoint(work_dir: Path | str, step: int) -> Path | None:
    """The kept checkpoint of iteration ``step`` (``iter_<step>.pth``, or the best one saved at that step);
    None when the run did not keep it."""
    work_dir = Path(work_dir)
    candidates = [
        work_dir / f"iter_{int(step)}.pth",
        *sorted(work_dir.glob(f"best_{BEST_METRIC}_iter_{int(step)}.pth")),
    ]
    return next((c for c in candidates if c.is_file()), None)


# What re-makes a run folder's files (the last words of the error when one does not read back).
RUN_REMEDY = (
    "03_train writes it: retrain this run (`python -m helpers sweep --force` with its lr; its checkpoints stay "
    "until then), or put back a good copy of the file"
)
EVAL_REMEDY = "04_evaluate writes it: re-run 04_evaluate (`python -m helpers pipeline --force 04_evaluate`)"


def read_manifest(work_dir: Path | str) -> dict:
    """The run's ``manifest.json`` ({} when the run has none, e.g. a checkpoint copied on its own); one that
    does not parse raises :class:`helpers.core.fileio.CorruptFileError` naming it."""
    path = Path(work_dir) / MANIFEST_FILE
    return read_json(path, RUN_REMEDY) if path.is_file() else {}


def read_metrics(work_dir: Path | str) -> dict:
    """The run's ``metrics.json`` (03_train's summary); raises naming the file when training has not finished,
    or (:class:`helpers.core.fileio.CorruptFileError`) when it does not parse."""
    path = Path(work_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics yet (the run has not finished training)")
    return read_json(path, RUN_REMEDY)


def read_eval_file(eval_folder: Path | str, name: str = EVAL_INFO_FILE) -> dict:
    """One JSON file of an evaluation folder (``eval.json``, its ``metrics.json``); one that does not parse
    raises :class:`helpers.core.fileio.CorruptFileError` naming it and saying to re-run 04_evaluate."""
    return read_json(Path(eval_folder) / name, EVAL_REMEDY)


def run_label(work_dir: Path | str) -> tuple[str, float]:
    """(label, lr) of a run: the config name from its manifest, else the folder names (``<config>/lr<lr>``,
    ``<config>/lr<lr>_fold<k>``), with `` (fold k)`` appended for a fold's run; the lr is NaN when neither
    says it."""
    work_dir = Path(work_dir)
    manifest = read_manifest(work_dir)
    parameters = manifest.get("parameters", {})
    config = parameters.get("config") or work_dir.parent.name
    lr, fold = manifest.get("lr"), parameters.get("fold")
    folder = RUN_FOLDER.match(work_dir.name)
    if folder:
        if lr is None:
            try:
                lr = float(folder["lr"])
            except ValueError:
                lr = None
        if fold is None and folder["fold"] is not None:
            fold = int(folder["fold"])
    label = paths.config_name(config) + ("" if fold is None else f" (fold {fold})")
    return label, float(lr) if lr is not None else math.nan


def choose_outputs(outputs_dir: Path | str | None = None, split: str | None = None) -> tuple[Path, str | None]:
    """(outputs folder, note) for 04 (trained runs) or, with ``split``, 05 (evaluations of that split).

    ``outputs_dir`` as given (relative to the repository root); None means ``outputs/``, or the demo's
    ``outputs/demo/`` (``make demo``) when only that one holds what is looked for; the note says so.
    """
    if outputs_dir is not None:
        return paths.resolve(outputs_dir), None

    def found(outputs: Path) -> bool:
        return bool(evaluations(outputs, split) if split else trained_runs(outputs))

    what = f"evaluations of {split}" if split else "trained runs"
    chosen, note = choose_profile(
        what,
        paths.OUTPUTS_DIR,
        paths.DEMO_OUTPUTS_DIR,
        lambda: found(paths.OUTPUTS_DIR),
        lambda: found(paths.DEMO_OUTPUTS_DIR),
    )
    return (paths.DEMO_OUTPUTS_DIR, note) if chosen == DEMO else (paths.OUTPUTS_DIR, None)
