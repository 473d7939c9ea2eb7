"""Run the notebooks headless: papermill per stage, nbconvert to HTML, the lr sweep, outputs/index.html.

Each stage reads a YAML parameter file (``pipeline/NN_stage.yaml`` for the full data on a GPU node,
``pipeline/demo/NN_stage.yaml`` for the demo) that the user can edit; ``shared.yaml`` beside them names
the profile's data folders once (``raw_root``, ``prepared_root``), for every stage whose parameters
cell declares them. Every run leaves an executed
``.ipynb`` and a rendered ``.html`` (figures embedded, code hidden) under ``outputs/``.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from helpers import paths, records, runs
from helpers.fileio import atomic_write_text
from helpers.parameters import (LR, NOTEBOOK_PARAMETERS, ParameterError, check_names, check_parameters, check_value,
                                declared_names)
from helpers.prepared import MANIFEST_FILE as PREPARED_MANIFEST_FILE
from helpers.progress import KERNEL_ARGUMENTS

log = logging.getLogger(__name__)

STAGES = ("01_explore", "02_prepare", "03_train", "04_evaluate", "05_visualize")
STAGES_WITH_OUTPUTS_DIR = ("01_explore", "04_evaluate", "05_visualize")
SHARED_FILE = "shared"  # shared.yaml: the data folders of a profile, named once, given to each stage that takes them
SWEEP_KEY = "lrs"  # in 03_train.yaml: the learning rates of the sweep; everything else goes to each run
SEED_LRS = (0.01, 0.001, 0.0001)
RECORDS_DIR = "records"  # outputs/records/<stage>.json: what each stage was made from (helpers.records)
# What each stage reads from the stages before it: a changed (or rerun) stage reruns the ones after it.
DEPENDS_ON = {"01_explore": (), "02_prepare": (), "03_train": ("02_prepare",), "04_evaluate": ("02_prepare", "03_train"),
              "05_visualize": ("04_evaluate",)}
# Parameters that change where or how fast a step runs, not what it produces: not part of its record.
NOT_INPUTS = ("work_dir", "resume", "workers", "outputs_dir")
SET_PER_JOB = ("config", "lr", "work_dir", "gpus", "fold")  # write_sbatch's script sets these itself, per job


@dataclass
class Report:
    """One executed notebook and its HTML rendering."""

    notebook: Path
    html: Path
    ok: bool
    error: str | None = None
    seconds: float = 0.0
    skipped: bool = False  # up to date: its record matched, nothing ran


NO_ALT = 'alt="No description has been provided for this image"'  # nbconvert's placeholder for a figure
FIGURE_IMG = '<img src="data:image/png;base64,'  # a figure in the lab template, where no placeholder is added


def figure_descriptions(nb) -> list[str]:
    """One alt text per image output of an executed notebook, in order: the section it is drawn in (the
    nearest markdown heading above it), numbered within the section."""
    descriptions, heading, count = [], "", 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines = [line.lstrip("#").strip() for line in cell.source.splitlines() if line.startswith("#")]
            if lines:
                heading, count = lines[0], 0
            continue
        for output in cell.get("outputs", []):
            if "image/png" in output.get("data", {}):
                count += 1
                descriptions.append(f"Figure {count} of the section '{heading}'" if heading else f"Figure {count}")
    return descriptions


def render_html(notebook: Path, html_path: Path) -> Path:
    """Render an executed notebook to HTML without code cells (figures embedded as base64, each with alt
    text naming the section it belongs to)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    nb = nbformat.read(notebook, as_version=4)
    body, _ = exporter.from_notebook_node(nb)
    for description in figure_descriptions(nb):  # in place of nbconvert's placeholder, or of no alt at all
        alt = f'alt="{html.escape(description)}"'
        body = body.replace(NO_ALT, alt, 1) if NO_ALT in body else body.replace(FIGURE_IMG, f"<img {alt} {FIGURE_IMG[5:]}", 1)
    atomic_write_text(html_path, body)
    return html_path


@contextlib.contextmanager
def _ctrl_c_reaches_the_kernel() -> Iterator[list[bool]]:
    """While a notebook runs, Ctrl-C (SIGINT) is passed on to its kernel, which jupyter_client starts in a
    session of its own that the terminal's Ctrl-C does not reach: the running cell stops with
    KeyboardInterrupt and papermill ends normally (no half-closed kernel, no asyncio tracebacks). The
    yielded list says whether it happened; a second Ctrl-C stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    import psutil

    interrupted: list[bool] = []

    def forward(signum, frame):
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(True)
        for child in psutil.Process().children():
            try:
                if any("ipykernel" in part for part in child.cmdline()):
                    os.killpg(os.getpgid(child.pid), signal.SIGINT)
            except (psutil.Error, ProcessLookupError, PermissionError):
                pass

    previous = signal.signal(signal.SIGINT, forward)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def run_notebook(stage: str, parameters: dict, output_dir: Path | str, *, name: str | None = None,
                 stream: bool = True) -> Report:
    """Execute ``notebooks/<stage>.ipynb`` with papermill into ``output_dir`` and render its HTML.

    The kernel runs in the repository root. With ``stream``, the notebook's output goes to this process's
    stdout/stderr while it runs (progress bars and mmengine's log lines reach the terminal directly, never
    the notebook: helpers.progress), and a failed cell's traceback to stderr. A failing notebook still gets
    its executed copy and HTML (showing the error); the returned Report says it failed. Ctrl-C stops the
    running cell and raises KeyboardInterrupt here, keeping no executed copy of the interrupted notebook.
    Parameters the notebook does not declare, or values its declaration (helpers.parameters) does not allow,
    raise ParameterError before anything is created.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    check_parameters(stage, parameters, source=f"{stage}'s parameters")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    name = name or stage
    executed = output_dir / f"{name}.ipynb"
    html_path = output_dir / f"{name}.html"
    start = time.perf_counter()
    error = None
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=f".{name}-") as tmp:
        partial = Path(tmp) / executed.name
        with _ctrl_c_reaches_the_kernel() as interrupted:
            try:
                papermill.execute_notebook(
                    str(paths.NOTEBOOKS_DIR / f"{stage}.ipynb"), str(partial), parameters=parameters,
                    cwd=str(paths.REPO_ROOT), progress_bar=False, log_output=False, extra_arguments=KERNEL_ARGUMENTS,
                    stdout_file=sys.stdout if stream else None, stderr_file=sys.stderr if stream else None,
                )
            except Exception as err:  # papermill's execution error, or a kernel that died
                if interrupted or (isinstance(err, PapermillExecutionError) and err.ename == "KeyboardInterrupt"):
                    raise KeyboardInterrupt from None  # the partial notebook goes with the temporary folder
                error = f"{type(err).__name__}: {err}"
                if stream and isinstance(err, PapermillExecutionError):
                    print(f"{name} failed:{err}", file=sys.stderr, flush=True)  # the cell's traceback
                    log.error("%s failed: %s: %s (traceback above)", name, err.ename, err.evalue)
                else:
                    log.error("%s failed: %s", name, error)
        if partial.exists():
            partial.replace(executed)
    if executed.exists():
        render_html(executed, html_path)
    if interrupted:  # Ctrl-C came between cells: the notebook ran to its end, and the caller stops now
        raise KeyboardInterrupt
    return Report(notebook=executed, html=html_path, ok=error is None, error=error, seconds=time.perf_counter() - start)


def load_stage_parameters(stage: str, params_dir: Path | str = paths.PIPELINE_PARAMS_DIR) -> dict:
    """The YAML parameter file of one stage (empty when the file does not exist); a key its notebook does not
    declare (``lrs`` besides, for 03_train) raises ParameterError naming the file, the key and the known ones.
    ``shared.yaml`` may hold any key that some notebook declares."""
    path = Path(params_dir) / f"{stage}.yaml"
    if not path.exists():
        return {}
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of parameter names to values")
    if stage == SHARED_FILE:
        known = {name for notebook in NOTEBOOK_PARAMETERS for name in declared_names(notebook)}
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise ParameterError(f"{path}: {', '.join(map(repr, unknown))} is no notebook's parameter; "
                                 f"known: {', '.join(sorted(known))}")
    else:
        check_names(stage, [k for k in loaded if not (stage == "03_train" and k == SWEEP_KEY)], str(path))
    return loaded


def prepared_manifest_hash(prepared_root: str | Path | None) -> str | None:
    """The hash of a prepared folder's manifest.json (02's output, an input of 03 and 04); None without one."""
    return records.file_hash(paths.resolve(prepared_root) / PREPARED_MANIFEST_FILE) if prepared_root else None


def _config_hash(config: str) -> str | None:
    try:
        return records.config_hash(config)
    except FileNotFoundError:  # the run itself fails with the message naming it
        return None


def run_inputs(run_parameters: dict) -> dict:
    """What one training run is made from (helpers.records): 03's notebook, its parameters, the config's
    content, the code, the prepared data's manifest."""
    return {"notebook": records.notebook_hash("03_train"),
            "parameters": {k: v for k, v in run_parameters.items() if k not in NOT_INPUTS},
            "config": _config_hash(run_parameters["config"]), "code": records.code_hash(),
            "prepared_manifest": prepared_manifest_hash(run_parameters.get("prepared_root"))}


def _start_afresh(work_dir: Path) -> None:
    """Empty a run folder before training from scratch (its old checkpoints would be taken for this run's)."""
    if work_dir.exists() and any(work_dir.iterdir()):
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)


def sweep(lrs: list[float] | tuple[float, ...] = SEED_LRS, parameters: dict | None = None,
          outputs: Path | str = paths.OUTPUTS_DIR, folds: int = 0, *, force: bool = False,
          only_fold: int | None = None) -> pd.DataFrame:
    """Run 03_train once per lr (and, with ``folds=K``, once per fold of each lr, on the fold files of
    02_prepare; ``only_fold``: that fold alone), each into its own run folder with its executed notebook
    and HTML report.

    Every run's parameters are checked before the first starts (a bad one raises ParameterError and nothing
    runs). A run whose record (``record.json`` in its folder) matches its inputs and that finished is skipped;
    one that was interrupted resumes from its last checkpoint; a finished run without a record (trained before
    records, or by hand) is kept. ``force`` retrains every run from scratch. A failed run is reported in the
    table and the others go on.
    """
    parameters = dict(parameters or {})
    config = parameters.get("config") or paths.SWEEP_CONFIG
    jobs = []
    fold_list = [only_fold] if only_fold is not None else (range(folds) if folds else [None])
    for lr, fold in [(lr, fold) for lr in lrs for fold in fold_list]:
        check_value("03_train", "lr", lr, LR)
        work_dir = runs.run_dir(config, lr, Path(outputs)) if fold is None else runs.fold_run_dir(config, lr, fold, Path(outputs))
        run_parameters = {**parameters, "config": config, "lr": float(lr), "work_dir": str(work_dir)}
        if fold is not None:
            run_parameters["fold"] = fold
        jobs.append((lr, fold, work_dir, check_parameters("03_train", run_parameters, source="the sweep's parameters")))
    rows = []
    for lr, fold, work_dir, run_parameters in jobs:
        label = f"lr {lr:g}" + ("" if fold is None else f" fold {fold}")
        inputs = run_inputs(run_parameters)
        record_path = work_dir / runs.RECORD_FILE
        expected = [work_dir / runs.METRICS_FILE, work_dir / "03_train.html"]
        state = records.status(record_path, inputs, expected)
        row = {"config": paths.config_name(config), "lr": lr, "fold": fold, "ok": True, "skipped": False, "minutes": 0.0,
               "report": str(work_dir / "03_train.html"), "error": None}
        unrecorded = records.read_record(record_path) is None and (work_dir / runs.METRICS_FILE).exists()
        if not force and (state.done or unrecorded):
            why = (f"its record {record_path} matches" if state.done
                   else "finished before records were kept; --force retrains it")
            print(f"{label}: already trained, skipped ({why})", flush=True)
            row["skipped"] = True
        else:
            resume = not force and state.resumable and runs.find_checkpoints(work_dir)[1] is not None
            if resume:
                print(f"{label}: resuming the interrupted run from {runs.find_checkpoints(work_dir)[1]}", flush=True)
            else:
                print(f"{label}: training ({'--force' if force else state.reason})", flush=True)
                _start_afresh(work_dir)
            records.write_record(record_path, inputs, records.STARTED)
            report = run_notebook("03_train", {**run_parameters, "resume": resume}, work_dir)
            row.update({"ok": report.ok, "minutes": report.seconds / 60, "error": report.error})
            if report.ok:
                records.write_record(record_path, inputs, records.FINISHED, expected)
        row["result_id"] = records.result_id(record_path) if row["ok"] else None
        if row["ok"] and (work_dir / runs.METRICS_FILE).exists():
            metrics = runs.read_metrics(work_dir)
            best = metrics.get("best_val") or {}
            row.update({"best_mDice": best.get("mDice"), "best_fg_dice": best.get("Dice.pneumothorax"),
                        "best_iter": best.get("step"), "images_per_s": metrics.get("images_per_s")})
        rows.append(row)
        log.info("%s: %s", label, "skipped" if row["skipped"] else "ok" if row["ok"] else f"FAILED ({row['error']})")
    return pd.DataFrame(rows)


def write_sbatch(lrs: list[float] | tuple[float, ...], parameters: dict, path: Path | str, *, gpus: int = 1,
                 cpus_per_gpu: int = 8, hours: int = 4, outputs: Path | str = paths.OUTPUTS_DIR, folds: int = 0) -> Path:
    """A SLURM array script, one job per lr (per lr and fold with ``folds=K``), each running the sweep for its
    own lr (and fold) on its own node share (``gpus=0``: CPU jobs, no GPU requested). Each job is the sweep's
    command, so a re-submitted or requeued job skips a finished run and resumes an interrupted one. The ``-p``
    flags are the 03_train parameters (helpers.parameters.TrainParams) given, checked, in their declared order
    (values as YAML, lists included); the script sets :data:`SET_PER_JOB` itself."""
    check_parameters("03_train", parameters, source="the sweep's parameters", paths_exist=False)
    for lr in lrs:
        check_value("03_train", "lr", lr, LR)
    config = parameters.get("config") or paths.SWEEP_CONFIG
    extra = " ".join(f"-p {shlex.quote(f'{k}={json.dumps(parameters[k])}')}" for k in declared_names("03_train")
                     if k in parameters and k not in SET_PER_JOB)
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
#SBATCH --output={Path(outputs) / 'runs' / 'slurm-%A_%a.out'}
# Written by `python -m helpers sweep --sbatch`: one job per lr, each runs the sweep for its lr (notebooks/03_train.ipynb
# through papermill; gpus > 1 launches torchrun from inside helpers, never DDP in the kernel). A finished run is
# skipped and an interrupted one resumes from its last checkpoint, so a requeued or re-submitted job picks up.
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


STAGE_DESCRIPTIONS = {
    "01_explore": "the raw data: images, labels, mask areas, patients, examples",
    "02_prepare": "the split (train / val / test), the leakage report, prepared examples",
    "03_train": "one training run: learning curves, best and last validation, speed",
    "04_evaluate": "every run on the test split: metrics with intervals, post-processing, paired comparison",
    "05_visualize": "predictions drawn on test images: best, worst, by lesion size",
}
HEADLINE_COLUMNS = ("run", "split", "images", "fg_dice", "image_dice (95 % CI)", "det_auc", "pp_image_dice", "vs best run")
CSV_FILES = {"eval/comparison.csv": "every metric of every run, its interval, seen / unseen patients",
             "eval/paired.csv": "each run against the best run of its split (paired patient bootstrap)",
             "runs/sweep.csv": "the training runs: best validation, speed"}


def _figure_html(figure, alt: str) -> str:
    import base64
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def headline_table(comparison: pd.DataFrame, paired: pd.DataFrame | None = None) -> pd.DataFrame:
    """The index's table: one row per run and baseline, the columns of ``HEADLINE_COLUMNS`` (formatted text)."""
    def pct(value) -> str:
        return "–" if pd.isna(value) else f"{value:.2f}"

    verdicts = {}
    if paired is not None:
        for row in paired.itertuples():
            verdicts[(row.config, "" if pd.isna(row.lr) else f"{row.lr:g}", row.split)] = (
                row.verdict if row.verdict == "best run (reference)"
                else f"{row.verdict} ({row.diff:+.2f}, {row.diff_lo:+.2f} to {row.diff_hi:+.2f})")
    rows = []
    for row in comparison.itertuples():
        lr = "" if pd.isna(row.lr) else f"{row.lr:g}"
        interval = "" if pd.isna(getattr(row, "image_dice_lo", float("nan"))) else f" ({row.image_dice_lo:.2f}–{row.image_dice_hi:.2f})"
        auc = getattr(row, "det_auc", float("nan"))
        rows.append({"run": f"{row.config} lr {lr}" if lr else row.config, "split": row.split,
                     "images": "–" if pd.isna(row.images) else f"{row.images:.0f}", "fg_dice": pct(row.fg_dice),
                     "image_dice (95 % CI)": pct(row.image_dice) + interval, "det_auc": "–" if pd.isna(auc) else f"{auc:.3f}",
                     "pp_image_dice": pct(row.pp_image_dice), "vs best run": verdicts.get((row.config, lr, row.split), "–")})
    return pd.DataFrame(rows, columns=list(HEADLINE_COLUMNS))


def write_index(outputs: Path | str = paths.OUTPUTS_DIR, title: str = "Pneumothorax segmentation: reports") -> Path:
    """``outputs/index.html``: a headline table (at most 8 columns; every other number in the linked CSVs), a
    figure of per-image Dice with intervals for every run and baseline, and the reports grouped by stage."""
    from helpers.evaluation.paired import PAIRED_FILE
    from helpers.plots import plot_image_dice_intervals

    outputs = Path(outputs)
    reports = sorted(p for p in outputs.rglob("*.html") if p.name != "index.html" and not p.name.startswith("."))
    comparison = outputs / "eval" / "comparison.csv"
    paired_csv = outputs / "eval" / PAIRED_FILE
    table_html = "<p>No evaluation yet (run 04_evaluate).</p>"
    figure_html = ""
    if comparison.exists():
        table = pd.read_csv(comparison)
        paired = pd.read_csv(paired_csv) if paired_csv.exists() else None
        table_html = headline_table(table, paired).to_html(index=False, border=0, classes="metrics", escape=True)
        figure_html = _figure_html(plot_image_dice_intervals(table),
                                   "Per-image Dice in percent with 95 % patient bootstrap intervals, one row per run "
                                   "and baseline, grouped by split")
    csv_items = "\n".join(f'<li><a href="{html.escape(name)}">{html.escape(name)}</a>: {html.escape(what)}</li>'
                           for name, what in CSV_FILES.items() if (outputs / name).exists())

    def link(path: Path) -> str:
        relative = html.escape(str(path.relative_to(outputs)))
        return f'<a href="{relative}">{relative}</a>'

    sections = []
    for stage in STAGES:
        found = [p for p in reports if p.stem == stage]
        if found:
            items = "\n".join(f"<li>{link(p)}</li>" for p in found)
            sections.append(f"<h3>{stage}</h3>\n<p>{html.escape(STAGE_DESCRIPTIONS[stage])}</p>\n<ul>\n{items}\n</ul>")
    others = [p for p in reports if p.stem not in STAGES]
    if others:
        sections.append("<h3>Other reports</h3>\n<ul>\n" + "\n".join(f"<li>{link(p)}</li>" for p in others) + "\n</ul>")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}} table.metrics{{border-collapse:collapse}}
table.metrics td,table.metrics th{{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right}}
img{{max-width:100%}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Generated {time.strftime("%Y-%m-%d %H:%M")}. All values in %: fg_dice is the pneumothorax class's pooled Dice;
image_dice the SIIM-ACR per-image Dice (empty on empty = 1) of the model's own decision, with its 95 % interval
from a bootstrap over patients; pp_image_dice the same after the post-processing tuned on val; det_auc the ROC AUC
of detecting an image with pneumothorax (a fraction). 'vs best run': the per-image Dice difference to the best run
of the same split, with a paired patient bootstrap interval. The 'seed (reported)' rows are the numbers in the
seed project's README.</p>
<h2>Headline metrics</h2>
{table_html}
<ul>
{csv_items}
</ul>
{figure_html}
<h2>Reports</h2>
{chr(10).join(sections)}
</body></html>
"""
    index = outputs / "index.html"
    atomic_write_text(index, page)
    return index


def stage_parameters(stage: str, params_dir: Path | str = paths.PIPELINE_PARAMS_DIR) -> dict:
    """A stage's parameters: the profile's shared ones that its notebook declares, then its own YAML's."""
    shared = load_stage_parameters(SHARED_FILE, params_dir)
    declared = declared_names(stage)
    return {**{k: v for k, v in shared.items() if k in declared}, **load_stage_parameters(stage, params_dir)}


def stage_inputs(stage: str, parameters: dict, outputs: Path) -> dict:
    """What one stage is made from (helpers.records): its notebook, parameters, the code, the prepared data's
    manifest where it reads one, and the result ids of the stages it depends on."""
    inputs = {"notebook": records.notebook_hash(stage),
              "parameters": {k: v for k, v in parameters.items() if k not in NOT_INPUTS}, "code": records.code_hash(),
              "upstream": {dep: records.result_id(stage_record(dep, outputs)) for dep in DEPENDS_ON[stage]}}
    if stage == "04_evaluate":
        inputs["prepared_manifest"] = prepared_manifest_hash(parameters.get("prepared_root"))
    return inputs


def stage_record(stage: str, outputs: Path | str) -> Path:
    """``outputs/records/<stage>.json``."""
    return Path(outputs) / RECORDS_DIR / f"{stage}.json"


def stage_outputs(stage: str, parameters: dict, outputs: Path) -> list[Path]:
    """The files a finished stage has left (its report, and what the stages after it read)."""
    expected = [outputs / "reports" / f"{stage}.ipynb", outputs / "reports" / f"{stage}.html"]
    if stage == "02_prepare" and parameters.get("prepared_root"):
        expected.append(paths.resolve(parameters["prepared_root"]) / PREPARED_MANIFEST_FILE)
    if stage == "04_evaluate":
        expected += [outputs / "eval" / "comparison.csv", outputs / "eval" / "paired.csv"]
    return expected


def _forced(force: bool | str | tuple[str, ...] | list[str] | set[str]) -> set[str]:
    if force is True:
        return set(STAGES)
    chosen = {force} if isinstance(force, str) else set(force or ())
    unknown = chosen - set(STAGES)
    if unknown:
        raise ValueError(f"--force: no such stage {sorted(unknown)} (stages: {', '.join(STAGES)})")
    return chosen


def _train_stage(parameters: dict, outputs: Path, force: bool, reports: list[Report]) -> None:
    """03_train as a sweep over the YAML's ``lrs``; its stage record holds the runs' result ids."""
    lrs = parameters.pop(SWEEP_KEY, list(SEED_LRS))
    table = sweep(lrs, parameters, outputs, force=force)
    atomic_write_text(outputs / "runs" / "sweep.csv", table.drop(columns=["result_id"]).to_csv(index=False))
    for row in table.itertuples():
        reports.append(Report(notebook=Path(row.report).with_suffix(".ipynb"), html=Path(row.report), ok=row.ok,
                              error=row.error, seconds=row.minutes * 60, skipped=row.skipped))
    if not table["ok"].any():
        raise RuntimeError(f"every training run failed: {list(table['error'])}")
    ids = {"runs": sorted(str(i) for i in table["result_id"])}
    path = stage_record("03_train", outputs)
    previous = records.read_record(path)
    if previous is None or previous.get("inputs") != ids:
        records.write_record(path, ids, records.FINISHED, result_id=records.fingerprint(ids))


def run_pipeline(params_dir: Path | str = paths.PIPELINE_PARAMS_DIR, outputs: Path | str = paths.OUTPUTS_DIR,
                 stages: tuple[str, ...] = STAGES, overrides: dict[str, dict] | None = None,
                 force: bool | str | tuple[str, ...] | list[str] | set[str] = ()) -> list[Report]:
    """Run the stages in order with their YAML parameters (plus ``overrides``), then write index.html.

    A stage whose record (``outputs/records/<stage>.json``) matches its inputs and whose outputs are there is
    skipped with one line saying so; a changed stage reruns, and so do the stages after it that read its
    output (``DEPENDS_ON``). ``force``: True for every stage, or stage names, to rerun regardless.
    03_train runs as a sweep over the YAML's ``lrs`` (each run skipped, resumed or trained on its own). A
    failing stage stops the pipeline (the later ones need its output); its executed notebook and HTML show
    the error.
    """
    outputs = Path(outputs)
    forced = _forced(force)
    every = {}
    for stage in stages:  # every stage's names and values, before the first starts (its inputs may not exist yet)
        parameters = {**stage_parameters(stage, params_dir), **((overrides or {}).get(stage, {}))}
        if stage in STAGES_WITH_OUTPUTS_DIR:
            parameters.setdefault("outputs_dir", str(outputs))
        for lr in parameters.get(SWEEP_KEY, []) if stage == "03_train" else []:
            check_value(stage, "lr", lr, LR)
        check_parameters(stage, {k: v for k, v in parameters.items() if k != SWEEP_KEY}, source=f"{stage}'s parameters",
                         paths_exist=False)
        every[stage] = parameters
    reports: list[Report] = []
    for stage, parameters in every.items():
        if stage == "03_train":
            print(f"{stage}: the sweep", flush=True)
            _train_stage(parameters, outputs, stage in forced, reports)
            continue
        inputs, expected = stage_inputs(stage, parameters, outputs), stage_outputs(stage, parameters, outputs)
        path = stage_record(stage, outputs)
        state = records.status(path, inputs, expected)
        if state.done and stage not in forced:
            print(f"{stage}: up to date, skipped (its record {path} matches; --force {stage} reruns it)", flush=True)
            reports.append(Report(notebook=expected[0], html=expected[1], ok=True, skipped=True))
            continue
        print(f"{stage}: running ({'--force' if stage in forced else state.reason})", flush=True)
        path.unlink(missing_ok=True)  # not done until it has finished again
        report = run_notebook(stage, parameters, outputs / "reports")
        reports.append(report)
        if not report.ok:
            write_index(outputs)
            raise RuntimeError(f"{stage} failed: {report.error}\nsee {report.html}")
        records.write_record(path, inputs, records.FINISHED, expected)
    write_index(outputs)
    return reports
