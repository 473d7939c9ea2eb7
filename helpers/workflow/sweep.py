"""The learning-rate sweep: 03_train once per lr (and fold), each in its own run folder; a finished run is skipped,
an interrupted one resumes, a changed one retrains from an emptied folder, once everything it needs has been read
back."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from helpers.core import paths, run_folders
from helpers.core.fileio import CorruptFileError
from helpers.core.locks import LOCK_FILE, FolderLocked, folder_lock
from helpers.core.parameters import LR, check_parameters, check_value, defaults
from helpers.data.prepared_folder import MANIFEST_FILE as PREPARED_MANIFEST_FILE
from helpers.data.prepared_folder import PreparedDataError, check_prepared, read_prepared, remake_advice
from helpers.workflow import stage_records
from helpers.workflow.notebook_runner import run_notebook
from helpers.workflow.stage_records import NOT_INPUTS, prepared_manifest_hash

log = logging.getLogger(__name__)


SEED_LRS = (0.01, 0.001, 0.0001)


def _config_hash(config: str) -> str | None:
    try:
        return stage_records.config_hash(config)
    except FileNotFoundError:  # the run itself fails with the message naming it
        return None


def run_inputs(run_parameters: dict) -> dict:
    """What one training run is made from (helpers.workflow.stage_records): 03's notebook, its parameters, the config's
    content, the code, the prepared data's manifest (a run by hand, helpers.workflow.interactive, gives the same)."""
    return {
        "notebook": stage_records.notebook_hash("03_train"),
        "parameters": {k: v for k, v in {**defaults("03_train"), **run_parameters}.items() if k not in NOT_INPUTS},
        "config": _config_hash(run_parameters["config"]),
        "code": stage_records.code_hash(),
        "prepared_manifest": prepared_manifest_hash(run_parameters.get("prepared_root")),
    }


def _start_afresh(work_dir: Path) -> None:
    """Empty a run folder before training from scratch (its old checkpoints would be taken for this run's);
    raises :class:`helpers.core.locks.FolderLocked` when another process is training into it."""
    with folder_lock(work_dir, "run folder"):
        for entry in work_dir.iterdir():
            if entry.name == LOCK_FILE:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    work_dir.mkdir(parents=True, exist_ok=True)


# What to do about a run's record.json that does not parse (deleting it touches nothing else of the run).
RUN_RECORD_REMEDY = (
    "it is the sweep's record of what this run was made from: delete it to keep the run as it is (the sweep "
    "then takes a finished run as trained before records were kept), or retrain the run with --force"
)


@dataclass
class _Plan:
    """One run of the sweep as its folder stands, decided before any run starts: skip it, resume it, or
    train it afresh (``why``)."""

    lr: float
    fold: int | None
    work_dir: Path
    parameters: dict
    label: str
    inputs: dict
    record_path: Path
    expected: list[Path]
    skip: bool
    resume: bool
    why: str


def _plan(lr: float, fold: int | None, work_dir: Path, run_parameters: dict, *, force: bool) -> _Plan:
    """Read a run folder's record and outputs back and decide what the sweep does with it. A record or
    output that is there but does not parse raises :class:`helpers.core.fileio.CorruptFileError` naming it
    (the run is neither skipped on its word nor emptied over it); ``force`` retrains whatever is there."""
    label = f"lr {lr:g}" + ("" if fold is None else f" fold {fold}")
    inputs = run_inputs(run_parameters)
    record_path = work_dir / run_folders.RECORD_FILE
    expected = [work_dir / run_folders.METRICS_FILE]  # a run trained by hand in Lab has no report: kept
    plan = _Plan(lr, fold, work_dir, run_parameters, label, inputs, record_path, expected, False, False, "--force")
    if force:
        return plan
    record = stage_records.read_record(record_path, RUN_RECORD_REMEDY)
    state = stage_records.status(record_path, inputs, expected)
    if state.unreadable:
        raise CorruptFileError(f"{label}: {state.unreadable}; {run_folders.RUN_REMEDY}")
    metrics_file = work_dir / run_folders.METRICS_FILE
    unrecorded = (
        record is None and metrics_file.exists() and run_folders.read_metrics(work_dir).get("status") != "failed"
    )
    if state.done or unrecorded:
        plan.skip = True
        plan.why = (
            f"its record {record_path} matches"
            if state.done
            else "finished before records were kept; --force retrains it"
        )
        return plan
    failed = metrics_file.exists() and run_folders.read_metrics(work_dir).get("status") == "failed"  # diverged
    plan.resume = not failed and state.resumable and run_folders.find_checkpoints(work_dir)[1] is not None
    plan.why = state.reason
    return plan


def _check_prepared_data(plans: list[_Plan]) -> None:
    """The prepared folder of every run that is about to train, read back (its manifest parses and names its
    size, that of the run's ``img_size`` when given) before any run folder is emptied: a missing or corrupt
    one raises naming the file and the 02_prepare command."""
    checked = set()
    for plan in plans:
        root = _prepared_root(plan.parameters)
        img_size = plan.parameters.get("img_size")
        if (root, img_size) in checked or root is None:
            continue
        checked.add((root, img_size))
        if img_size is not None:
            check_prepared(root, int(img_size))
        elif not (root / PREPARED_MANIFEST_FILE).is_file():
            raise PreparedDataError(f"No prepared data in {root} (no {PREPARED_MANIFEST_FILE}): {remake_advice(root)}")
        else:
            read_prepared(root)


def _prepared_root(run_parameters: dict) -> Path | None:
    """The prepared folder a run trains on: its ``prepared_root``, else its config's ``data_root``."""
    if run_parameters.get("prepared_root"):
        return paths.resolve(run_parameters["prepared_root"])
    from mmengine.config import Config

    try:
        cfg = Config.fromfile(str(paths.config_path(run_parameters["config"])))
        return paths.resolve(cfg.train_dataloader.dataset.data_root)
    except (FileNotFoundError, AttributeError, KeyError):  # the run itself fails with the message naming it
        return None


def sweep(
    lrs: list[float] | tuple[float, ...] = SEED_LRS,
    parameters: dict | None = None,
    outputs: Path | str = paths.OUTPUTS_DIR,
    folds: int = 0,
    *,
    force: bool = False,
    only_fold: int | None = None,
) -> pd.DataFrame:
    """Run 03_train once per lr (and, with ``folds=K``, once per fold of each lr, on the fold files of
    02_prepare; ``only_fold``: that fold alone), each into its own run folder with its executed notebook
    and HTML report.

    Every run's parameters are checked before the first starts (a bad one raises ParameterError and nothing
    runs). A run whose record (``record.json`` in its folder) matches its inputs and that finished is skipped;
    one that was interrupted resumes from its last checkpoint; a finished run without a record (trained before
    records, or by hand) is kept. ``force`` retrains every run from scratch. A failed run is reported in the
    table and the others go on.

    Before the first run starts, and so before any run folder is emptied, every run's record and outputs are
    read back and so is the prepared data of every run that will train: a record, metrics.json or manifest
    that does not parse raises :class:`helpers.core.fileio.CorruptFileError` naming the file and what to do,
    missing or mis-sized prepared data :class:`helpers.data.prepared_folder.PreparedDataError` with the
    02_prepare command; nothing is touched.
    """
    parameters = dict(parameters or {})
    config = parameters.get("config") or paths.SWEEP_CONFIG
    jobs = []
    fold_list = [only_fold] if only_fold is not None else (range(folds) if folds else [None])
    for lr, fold in [(lr, fold) for lr in lrs for fold in fold_list]:
        check_value("03_train", "lr", lr, LR)
        work_dir = (
            run_folders.run_dir(config, lr, Path(outputs))
            if fold is None
            else run_folders.fold_run_dir(config, lr, fold, Path(outputs))
        )
        run_parameters = {**parameters, "config": config, "lr": float(lr), "work_dir": str(work_dir)}
        if fold is not None:
            run_parameters["fold"] = fold
        jobs.append((lr, fold, work_dir, check_parameters("03_train", run_parameters, source="the sweep's parameters")))
    plans = [_plan(*job, force=force) for job in jobs]  # every run's state read back before the first starts
    _check_prepared_data([plan for plan in plans if not plan.skip])
    rows = []
    for plan in plans:
        lr, fold, work_dir, run_parameters = plan.lr, plan.fold, plan.work_dir, plan.parameters
        label, inputs, record_path, expected = plan.label, plan.inputs, plan.record_path, plan.expected
        row = {
            "config": paths.config_name(config),
            "lr": lr,
            "fold": fold,
            "ok": True,
            "skipped": False,
            "minutes": 0.0,
            "report": str(work_dir / "03_train.html"),
            "error": None,
        }
        metrics_file = work_dir / run_folders.METRICS_FILE
        if plan.skip:
            print(f"{label}: already trained, skipped ({plan.why})", flush=True)
            row["skipped"] = True
        else:
            resume = plan.resume
            if resume:
                print(
                    f"{label}: resuming the interrupted run from {run_folders.find_checkpoints(work_dir)[1]}",
                    flush=True,
                )
            else:
                print(f"{label}: training ({plan.why})", flush=True)
            try:
                if not resume:
                    _start_afresh(work_dir)
            except FolderLocked as err:
                row.update({"ok": False, "error": str(err)})
                rows.append(row)
                log.info("%s: FAILED (%s)", label, err)
                continue
            stage_records.write_record(record_path, inputs, stage_records.STARTED)
            started = time.time()
            report = run_notebook("03_train", {**run_parameters, "resume": resume}, work_dir)
            row.update({"ok": report.ok, "minutes": report.seconds / 60, "error": report.error})
            recorded = run_folders.read_metrics(work_dir) if metrics_file.exists() else {}
            if not report.ok and recorded.get("status") == "failed" and metrics_file.stat().st_mtime >= started:
                row["error"] = recorded["error"]  # e.g. the divergence, said once instead of papermill's traceback
            if report.ok:
                stage_records.write_record(record_path, inputs, stage_records.FINISHED, expected)
        row["result_id"] = stage_records.result_id(record_path) if row["ok"] else None
        if row["ok"] and metrics_file.exists():
            metrics = run_folders.read_metrics(work_dir)
            best = metrics.get("best_val") or {}
            row.update(
                {
                    "best_mDice": best.get("mDice"),
                    "best_fg_dice": best.get("Dice.pneumothorax"),
                    "best_iter": best.get("step"),
                    "images_per_s": metrics.get("images_per_s"),
                }
            )
        rows.append(row)
        log.info("%s: %s", label, "skipped" if row["skipped"] else "ok" if row["ok"] else f"FAILED ({row['error']})")
    return pd.DataFrame(rows)
