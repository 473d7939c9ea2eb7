"""helpers.runs: a run folder's label, readers and checkpoints, on hand-made folders."""

from __future__ import annotations

import json
import math
import os
import time

import pytest

from helpers import paths, runs
from helpers.paths import SEED_CONFIG


def test_the_label_keeps_dotted_config_names(tmp_path):
    """Config names hold dots (``...-0.01-20k...``): the label must not be cut at the first one."""
    (tmp_path / runs.MANIFEST_FILE).write_text(json.dumps({"parameters": {"config": SEED_CONFIG}, "lr": 0.01}))
    assert runs.run_label(tmp_path) == (SEED_CONFIG, 0.01)


def test_the_label_falls_back_on_the_folder_names(tmp_path):
    """No manifest (a copied run): the config from the parent folder, the lr from ``lr<lr>``."""
    run = runs.run_dir(SEED_CONFIG, 0.0001, tmp_path)
    run.mkdir(parents=True)
    assert run == tmp_path / "runs" / SEED_CONFIG / "lr0.0001"
    assert runs.run_label(run) == (SEED_CONFIG, 0.0001)
    odd = tmp_path / "somewhere" / "final"
    odd.mkdir(parents=True)
    config, lr = runs.run_label(odd)
    assert config == "somewhere" and math.isnan(lr)


def test_readers_name_the_missing_file(tmp_path):
    assert runs.read_manifest(tmp_path) == {}
    with pytest.raises(FileNotFoundError, match=str(tmp_path / runs.METRICS_FILE)):
        runs.read_metrics(tmp_path)
    (tmp_path / runs.METRICS_FILE).write_text(json.dumps({"iterations": 3}))
    assert runs.read_metrics(tmp_path) == {"iterations": 3}


def test_find_checkpoints_takes_the_newest_best_and_the_recorded_last(tmp_path):
    older, newer = tmp_path / "best_mDice_iter_50.pth", tmp_path / "best_mDice_iter_100.pth"
    for path in (older, newer, tmp_path / "iter_150.pth"):
        path.write_bytes(b"")
    os.utime(older, (time.time() - 60, time.time() - 60))
    (tmp_path / runs.LAST_CHECKPOINT_FILE).write_text(str(tmp_path / "iter_150.pth"))
    assert runs.find_checkpoints(tmp_path) == (newer, tmp_path / "iter_150.pth")
    (tmp_path / runs.LAST_CHECKPOINT_FILE).write_text(str(tmp_path / "iter_999.pth"))  # recorded, then deleted
    assert runs.find_checkpoints(tmp_path)[1] is None


def test_scalars_of_resumed_sessions_merge_with_later_sessions_winning(tmp_path):
    for session, rows in (("20260101_000000", [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}]),
                          ("20260101_010000", [{"step": 2, "loss": 1.5}, {"step": 2, "mIoU": 40.0}])):
        folder = tmp_path / session / "vis_data"
        folder.mkdir(parents=True)
        (folder / "scalars.json").write_text("".join(json.dumps(row) + "\n" for row in rows))
    train, val = runs.read_scalars(tmp_path)
    assert train == [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 1.5}]
    assert val == [{"step": 2, "mIoU": 40.0}]


def test_finished_runs_and_evaluations_are_found_from_relative_outputs(tmp_path, monkeypatch):
    outputs = tmp_path / "outputs"
    done, unfinished = runs.run_dir("a", 0.01, outputs), runs.run_dir("a", 0.001, outputs)
    for run in (done, unfinished):
        run.mkdir(parents=True)
    (done / runs.METRICS_FILE).write_text("{}")
    evaluation = runs.eval_dir(done, "test", outputs)
    evaluation.mkdir(parents=True)
    (evaluation / runs.EVAL_INFO_FILE).write_text("{}")
    monkeypatch.chdir(tmp_path.parent)  # relative paths are from the repository root, not the cwd
    relative = os.path.relpath(outputs, paths.REPO_ROOT)
    assert [p.resolve() for p in runs.trained_runs(relative)] == [done.resolve()]
    assert [p.resolve() for p in runs.evaluations(relative, "test")] == [evaluation.resolve()]
    assert evaluation == outputs / "eval" / "a_lr0.01" / "test"


def test_04_and_05_defaults_fall_back_on_the_demo_outputs(tmp_path, monkeypatch):
    outputs, demo = tmp_path / "outputs", tmp_path / "outputs" / "demo"
    monkeypatch.setattr(paths, "OUTPUTS_DIR", outputs)
    monkeypatch.setattr(paths, "DEMO_OUTPUTS_DIR", demo)
    assert runs.choose_outputs() == (outputs, None)  # nothing anywhere: outputs/, and 04 says to train first
    run = runs.run_dir("demo", 0.003, demo)
    run.mkdir(parents=True)
    (run / runs.METRICS_FILE).write_text("{}")
    chosen, note = runs.choose_outputs()
    assert chosen == demo and str(demo) in note and "trained runs" in note
    assert runs.choose_outputs(split="test") == (outputs, None)  # no evaluation yet: 05 looks in outputs/
    assert runs.choose_outputs("elsewhere") == (paths.resolve("elsewhere"), None)
