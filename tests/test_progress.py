"""Progress you can see: the sweep streams each notebook's output (mmengine's iteration lines) to the terminal
while the run is under way, a failed cell's traceback too; progress bars are text under papermill; the
user's own ``papermill 03_train.ipynb ...`` from ``notebooks/`` resolves paths from the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from helpers.core import paths, run_folders
from helpers.core.paths import DEMO_CONFIG
from helpers.core.progress import KERNEL_ARGUMENTS
from helpers.workflow.notebook_runner import run_notebook

MAX_ITERS = 40
ITERATION_LINE = re.compile(rf"Iter\(train\) \[\s*\d+/{MAX_ITERS}\].*eta: \S+.*time: \S+.*loss: \d")


@pytest.mark.slow
def test_the_sweep_streams_iteration_lines_while_the_run_is_under_way(demo_prepared, tmp_path):
    outputs = tmp_path / "outputs"
    lr = 0.003
    command = [
        sys.executable,
        "-m",
        "helpers",
        "sweep",
        "--lrs",
        str(lr),
        "--config",
        DEMO_CONFIG,
        "--params-dir",
        str(tmp_path / "no-yaml"),
        "--outputs",
        str(outputs),
        "-p",
        f"prepared_root={demo_prepared.out_dir}",
        "-p",
        "img_size=64",
        "-p",
        "batch_size=4",
        "-p",
        f"max_iters={MAX_ITERS}",
        "-p",
        f"val_interval={MAX_ITERS}",
        "-p",
        "workers=0",
    ]
    metrics = run_folders.run_dir(DEMO_CONFIG, lr, outputs) / run_folders.METRICS_FILE
    process = subprocess.Popen(
        command, cwd=paths.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    lines, seen_during_the_run = [], []
    for line in process.stdout:
        lines.append(line)
        if ITERATION_LINE.search(line):
            seen_during_the_run.append((process.poll() is None, metrics.exists()))
    process.wait(timeout=60)
    assert process.returncode == 0, "".join(lines[-50:])
    assert seen_during_the_run, "no mmengine iteration line on the terminal:\n" + "".join(lines[-50:])
    assert seen_during_the_run[0] == (True, False), "the first iteration line came only after the run had ended"
    assert metrics.exists()


def test_a_failed_cell_s_traceback_reaches_the_terminal(tmp_path, capfd):
    (tmp_path / "nothing-here").mkdir()  # passes the parameter check; the notebook's own check of the layout fails
    report = run_notebook(
        "01_explore", {"raw_root": str(tmp_path / "nothing-here"), "outputs_dir": str(tmp_path)}, tmp_path / "reports"
    )
    assert not report.ok and report.notebook.exists()
    err = capfd.readouterr().err
    assert "01_explore failed" in err and "nothing-here" in err
    assert "Traceback (most recent call last)" in err


def _probe_notebook(path: Path) -> Path:
    notebook = nbformat.v4.new_notebook(
        metadata={
            "kernelspec": {"name": paths.KERNEL_NAME, "language": "python", "display_name": "Python (pneumothorax)"}
        }
    )
    notebook.cells = [
        nbformat.v4.new_code_cell(
            "from helpers.core.progress import text_progress, tqdm\n"
            "print('text progress:', text_progress())\n"
            "for _ in tqdm(range(3), desc='probe bar', mininterval=0):\n    pass\n"
            "import warnings\n"
            "warnings.warn('pkg_resources is deprecated as an API. (probe)', UserWarning)\n"
            "warnings.warn('a real probe warning', UserWarning)\n"
        )
    ]
    nbformat.write(notebook, path)
    return path


@pytest.mark.parametrize("watched", [True, False], ids=["kernel-copies-fds", "plain-fds"])
def test_progress_bars_are_text_on_the_terminal_and_not_in_the_notebook(tmp_path, capfd, monkeypatch, watched):
    """Under papermill the bar is text, written to the kernel's own stderr (the terminal), never into the
    notebook; so are real warnings, and the known library notices (pkg_resources, the kernel's TCP notice) not at
    all. ipykernel copies file descriptor 2 into the notebook except under pytest (PYTEST_CURRENT_TEST): both ways
    are run."""
    import papermill

    monkeypatch.delenv("PNEUMO_PROGRESS", raising=False)
    if watched:
        monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    executed = papermill.execute_notebook(
        str(_probe_notebook(tmp_path / "probe.ipynb")),
        str(tmp_path / "out.ipynb"),
        progress_bar=False,
        cwd=str(tmp_path),
        extra_arguments=KERNEL_ARGUMENTS,
    )
    outputs = executed.cells[0].outputs
    stdout = "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
    assert "text progress: True" in stdout
    assert not [o for o in outputs if o.get("name") == "stderr"], "the bar went into the notebook"
    assert not [o for o in outputs if o.output_type == "display_data"], "a widget was drawn"
    terminal = capfd.readouterr().err
    assert "probe bar: 100%" in terminal and "3/3" in terminal
    assert "a real probe warning" in terminal, "a real warning must still reach the terminal"
    assert "pkg_resources" not in terminal and "without encryption" not in terminal, terminal


def test_an_interactive_client_keeps_the_widget(tmp_path):
    """The same kernel asked by a client that can answer input() (JupyterLab sends allow_stdin=True)."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name=paths.KERNEL_NAME, cwd=str(tmp_path))
    try:
        answers = {}
        for allow_stdin in (True, False):
            client.execute(
                "from helpers.core.progress import text_progress; print(text_progress())", allow_stdin=allow_stdin
            )
            while True:
                message = client.get_iopub_msg(timeout=60)
                if message["msg_type"] == "stream":
                    answers[allow_stdin] = message["content"]["text"].strip()
                if (
                    message["msg_type"] == "status"
                    and message["content"]["execution_state"] == "idle"
                    and allow_stdin in answers
                ):
                    break
        assert answers == {True: "False", False: "True"}
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


@pytest.mark.slow
def test_papermill_from_the_notebooks_folder_trains_into_outputs(demo_prepared, tmp_path):
    """The user's own command, run in notebooks/, with the data given relative to the repository root."""
    outputs = tmp_path / "outputs"
    prepared_root = os.path.relpath(demo_prepared.out_dir, paths.REPO_ROOT)
    env = {**os.environ, "PNEUMO_OUTPUTS_DIR": str(outputs)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            "03_train.ipynb",
            str(tmp_path / "out.ipynb"),
            "--log-output",
            "-p",
            "lr",
            "0.002",
            "-p",
            "config",
            DEMO_CONFIG,
            "-p",
            "prepared_root",
            prepared_root,
            "-p",
            "img_size",
            "64",
            "-p",
            "batch_size",
            "4",
            "-p",
            "max_iters",
            "4",
            "-p",
            "val_interval",
            "4",
            "-p",
            "workers",
            "0",
        ],
        cwd=paths.NOTEBOOKS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = outputs / "runs" / DEMO_CONFIG / "lr0.002"
    assert (run / run_folders.METRICS_FILE).is_file() and (run / "iter_4.pth").is_file()
    assert "Iter(train) [4/4]" in done.stderr  # --log-output: the notebook's output on the terminal
    assert not (paths.NOTEBOOKS_DIR / "outputs").exists() and not (paths.NOTEBOOKS_DIR / "data").exists()


NOTEBOOK_ITERS, NOTEBOOK_VAL_INTERVAL = 150, 50
MAX_OUTPUT_LINES = 36  # "a few dozen": the notebook's own prints, tables, figures and one line per validation
VALIDATION_LINE = re.compile(r"^validation at iteration (\d+)/(\d+): .*mDice \d+\.\d\d")


def _train_parameters(demo_prepared, tmp_path: Path, max_iters: int, val_interval: int) -> dict:
    return {
        "config": DEMO_CONFIG,
        "prepared_root": str(demo_prepared.out_dir),
        "img_size": 64,
        "batch_size": 4,
        "max_iters": max_iters,
        "val_interval": val_interval,
        "workers": 0,
        "work_dir": str(tmp_path / "run"),
    }


def _output_lines(notebook) -> list[str]:
    """Every line a reader of the notebook sees in its outputs (a figure, a table, a widget: one line each)."""
    lines: list[str] = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                lines += [f"{output.name}: {line}" for line in output.text.splitlines()]
            else:
                lines.append(f"{output.output_type}: {sorted(output.get('data', {}))}")
    return lines


def _check_training_output(lines: list[str], parameters: dict) -> None:
    max_iters, val_interval = parameters["max_iters"], parameters["val_interval"]
    shown = "\n".join(lines)
    assert len(lines) <= MAX_OUTPUT_LINES, f"{len(lines)} output lines:\n{shown}"
    assert not [line for line in lines if line.startswith("stderr")], shown  # no warning, no log
    assert "mmengine" not in shown and "Iter(train)" not in shown and "Warning" not in shown, shown
    validations = [VALIDATION_LINE.match(line.removeprefix("stdout: ")) for line in lines]
    steps = [(int(m[1]), int(m[2])) for m in validations if m]
    assert steps == [(step, max_iters) for step in range(val_interval, max_iters + 1, val_interval)], shown


@pytest.mark.slow
def test_training_in_a_batch_run_shows_one_line_per_validation_and_no_log(demo_prepared, tmp_path, monkeypatch):
    """03 under papermill (the pipeline's way, as `make sweep` runs it), 150 iterations: the notebook holds the
    results and one line per validation; mmengine's log and the library warnings stay out of it."""
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)  # ipykernel copies fd 1 and 2, as outside pytest
    parameters = _train_parameters(demo_prepared, tmp_path, NOTEBOOK_ITERS, NOTEBOOK_VAL_INTERVAL)
    report = run_notebook("03_train", parameters, tmp_path / "reports", stream=False)
    assert report.ok, report.error
    _check_training_output(_output_lines(nbformat.read(report.notebook, as_version=4)), parameters)
    assert "Iter(train)" in (tmp_path / "run" / _log_file(tmp_path / "run")).read_text()  # the full log: the file


def _log_file(work_dir: Path) -> Path:
    """mmengine's log of the run (``<timestamp>/<timestamp>.log``), relative to the run folder."""
    (log,) = work_dir.glob("*/*.log")
    return log.relative_to(work_dir)


@pytest.mark.slow
def test_training_in_jupyterlab_shows_a_progress_widget_and_one_line_per_validation(
    demo_prepared, tmp_path, monkeypatch
):
    """03 executed cell by cell by a client that asks as JupyterLab does (``allow_stdin=True``): a tqdm widget, one
    line per validation, no mmengine log (it goes to the terminal Lab was started in, and to the run's log file)."""
    from nbclient import NotebookClient
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    class LabClient(NotebookClient):
        async def async_start_new_kernel_client(self):
            client = await super().async_start_new_kernel_client()
            client.allow_stdin = True  # nbclient's own choice is False (a headless executor)
            return client

    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    monkeypatch.delenv("PNEUMO_PROGRESS", raising=False)
    parameters = _train_parameters(demo_prepared, tmp_path, 20, 10)
    notebook = parameterize_notebook(load_notebook_node(str(paths.NOTEBOOKS_DIR / "03_train.ipynb")), parameters)
    LabClient(
        notebook,
        kernel_name=paths.KERNEL_NAME,
        extra_arguments=KERNEL_ARGUMENTS,
        resources={"metadata": {"path": str(paths.REPO_ROOT)}},
        timeout=1800,
    ).execute()
    lines = _output_lines(notebook)
    assert any("application/vnd.jupyter.widget-view+json" in line for line in lines), "no progress widget"
    _check_training_output(lines, parameters)
    assert "Iter(train)" in (tmp_path / "run" / _log_file(tmp_path / "run")).read_text()
