"""The smaller faults of issue 27: scratch folders of dead stage runs removed, SIGTERM one line and exit 143, locks
naming the user's command, a refused writer leaving the holder's report alone, checkpoint pointers read relative
to the run folder, a full disk in predict one line."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys

import pytest

from helpers.core import locks, paths, run_folders
from helpers.core.fileio import remove_dead_scratch, scratch_prefix


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_scratch_folders_of_dead_processes_are_removed(tmp_path):
    tag = ".04_evaluate-"
    dead = tmp_path / f"{tag}{socket.gethostname()}-{_dead_pid()}-abc123"
    mine = tmp_path / f"{scratch_prefix(tag)}def456"
    other_host = tmp_path / f"{tag}elsewhere-{_dead_pid()}-ghi789"
    unnamed = tmp_path / f"{tag}jkl012"
    for folder in (dead, mine, other_host, unnamed):
        folder.mkdir()
        (folder / "04_evaluate.ipynb").write_text("{}")
    assert remove_dead_scratch(tmp_path, tag) == [dead]
    assert not dead.exists() and mine.exists() and other_host.exists() and unnamed.exists()


def test_sigterm_stops_as_ctrl_c_does_in_one_line(monkeypatch, capsys):
    import helpers.__main__ as cli

    def terminated(args):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(cli, "cmd_index", terminated)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exited:
        cli.main(["index"])
    assert exited.value.code == cli.TERMINATED == 143
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Terminated (SIGTERM). Nothing half-written is kept")
    assert signal.getsignal(signal.SIGTERM) == before


def test_locks_name_the_command_the_user_ran(monkeypatch, tmp_path):
    import helpers.__main__ as cli

    seen = []
    monkeypatch.delenv(locks.COMMAND_ENV, raising=False)
    monkeypatch.setattr(cli, "cmd_index", lambda args: seen.append(locks.user_command()))
    cli.main(["index", "--outputs", str(tmp_path)])
    assert seen == [f"python -m helpers index --outputs {tmp_path}"]
    assert locks.COMMAND_ENV not in os.environ  # set for this command (and its kernels) only
    monkeypatch.setenv(locks.COMMAND_ENV, "python -m helpers sweep --lrs 0.01")  # as a kernel inherits it
    with locks.folder_lock(tmp_path / "run", "run folder"):
        assert locks.read_holder(tmp_path / "run")["command"] == "python -m helpers sweep --lrs 0.01"


def test_the_last_checkpoint_pointer_is_read_in_the_run_folder(tmp_path):
    original, copy = tmp_path / "original" / "lr0.01", tmp_path / "copy" / "lr0.01"
    for folder in (original, copy):
        folder.mkdir(parents=True)
        (folder / "iter_20.pth").write_bytes(b"weights")
        (folder / run_folders.LAST_CHECKPOINT_FILE).write_text(str(original / "iter_20.pth"))  # as mmengine writes it
    assert run_folders.find_checkpoints(copy)[1] == copy / "iter_20.pth"  # its own, not the original tree's
    (copy / "iter_20.pth").unlink()
    assert run_folders.find_checkpoints(copy)[1] is None
    (copy / run_folders.LAST_CHECKPOINT_FILE).write_text("iter_20.pth")  # a relative pointer
    (copy / "iter_20.pth").write_bytes(b"weights")
    assert run_folders.find_checkpoints(copy)[1] == copy / "iter_20.pth"


@pytest.mark.slow
def test_a_refused_writer_leaves_the_holders_report_alone(demo_prepared, tmp_path):
    from helpers.workflow.notebook_runner import run_notebook

    work_dir = tmp_path / "runs" / "demo" / "lr0.003"
    work_dir.mkdir(parents=True)
    (work_dir / "03_train.html").write_text("the holder's report")
    parameters = {
        "config": paths.DEMO_CONFIG,
        "prepared_root": str(demo_prepared.out_dir),
        "img_size": 64,
        "max_iters": 2,
        "work_dir": str(work_dir),
    }
    with locks.folder_lock(work_dir, "run folder"):
        report = run_notebook("03_train", parameters, work_dir, stream=False)
    assert not report.ok and "FolderLocked" in report.error
    assert (work_dir / "03_train.html").read_text() == "the holder's report"
    assert not (work_dir / "03_train.ipynb").exists()
    assert [p.name for p in work_dir.iterdir()] == ["03_train.html"]


@pytest.mark.slow
def test_a_full_disk_in_predict_is_one_line(trained_demo_run, tmp_path, monkeypatch, capsys):
    import cv2

    import helpers.predict as predict
    from helpers.__main__ import main
    from tests.dicom_files import generated_gray

    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), generated_gray(64, 64))

    def disk_full(path, image, *args):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(predict, "write_png", disk_full)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        main(["predict", "--checkpoint", str(trained_demo_run.best_checkpoint), "--out-dir", str(out), str(folder)])
    message = str(exited.value.code)
    assert message.startswith("predict: [Errno 28] No space left on device") and "\n" not in message
    assert f"{out / predict.PREDICTIONS_FILE} lists what was done" in message


def test_a_copied_run_folder_resumes_from_its_own_checkpoint(tmp_path):
    from helpers.modeling.train import TrainParams, build_config

    original, copy = tmp_path / "original", tmp_path / "copy"
    for folder in (original, copy):
        folder.mkdir()
        (folder / "iter_5.pth").write_bytes(b"weights")
        (folder / run_folders.LAST_CHECKPOINT_FILE).write_text(str(original / "iter_5.pth"))
    resumed = build_config(TrainParams(config=paths.DEMO_CONFIG, work_dir=str(copy), resume=True))
    assert resumed.resume and resumed.load_from == str(copy / "iter_5.pth")
    in_place = build_config(TrainParams(config=paths.DEMO_CONFIG, work_dir=str(original), resume=True))
    assert in_place.resume and not in_place.get("load_from")  # mmengine's own auto-resume, as before
