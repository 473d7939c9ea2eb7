"""A notebook run by hand: the demo's parameters and folders on the demo fallback, and a record as the pipeline's."""

from __future__ import annotations

import json

import pytest
from mmengine.config import Config

from helpers.core import data_profile, paths, run_folders
from helpers.core.parameters import defaults
from helpers.core.paths import DEMO_CONFIG
from helpers.workflow import interactive, stage_records
from helpers.workflow.notebook_runner import PIPELINE_RUN_ENV
from helpers.workflow.pipeline import stage_inputs, stage_outputs, stage_record


@pytest.fixture
def demo_only(tmp_path, monkeypatch):
    """A repository whose only data and results are the demo's (``make demo`` run, no full data)."""
    monkeypatch.setattr(data_profile, "_announced", [])
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    for name, value in {
        "RAW_DIR": tmp_path / "data" / "raw",
        "DEMO_DIR": tmp_path / "data" / "demo",
        "PREPARED_DIR": tmp_path / "data" / "prepared",
        "DEMO_PREPARED_DIR": tmp_path / "data" / "demo" / "prepared",
        "OUTPUTS_DIR": tmp_path / "outputs",
        "DEMO_OUTPUTS_DIR": tmp_path / "outputs" / "demo",
    }.items():
        monkeypatch.setattr(paths, name, value)
    for folder in ("png_images", "png_masks"):
        (paths.DEMO_DIR / folder).mkdir(parents=True)
    demo_root = paths.resolve(Config.fromfile(str(paths.config_path(DEMO_CONFIG))).train_dataloader.dataset.data_root)
    demo_root.mkdir(parents=True)
    (demo_root / "manifest.json").write_text(json.dumps({"parameters": {"img_size": 128}}))
    run = run_folders.run_dir(DEMO_CONFIG, 0.003, paths.DEMO_OUTPUTS_DIR)
    run.mkdir(parents=True)
    (run / run_folders.METRICS_FILE).write_text("{}")
    evaluation = run_folders.eval_dir(run, "test", paths.DEMO_OUTPUTS_DIR)
    evaluation.mkdir(parents=True)
    (evaluation / run_folders.EVAL_INFO_FILE).write_text("{}")
    return tmp_path


def test_on_the_demo_fallback_every_notebook_writes_under_outputs_demo_with_the_demo_s_parameters(demo_only, capsys):
    demo = paths.DEMO_OUTPUTS_DIR
    explore = interactive.notebook_parameters("01_explore", defaults("01_explore"))
    assert paths.explore_dir(explore.outputs_dir) == demo / "explore"
    prepare = interactive.notebook_parameters("02_prepare", defaults("02_prepare"))
    assert (prepare.img_size, prepare.test_fraction, prepare.split_mode) == (128, 0.2, "patient")
    assert paths.resolve(prepare.prepared_root) == paths.DEMO_PREPARED_DIR / "patient-128"
    assert paths.resolve(prepare.raw_root) == paths.DEMO_DIR
    train = interactive.notebook_parameters("03_train", defaults("03_train"))
    assert (train.config, train.lr) == (DEMO_CONFIG, 0.003)
    assert paths.resolve(train.work_dir) == run_folders.run_dir(DEMO_CONFIG, 0.003, demo)
    assert paths.resolve(train.prepared_root) == paths.DEMO_PREPARED_DIR / "patient-128"
    evaluate = interactive.notebook_parameters("04_evaluate", defaults("04_evaluate"))
    assert (paths.resolve(evaluate.outputs_dir), evaluate.n_boot, evaluate.batch_size) == (demo, 200, 16)
    visualize = interactive.notebook_parameters("05_visualize", defaults("05_visualize"))
    assert paths.resolve(visualize.outputs_dir) == demo
    printed = capsys.readouterr().out
    assert printed.count("Using the demo profile") == 1, printed
    assert "img_size=128" in printed and "n_boot=200" in printed

    given = interactive.notebook_parameters("02_prepare", {**defaults("02_prepare"), "img_size": 256})
    assert given.img_size == 256 and given.test_fraction == 0.2, "a value the user set is kept"


def test_a_run_by_hand_writes_the_record_the_pipeline_would(demo_only, monkeypatch):
    outputs = paths.DEMO_OUTPUTS_DIR
    (outputs / "eval").mkdir(parents=True, exist_ok=True)
    for name in ("comparison.csv", "paired.csv"):
        (outputs / "eval" / name).write_text("x\n")
    reports = outputs / "reports"
    reports.mkdir()
    for suffix in (".ipynb", ".html"):
        (reports / f"04_evaluate{suffix}").write_text("the pipeline's report of an earlier run")
    monkeypatch.delenv(PIPELINE_RUN_ENV, raising=False)
    params = interactive.notebook_parameters("04_evaluate", {**defaults("04_evaluate"), "n_boot": 60})
    path = interactive.record_run("04_evaluate", params)
    assert path == stage_record("04_evaluate", outputs)
    record = stage_records.read_record(path)
    assert record["state"] == stage_records.FINISHED and record["inputs"]["parameters"]["n_boot"] == 60
    assert not list(reports.iterdir()), "the report of another run is left out of date"

    pipeline = {"n_boot": 60, "batch_size": 16, "prepared_root": "data/demo/prepared/patient-128", "runs": []}
    pipeline.update({"split": "test", "tta": False, "postprocess": "tune", "outputs_dir": str(outputs)})
    inputs = stage_inputs("04_evaluate", pipeline, outputs)
    assert record["fingerprint"] == stage_records.fingerprint(inputs), "the pipeline reads the same inputs"
    state = stage_records.status(path, inputs, stage_outputs("04_evaluate", pipeline, outputs))
    assert not state.done and state.reason.startswith("output missing") and "reports" in state.reason
    changed = stage_inputs("04_evaluate", {**pipeline, "n_boot": 200}, outputs)
    assert stage_records.status(path, changed).reason == "changed: parameters"

    monkeypatch.setenv(PIPELINE_RUN_ENV, "1")
    assert interactive.record_run("04_evaluate", params) is None, "under the pipeline, the pipeline records it"
