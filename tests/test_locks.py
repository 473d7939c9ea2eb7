"""One writer per folder (helpers.core.locks): two writers started together, a killed holder, and the lock in
02 (prepared folder), 03 (run folder) and 04 (evaluation folder)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers.core import paths
from helpers.core.locks import LOCK_FILE, FolderLocked, folder_lock, read_holder

# a writer: takes the folder's lock, appends its pid to ran.txt, holds the lock until <folder>.release exists
WRITER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from helpers.core.locks import folder_lock
    folder = Path(sys.argv[1])
    with folder_lock(folder, "run folder"):
        with open(folder / "ran.txt", "a") as handle:
            handle.write(f"{os.getpid()}\\n")
        print("locked", flush=True)
        while not folder.with_suffix(".release").exists():
            time.sleep(0.05)
""")


def _writer(folder: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder)],
        cwd=paths.REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(paths.REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _hold(folder: Path) -> subprocess.Popen:
    """A process holding ``folder``'s lock until killed (returns once it holds it)."""
    holder = _writer(folder)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_two_writers_started_together_one_runs_the_other_names_the_holder(tmp_path):
    folder = tmp_path / "run"
    writers = [_writer(folder), _writer(folder)]
    while all(p.poll() is None for p in writers):  # the loser exits at once; the winner holds the lock
        time.sleep(0.05)
    folder.with_suffix(".release").touch()
    outcomes = [(p.pid, p.wait(timeout=60), p.stderr.read()) for p in writers]
    ran = (folder / "ran.txt").read_text().split()
    assert len(ran) == 1  # exactly one wrote
    winner = int(ran[0])
    ((loser_code, loser_err),) = [(code, err) for pid, code, err in outcomes if pid != winner]
    assert [code for pid, code, _ in outcomes if pid == winner] == [0]
    assert loser_code != 0
    assert "FolderLocked" in loser_err and f"pid {winner} on host {socket.gethostname()}" in loser_err
    assert str(folder) in loser_err
    assert not (folder / LOCK_FILE).exists()  # released on exit


def test_a_killed_holder_leaves_a_stale_lock_that_the_next_writer_takes(tmp_path, caplog):
    folder = tmp_path / "run"
    holder = _hold(folder)
    try:
        with pytest.raises(FolderLocked, match=f"pid {holder.pid} on host"):
            with folder_lock(folder, "run folder"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert read_holder(folder)["pid"] == holder.pid  # its record is left behind
    with caplog.at_level(logging.WARNING, logger="helpers.core.locks"):
        with folder_lock(folder, "run folder"):
            assert read_holder(folder)["pid"] == os.getpid()
    assert f"pid {holder.pid}" in caplog.text and "without releasing" in caplog.text
    assert not (folder / LOCK_FILE).exists()


def test_the_lock_refuses_a_second_writer_in_the_same_process_and_removes_a_folder_it_created(tmp_path):
    folder = tmp_path / "new"
    with folder_lock(folder, "evaluation folder"):
        with pytest.raises(FolderLocked, match=f"evaluation folder is being written by pid {os.getpid()}"):
            with folder_lock(folder, "evaluation folder"):
                pass
    assert not folder.exists()  # created by the lock and left empty


def test_training_into_a_held_run_folder_refuses_before_writing(demo_prepared, tmp_path):
    from helpers.modeling.train import TrainParams, run_training

    work_dir = tmp_path / "lr0.003"
    holder = _hold(work_dir)
    try:
        with pytest.raises(FolderLocked, match=f"run folder is being written by pid {holder.pid}"):
            run_training(
                TrainParams(
                    config=paths.DEMO_CONFIG,
                    prepared_root=str(demo_prepared.out_dir),
                    img_size=64,
                    max_iters=2,
                    val_interval=2,
                    work_dir=str(work_dir),
                )
            )
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert sorted(p.name for p in work_dir.iterdir()) == [LOCK_FILE, "ran.txt"]  # no manifest, config or log


def test_preparing_into_a_held_folder_refuses(demo_raw_dir, tmp_path):
    from helpers.data.prepare import prepare_dataset

    out_dir = tmp_path / "official-64"
    holder = _hold(out_dir)
    try:
        with pytest.raises(FolderLocked, match=f"prepared folder is being written by pid {holder.pid}"):
            prepare_dataset(demo_raw_dir, out_dir=out_dir, img_size=64, split_mode="official", workers=1)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert not (out_dir / "images").exists()


def test_evaluating_into_a_held_evaluation_folder_refuses(trained_demo_run, tmp_path):
    from helpers.core import run_folders
    from helpers.workflow.evaluate_runs import evaluate_run_folders

    outputs = tmp_path / "outputs"
    eval_dir = run_folders.eval_dir(trained_demo_run.work_dir, "test", outputs)
    holder = _hold(eval_dir)
    try:
        with pytest.raises(FolderLocked, match=f"evaluation folder is being written by pid {holder.pid}"):
            evaluate_run_folders(
                [trained_demo_run.work_dir], split="test", outputs=outputs, postprocess="none", n_boot=10
            )
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert sorted(p.name for p in eval_dir.iterdir()) == [LOCK_FILE, "ran.txt"]
