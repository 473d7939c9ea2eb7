"""The stage pipeline: every notebook in order with its YAML parameters, skipping a stage whose record matches
its inputs, rerunning the stages after a changed one, then ``outputs/index.html``."""

from __future__ import annotations

import logging
from pathlib import Path

from helpers.core import paths, run_folders
from helpers.core.fileio import CorruptFileError, atomic_write_text
from helpers.core.parameters import LR, STAGES, check_parameters, check_value, defaults
from helpers.data.prepared_folder import MANIFEST_FILE as PREPARED_MANIFEST_FILE
from helpers.workflow import stage_records
from helpers.workflow.index import write_index
from helpers.workflow.notebook_runner import Report, run_notebook
from helpers.workflow.parameter_files import SWEEP_KEY, stage_parameters
from helpers.workflow.stage_records import NOT_INPUTS, prepared_manifest_hash
from helpers.workflow.sweep import SEED_LRS, sweep

log = logging.getLogger(__name__)


class StageFailed(RuntimeError):
    """A stage's notebook failed (its report shows the error), or every training run of the sweep did."""


STAGES_WITH_OUTPUTS_DIR = ("01_explore", "04_evaluate", "05_visualize")


RECORDS_DIR = "records"  # outputs/records/<stage>.json: what each stage was made from (helpers.workflow.stage_records)


# What each stage reads from the stages before it: a changed (or rerun) stage reruns the ones after it.
DEPENDS_ON = {
    "01_explore": (),
    "02_prepare": (),
    "03_train": ("02_prepare",),
    "04_evaluate": ("02_prepare", "03_train"),
    "05_visualize": ("04_evaluate",),
}


def stage_inputs(stage: str, parameters: dict, outputs: Path) -> dict:
    """What one stage is made from (helpers.workflow.stage_records): its notebook, every declared parameter (its
    default where none is given, so that a run by hand and the pipeline's agree), the code, the prepared data's
    manifest where it reads one, and the result ids of the stages it depends on."""
    inputs = {
        "notebook": stage_records.notebook_hash(stage),
        "parameters": {k: v for k, v in {**defaults(stage), **parameters}.items() if k not in NOT_INPUTS},
        "code": stage_records.code_hash(),
        "upstream": {dep: stage_records.result_id(stage_record(dep, outputs)) for dep in DEPENDS_ON[stage]},
    }
    if stage == "04_evaluate":
        inputs["prepared_manifest"] = prepared_manifest_hash(parameters.get("prepared_root"))
    return inputs


def stage_record(stage: str, outputs: Path | str) -> Path:
    """``outputs/records/<stage>.json``."""
    return Path(outputs) / RECORDS_DIR / f"{stage}.json"


# The files of each evaluation folder that 05 and predict read back (helpers.core.run_folders).
EVALUATION_FILES = (
    run_folders.EVAL_INFO_FILE,
    run_folders.EVAL_METRICS_FILE,
    run_folders.PER_IMAGE_FILE,
    run_folders.PROBS_FILE,
    run_folders.MMSEG_PRED_FILE,
)


def stage_outputs(stage: str, parameters: dict, outputs: Path) -> list[Path]:
    """The files a finished stage has left (its report, and what the stages after it read, each evaluation
    folder's files for 04): a stage is done only when every one of them reads back."""
    expected = [outputs / "reports" / f"{stage}.ipynb", outputs / "reports" / f"{stage}.html"]
    if stage == "02_prepare" and parameters.get("prepared_root"):
        expected.append(paths.resolve(parameters["prepared_root"]) / PREPARED_MANIFEST_FILE)
    if stage == "04_evaluate":
        expected += [outputs / "eval" / "comparison.csv", outputs / "eval" / "paired.csv"]
        for folder in run_folders.evaluations(outputs, parameters.get("split", "test")):  # each must read back
            expected += [folder / name for name in EVALUATION_FILES]
    return expected


def _last_line(error: str | None) -> str:
    """The last line of a notebook's error (papermill's holds the whole traceback; its last line says what)."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    return lines[-1] if lines else "failed"


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
        reports.append(
            Report(
                notebook=Path(row.report).with_suffix(".ipynb"),
                html=Path(row.report),
                ok=row.ok,
                error=row.error,
                seconds=row.minutes * 60,
                skipped=row.skipped,
            )
        )
    if not table["ok"].any():
        raise StageFailed(f"every training run failed: {list(table['error'])}")
    ids = {"runs": sorted(str(i) for i in table["result_id"])}
    path = stage_record("03_train", outputs)
    try:
        previous = stage_records.read_record(path)
    except CorruptFileError:
        previous = None  # rewritten now
    if previous is None or previous.get("inputs") != ids:
        stage_records.write_record(path, ids, stage_records.FINISHED, result_id=stage_records.fingerprint(ids))


def run_pipeline(
    params_dir: Path | str = paths.PIPELINE_PARAMS_DIR,
    outputs: Path | str = paths.OUTPUTS_DIR,
    stages: tuple[str, ...] = STAGES,
    overrides: dict[str, dict] | None = None,
    force: bool | str | tuple[str, ...] | list[str] | set[str] = (),
) -> list[Report]:
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
        check_parameters(
            stage,
            {k: v for k, v in parameters.items() if k != SWEEP_KEY},
            source=f"{stage}'s parameters",
            paths_exist=False,
        )
        every[stage] = parameters
    reports: list[Report] = []
    for stage, parameters in every.items():
        if stage == "03_train":
            print(f"{stage}: the sweep", flush=True)
            _train_stage(parameters, outputs, stage in forced, reports)
            continue
        inputs, expected = stage_inputs(stage, parameters, outputs), stage_outputs(stage, parameters, outputs)
        path = stage_record(stage, outputs)
        state = stage_records.status(path, inputs, expected)
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
            raise StageFailed(f"{stage} failed: {_last_line(report.error)} (the traceback: {report.html})")
        stage_records.write_record(path, inputs, stage_records.FINISHED, expected)
    write_index(outputs)
    return reports
