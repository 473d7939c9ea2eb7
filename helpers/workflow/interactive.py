"""A notebook run by hand (JupyterLab, or papermill from a shell) is a run of its stage, as the pipeline's are.

Its first cell takes :func:`notebook_parameters`: its values checked, and, when it falls back on the demo data
(``make demo``'s, for want of the full data), the demo's YAML values (``pipeline/demo/``) in place of the
defaults it left as they are, with outputs under ``outputs/demo/`` as the demo pipeline writes them, said once.
Its last cell calls :func:`record_run`: the stage's record (``<outputs>/records/<stage>.json``, a training run's
``record.json``) written as the pipeline writes it, the stage's pipeline report (now out of date) removed and
the index rebuilt, so that the index agrees with the files it links and the next pipeline run redoes exactly
the stages whose record no longer matches. Under the pipeline or the sweep (which write the records themselves,
with the reports) :func:`record_run` does nothing.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

from helpers.core import paths, run_folders
from helpers.core.data_profile import DEMO, FULL
from helpers.core.parameters import check_notebook, declared_names, defaults
from helpers.workflow import stage_records
from helpers.workflow.index import write_index
from helpers.workflow.notebook_runner import PIPELINE_RUN_ENV
from helpers.workflow.parameter_files import SWEEP_KEY, stage_parameters
from helpers.workflow.pipeline import stage_inputs, stage_outputs, stage_record
from helpers.workflow.sweep import run_inputs

TRAIN = "03_train"


def _profile(stage: str, values: Mapping[str, Any]) -> str:
    """The profile a notebook's defaults fall back on (helpers.core.data_profile's rule, announced there once)."""
    if stage in ("01_explore", "02_prepare"):
        from helpers.data.rawdata import choose_raw_root

        return FULL if values["raw_root"] is not None or choose_raw_root(None).note is None else DEMO
    if stage == TRAIN:
        from helpers.modeling.train import choose_config

        unset = values["config"] is None and values["prepared_root"] is None
        return DEMO if unset and choose_config(None, None)[2] is not None else FULL
    split = values["split"] if stage == "05_visualize" else None
    unset = values["outputs_dir"] is None
    return DEMO if unset and run_folders.choose_outputs(None, split)[1] is not None else FULL


def notebook_parameters(stage: str, namespace: Mapping[str, Any]):
    """A notebook's first step: its parameters (from ``namespace``, the kernel's globals) as its checked dataclass.

    On the demo fallback, every parameter still at its declared default takes the demo pipeline's value (its
    YAML, ``shared.yaml`` included; ``outputs_dir`` ``outputs/demo``; 03's ``lr`` the sweep's first and its
    ``work_dir`` the sweep's folder of that lr), and one line names the values taken."""
    values = {name: namespace[name] for name in declared_names(stage)}
    if _profile(stage, values) == DEMO:
        declared = defaults(stage)
        demo = stage_parameters(stage, paths.DEMO_PARAMS_DIR)
        lrs = demo.pop(SWEEP_KEY, None)
        if lrs:
            demo["lr"] = float(lrs[0])
        if "outputs_dir" in declared:
            demo["outputs_dir"] = str(paths.DEMO_OUTPUTS_DIR)
        taken = {k: v for k, v in demo.items() if values[k] == declared[k] and values[k] != v}
        values.update(taken)
        if stage == TRAIN and values["work_dir"] is None and values["lr"] is not None:
            taken["work_dir"] = values["work_dir"] = str(
                run_folders.run_dir(values["config"] or paths.DEMO_CONFIG, values["lr"], paths.DEMO_OUTPUTS_DIR)
            )
        if taken:
            print(
                f"{stage} with the demo's parameters ({paths.DEMO_PARAMS_DIR.name}/{stage}.yaml) for the defaults: "
                + ", ".join(f"{k}={v!r}" for k, v in taken.items())
            )
    return check_notebook(stage, {**namespace, **values})  # the kernel's globals: the injected names are checked too


def _outputs(stage: str, values: Mapping[str, Any]) -> Path:
    """The outputs folder of a notebook's run: its ``outputs_dir``; for 02, the one of the profile it read."""
    if "outputs_dir" in values:
        if values["outputs_dir"] is not None:
            return paths.resolve(values["outputs_dir"])
        split = values["split"] if stage == "05_visualize" else None
        return run_folders.choose_outputs(None, split)[0]
    raw = values.get("raw_root")
    demo = raw is not None and paths.resolve(raw).resolve() == paths.DEMO_DIR.resolve()
    return paths.DEMO_OUTPUTS_DIR if demo else paths.OUTPUTS_DIR


def record_run(stage: str, params, work_dir: Path | str | None = None) -> Path | None:
    """A notebook's last step: the record of this run by hand (None under the pipeline, which writes its own).

    ``params``: the notebook's dataclass; ``work_dir``: 03's run folder. Removes the stage's pipeline report (it
    shows another run) and rebuilds the outputs' index; returns the record's path."""
    if os.environ.get(PIPELINE_RUN_ENV):
        return None
    values = dataclasses.asdict(params)
    if stage == TRAIN:
        work_dir = Path(work_dir or values["work_dir"])
        path = work_dir / run_folders.RECORD_FILE
        report = work_dir / f"{TRAIN}.html"
        stale = [report, report.with_suffix(".ipynb")]
        inputs = run_inputs(values)
        kept = [work_dir / run_folders.METRICS_FILE]
        outputs = work_dir.parents[2] if work_dir.parent.parent.name == "runs" else None
        said = "the sweep keeps this run while its parameters match (its report is this notebook)"
    else:
        outputs = _outputs(stage, values)
        path = stage_record(stage, outputs)
        expected = stage_outputs(stage, values, outputs)
        stale, kept = expected[:2], expected[2:]  # the report first (pipeline.stage_outputs)
        inputs = stage_inputs(stage, values, outputs)
        said = f"the next pipeline run writes its report in {outputs / 'reports'} again"
    for report in stale:
        report.unlink(missing_ok=True)
    stage_records.write_record(path, inputs, stage_records.FINISHED, kept)
    if outputs is not None and (outputs / "index.html").exists():
        write_index(outputs)
    print(f"{stage}: this run is recorded in {path}; {said}")
    return path
