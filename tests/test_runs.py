"""helpers.core.run_folders: a run folder's label, readers and checkpoints, on hand-made folders."""

from __future__ import annotations

import json
import math
import os
import time

import pytest

from helpers.core import paths, run_folders
from helpers.core.paths import SEED_CONFIG


def test_the_label_keeps_dotted_config_names(tmp_path):
    """Config names hold dots (``...-0.01-20k...``): the label must not be cut at the first one."""
    (tmp_path / run_folders.MANIFEST_FILE).write_text(json.dumps({"parameters": {"config": SEED_CONFIG}, "lr": 0.01}))
    assert run_folders.run_label(tmp_path) == (SEED_CONFIG, 0.01)


def test_the_label_falls_back_on_the_folder_names(tmp_path):
    """No manifest (a copied run): the config from the parent folder, the lr from ``lr<lr>``."""
    run = run_folders.run_dir(SEED_CONFIG, 0.0001, tmp_path)
    run.mkdir(parents=True)
    assert run == tmp_path / "runs" / SEED_CONFIG / "lr0.0001"
    assert run_folders.run_label(run) == (SEED_CONFIG, 0.0001)
    odd = tmp_path / "somewhere" / "final"
    odd.mkdir(parents=True)
    config, lr = run_folders.run_label(odd)
    assert config == "somewhere" and math.isnan(lr)


def test_readers_name_the_missing_file(tmp_path):
    assert run_folders.read_manifest(tmp_path) == {}
    with pytest.raises(FileNotFoundError, match=str(tmp_path / run_folders.METRICS_FILE)):
        run_folders.read_metrics(tmp_path)
    (tmp_path / run_folders.METRICS_FILE).write_text(json.dumps({"iterations": 3}))
    assert run_folders.read_metrics(tmp_path) == {"iterations": 3}


def test_find_checkpoints_takes_the_newest_best_and_the_recorded_last(tmp_path):
    older, newer = tmp_path / "best_mDice_iter_50.pth", tmp_path / "best_mDice_iter_100.pth"
    for path in (older, newer, tmp_path / "iter_150.pth"):
        path.write_bytes(b"")
    os.utime(older, (time.time() - 60, time.time() - 60))
    (tmp_path / run_folders.LAST_CHECKPOINT_FILE).write_text(str(tmp_path / "iter_150.pth"))
    assert run_folders.find_checkpoints(tmp_path) == (newer, tmp_path / "iter_150.pth")
    (tmp_path / run_folders.LAST_CHECKPOINT_FILE).write_text(str(tmp_path / "iter_999.pth"))  # recorded, then deleted
    assert run_folders.find_checkpoints(tmp_path)[1] is None


def test_scalars_of_resumed_sessions_merge_with_later_sessions_winning(tmp_path):
    for session, rows in (
        ("20260101_000000", [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}]),
        ("20260101_010000", [{"step": 2, "loss": 1.5}, {"step": 2, "mIoU": 40.0}]),
    ):
        folder = tmp_path / session / "vis_data"
        folder.mkdir(parents=True)
        (folder / "scalars.json").write_text("".join(json.dumps(row) + "\n" for row in rows))
    train, val = run_folders.read_scalars(tmp_path)
    assert train == [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 1.5}]
    assert val == [{"step": 2, "mIoU": 40.0}]


def test_finished_runs_and_evaluations_are_found_from_relative_outputs(tmp_path, monkeypatch):
    outputs = tmp_path / "outputs"
    done, unfinished = run_folders.run_dir("a", 0.01, outputs), run_folders.run_dir("a", 0.001, outputs)
    for run in (done, unfinished):
        run.mkdir(parents=True)
    (done / run_folders.METRICS_FILE).write_text("{}")
    evaluation = run_folders.eval_dir(done, "test", outputs)
    evaluation.mkdir(parents=True)
    (evaluation / run_folders.EVAL_INFO_FILE).write_text("{}")
    monkeypatch.chdir(tmp_path.parent)  # relative paths are from the repository root, not the cwd
    relative = os.path.relpath(outputs, paths.REPO_ROOT)
    assert [p.resolve() for p in run_folders.trained_runs(relative)] == [done.resolve()]
    assert [p.resolve() for p in run_folders.evaluations(relative, "test")] == [evaluation.resolve()]
    assert evaluation == outputs / "eval" / "a_lr0.01" / "test"


def test_04_and_05_defaults_fall_back_on_the_demo_outputs(tmp_path, monkeypatch):
    outputs, demo = tmp_path / "outputs", tmp_path / "outputs" / "demo"
    monkeypatch.setattr(paths, "OUTPUTS_DIR", outputs)
    monkeypatch.setattr(paths, "DEMO_OUTPUTS_DIR", demo)
    assert run_folders.choose_outputs() == (outputs, None)  # nothing anywhere: outputs/, and 04 says to train first
    run = run_folders.run_dir("demo", 0.003, demo)
    run.mkdir(parents=True)
    (run / run_folders.METRICS_FILE).write_text("{}")
    chosen, note = run_folders.choose_outputs()
    assert chosen == demo and str(demo) in note and "trained runs" in note
    assert run_folders.choose_outputs(split="test") == (outputs, None)  # no evaluation yet: 05 looks in outputs/
    assert run_folders.choose_outputs("elsewhere") == (paths.resolve("elsewhere"), None)


def test_a_fold_run_is_labelled_with_its_fold(tmp_path):
    """A fold's run folder is ``lr<lr>_fold<k>``; its label says the fold, from the manifest or the folder name."""
    run = run_folders.fold_run_dir(SEED_CONFIG, 0.01, 2, tmp_path)
    assert run == tmp_path / "runs" / SEED_CONFIG / "lr0.01_fold2"
    run.mkdir(parents=True)
    assert run_folders.run_label(run) == (f"{SEED_CONFIG} (fold 2)", 0.01)  # no manifest: the folder names
    (run / run_folders.MANIFEST_FILE).write_text(
        json.dumps({"parameters": {"config": SEED_CONFIG, "fold": 0}, "lr": 0.003})
    )
    assert run_folders.run_label(run) == (f"{SEED_CONFIG} (fold 0)", 0.003)  # the manifest wins
    assert run_folders.trained_runs(tmp_path) == []
    (run / run_folders.METRICS_FILE).write_text("{}")
    assert run_folders.trained_runs(tmp_path) == [run]  # finished fold runs are found like any other


def test_step_checkpoint_finds_the_interval_or_the_best_checkpoint_of_a_step(tmp_path):
    (tmp_path / "iter_4.pth").write_bytes(b"4")
    (tmp_path / f"best_{run_folders.BEST_METRIC}_iter_6.pth").write_bytes(b"6")
    assert run_folders.step_checkpoint(tmp_path, 4) == tmp_path / "iter_4.pth"
    assert run_folders.step_checkpoint(tmp_path, 6) == tmp_path / f"best_{run_folders.BEST_METRIC}_iter_6.pth"
    assert run_folders.step_checkpoint(tmp_path, 8) is None
