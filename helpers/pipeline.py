"""Run the notebooks headless: papermill per stage, nbconvert to HTML, the lr sweep, outputs/index.html.

Each stage reads a YAML parameter file (``pipeline/NN_stage.yaml`` for the full data on a GPU node,
``pipeline/demo/NN_stage.yaml`` for the demo) that the user can edit; ``shared.yaml`` beside them names
the profile's data folders once (``raw_root``, ``prepared_root``), for every stage whose parameters
cell declares them. Every run leaves an executed
``.ipynb`` and a rendered ``.html`` (figures embedded, code hidden) under ``outputs/``.
"""

from __future__ import annotations

import html
import logging
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from helpers import paths, runs
from helpers.fileio import atomic_write_text
from helpers.parameters import (LR, NOTEBOOK_PARAMETERS, ParameterError, check_names, check_parameters, check_value,
                                declared_names)

log = logging.getLogger(__name__)

STAGES = ("01_explore", "02_prepare", "03_train", "04_evaluate", "05_visualize")
STAGES_WITH_OUTPUTS_DIR = ("01_explore", "04_evaluate", "05_visualize")
SHARED_FILE = "shared"  # shared.yaml: the data folders of a profile, named once, given to each stage that takes them
SWEEP_KEY = "lrs"  # in 03_train.yaml: the learning rates of the sweep; everything else goes to each run
SEED_LRS = (0.01, 0.001, 0.0001)
SET_PER_JOB = ("config", "lr", "work_dir", "gpus", "fold")  # write_sbatch's script sets these itself, per job


@dataclass
class Report:
    """One executed notebook and its HTML rendering."""

    notebook: Path
    html: Path
    ok: bool
    error: str | None = None
    seconds: float = 0.0


def render_html(notebook: Path, html_path: Path) -> Path:
    """Render an executed notebook to HTML without code cells (figures embedded as base64)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    atomic_write_text(html_path, body)
    return html_path


def run_notebook(stage: str, parameters: dict, output_dir: Path | str, *, name: str | None = None,
                 stream: bool = True) -> Report:
    """Execute ``notebooks/<stage>.ipynb`` with papermill into ``output_dir`` and render its HTML.

    The kernel runs in the repository root. With ``stream``, the notebook's output (mmengine's iteration
    lines, progress bars as text) goes to this process's stdout/stderr while it runs, and a failed cell's
    traceback to stderr. A failing notebook still gets its executed copy and HTML (showing the error);
    the returned Report says it failed. Parameters the notebook does not declare, or values its declaration
    (helpers.parameters) does not allow, raise ParameterError before anything is created.
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
        try:
            papermill.execute_notebook(
                str(paths.NOTEBOOKS_DIR / f"{stage}.ipynb"), str(partial), parameters=parameters,
                cwd=str(paths.REPO_ROOT), progress_bar=False, log_output=False,
                stdout_file=sys.stdout if stream else None, stderr_file=sys.stderr if stream else None,
            )
        except Exception as err:  # papermill's execution error, or a kernel that died
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


def sweep(lrs: list[float] | tuple[float, ...] = SEED_LRS, parameters: dict | None = None,
          outputs: Path | str = paths.OUTPUTS_DIR, folds: int = 0) -> pd.DataFrame:
    """Run 03_train once per lr (and, with ``folds=K``, once per fold of each lr, on the fold files of
    02_prepare), each into its own run folder with its executed notebook and HTML report.

    Every run's parameters are checked before the first starts (a bad one raises ParameterError and nothing
    runs); a run that fails is reported in the table and the others go on.
    """
    parameters = dict(parameters or {})
    config = parameters.get("config") or paths.SWEEP_CONFIG
    jobs = []
    for lr, fold in [(lr, fold) for lr in lrs for fold in (range(folds) if folds else [None])]:
        check_value("03_train", "lr", lr, LR)
        work_dir = runs.run_dir(config, lr, Path(outputs)) if fold is None else runs.fold_run_dir(config, lr, fold, Path(outputs))
        run_parameters = {**parameters, "config": config, "lr": float(lr), "work_dir": str(work_dir)}
        if fold is not None:
            run_parameters["fold"] = fold
        jobs.append((lr, fold, work_dir, check_parameters("03_train", run_parameters, source="the sweep's parameters")))
    rows = []
    for lr, fold, work_dir, run_parameters in jobs:
        report = run_notebook("03_train", run_parameters, work_dir)
        row = {"config": paths.config_name(config), "lr": lr, "fold": fold, "ok": report.ok,
               "minutes": report.seconds / 60, "report": str(report.html), "error": report.error}
        if report.ok and (work_dir / runs.METRICS_FILE).exists():
            metrics = runs.read_metrics(work_dir)
            best = metrics.get("best_val") or {}
            row.update({"best_mDice": best.get("mDice"), "best_fg_dice": best.get("Dice.pneumothorax"),
                        "best_iter": best.get("step"), "images_per_s": metrics.get("images_per_s")})
        rows.append(row)
        log.info("lr %g%s: %s", lr, "" if fold is None else f" fold {fold}", "ok" if report.ok else f"FAILED ({report.error})")
    return pd.DataFrame(rows)


def write_sbatch(lrs: list[float] | tuple[float, ...], parameters: dict, path: Path | str, *, gpus: int = 1,
                 cpus_per_gpu: int = 8, hours: int = 4, outputs: Path | str = paths.OUTPUTS_DIR, folds: int = 0) -> Path:
    """A SLURM array script, one job per lr (per lr and fold with ``folds=K``), each running 03_train
    through papermill on its own node share (``gpus=0``: CPU jobs, no GPU requested). The ``-p`` flags are
    the 03_train parameters (helpers.parameters.TrainParams) given, checked, in their declared order; the
    script sets :data:`SET_PER_JOB` itself."""
    check_parameters("03_train", parameters, source="the sweep's parameters", paths_exist=False)
    for lr in lrs:
        check_value("03_train", "lr", lr, LR)
    config = parameters.get("config") or paths.SWEEP_CONFIG
    extra = " ".join(_papermill_flag(k, parameters[k]) for k in declared_names("03_train")
                     if k in parameters and k not in SET_PER_JOB)
    lr_list = " ".join(f"{lr:g}" for lr in lrs)
    if folds:  # job i: lr i // K, fold i % K, in the folder runs.fold_run_dir names
        select = f"""LR=${{LRS[$((SLURM_ARRAY_TASK_ID / {folds}))]}}
FOLD=$((SLURM_ARRAY_TASK_ID % {folds}))
WORK_DIR={shlex.quote(str(Path(outputs) / 'runs' / paths.config_name(config)))}/lr${{LR}}{runs.FOLD_SUFFIX}$FOLD"""
        extra = f'-p fold "$FOLD" {extra}'
    else:
        select = f"""LR=${{LRS[$SLURM_ARRAY_TASK_ID]}}
WORK_DIR={shlex.quote(str(Path(outputs) / 'runs' / paths.config_name(config)))}/lr$LR"""
    script = f"""#!/bin/bash
#SBATCH --job-name=pneumothorax-sweep
#SBATCH --array=0-{len(lrs) * max(1, folds) - 1}
{f"#SBATCH --gres=gpu:{gpus}" if gpus else "#SBATCH --ntasks=1"}
#SBATCH --cpus-per-task={cpus_per_gpu * max(1, gpus)}
#SBATCH --time={hours}:00:00
#SBATCH --output={Path(outputs) / 'runs' / 'slurm-%A_%a.out'}
# Written by `python -m helpers sweep --sbatch`: one job per lr, each runs notebooks/03_train.ipynb with
# papermill (gpus > 1 launches torchrun from inside helpers, never DDP in the kernel).
set -euo pipefail
cd {shlex.quote(str(paths.REPO_ROOT))}
LRS=({lr_list})
{select}
mkdir -p "$WORK_DIR"
{shlex.quote(sys.executable)} -m papermill notebooks/03_train.ipynb "$WORK_DIR/03_train.ipynb" \\
    -p config {shlex.quote(config)} -p lr "$LR" -p gpus {gpus} -p work_dir "$WORK_DIR" {extra}
{shlex.quote(sys.executable)} -m jupyter nbconvert --to html --no-input "$WORK_DIR/03_train.ipynb"
"""
    path = Path(path)
    atomic_write_text(path, script)
    path.chmod(0o755)
    return path


def _papermill_flag(name: str, value) -> str:
    """One parameter for papermill's command line: ``-p name value`` (which reads back numbers, True/False and
    None), or ``-y`` with YAML for a list or mapping."""
    if isinstance(value, (list, tuple, dict)):
        text = yaml.safe_dump({name: list(value) if isinstance(value, tuple) else value}, default_flow_style=True)
        return f"-y {shlex.quote(text.strip())}"
    return f"-p {name} {shlex.quote('None' if value is None else str(value))}"


def write_index(outputs: Path | str = paths.OUTPUTS_DIR, title: str = "Pneumothorax segmentation: reports") -> Path:
    """``outputs/index.html``: the headline metrics table and a link to every HTML report under ``outputs``."""
    outputs = Path(outputs)
    reports = sorted(p for p in outputs.rglob("*.html") if p.name != "index.html" and not p.name.startswith("."))
    comparison = outputs / "eval" / "comparison.csv"
    table_html = "<p>No evaluation yet (run 04_evaluate).</p>"
    if comparison.exists():
        table = pd.read_csv(comparison)
        table_html = table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="–", border=0, classes="metrics")
    items = "\n".join(
        f'<li><a href="{html.escape(str(p.relative_to(outputs)))}">{html.escape(str(p.relative_to(outputs)))}</a></li>'
        for p in reports
    )
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}} table.metrics{{border-collapse:collapse}}
table.metrics td,table.metrics th{{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Generated {time.strftime("%Y-%m-%d %H:%M")}. mIoU / mDice are mmseg's pooled values over both classes (as
<code>mim test</code> prints them, in %); fg_dice / fg_iou are the pneumothorax class alone (pooled);
image_dice is the SIIM-ACR per-image Dice (empty on empty = 1), image_dice_positive the same over images
with pneumothorax. The 'seed (reported)' rows are the numbers in the seed project's README.</p>
<h2>Headline metrics</h2>
{table_html}
<h2>Reports</h2>
<ul>
{items}
</ul></body></html>
"""
    index = outputs / "index.html"
    atomic_write_text(index, page)
    return index


def stage_parameters(stage: str, params_dir: Path | str = paths.PIPELINE_PARAMS_DIR) -> dict:
    """A stage's parameters: the profile's shared ones that its notebook declares, then its own YAML's."""
    shared = load_stage_parameters(SHARED_FILE, params_dir)
    declared = declared_names(stage)
    return {**{k: v for k, v in shared.items() if k in declared}, **load_stage_parameters(stage, params_dir)}


def run_pipeline(params_dir: Path | str = paths.PIPELINE_PARAMS_DIR, outputs: Path | str = paths.OUTPUTS_DIR,
                 stages: tuple[str, ...] = STAGES, overrides: dict[str, dict] | None = None) -> list[Report]:
    """Run the stages in order with their YAML parameters (plus ``overrides``), then write index.html.

    03_train runs as a sweep over the YAML's ``lrs``. A failing stage stops the pipeline (the later ones
    need its output); its executed notebook and HTML show the error.
    """
    outputs = Path(outputs)
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
        log.info("stage %s", stage)
        if stage == "03_train":
            lrs = parameters.pop(SWEEP_KEY, list(SEED_LRS))
            table = sweep(lrs, parameters, outputs)
            atomic_write_text(outputs / "runs" / "sweep.csv", table.to_csv(index=False))
            for row in table.itertuples():
                reports.append(Report(notebook=Path(row.report).with_suffix(".ipynb"), html=Path(row.report), ok=row.ok, error=row.error, seconds=row.minutes * 60))
            if not table["ok"].any():
                raise RuntimeError(f"every training run failed: {list(table['error'])}")
            continue
        report = run_notebook(stage, parameters, outputs / "reports")
        reports.append(report)
        if not report.ok:
            write_index(outputs)
            raise RuntimeError(f"{stage} failed: {report.error}\nsee {report.html}")
    write_index(outputs)
    return reports
