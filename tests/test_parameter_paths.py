"""Parameters checked on every path: papermill's -p in the notebook itself, the sweep's -p, the YAML files (syntax
errors with file, line and column; 2e4 and 3e-3 as numbers), and one line from the CLI for a refusal."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers.core import paths
from helpers.core.parameters import ParameterError, check_notebook, defaults, injected_names, parse_yaml
from helpers.core.paths import DEMO_CONFIG
from helpers.workflow import parameter_files

INJECTED = "# Parameters\nmax_iter = 1\nlr = 0.01\n"  # papermill's injected-parameters cell, as its kernel ran it


def test_the_notebook_refuses_a_name_papermill_injected_that_it_does_not_declare():
    namespace = {**defaults("03_train"), "config": DEMO_CONFIG, "In": ["", "config = None\n", INJECTED]}
    assert injected_names(namespace) == ["max_iter", "lr"]
    with pytest.raises(ParameterError, match=r"papermill -p: unknown 03_train parameter 'max_iter'; known: config"):
        check_notebook("03_train", namespace)
    namespace["In"] = ["", "# Parameters\nlr = 0.01\nmax_iters = 5\n"]
    assert check_notebook("03_train", {**namespace, "lr": 0.01, "max_iters": 5}).max_iters == 5
    assert injected_names({"In": ["x = 1\n"]}) == [] and injected_names({}) == []


def _papermill(notebook: str, out, *parameters: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "papermill", str(paths.NOTEBOOKS_DIR / notebook), str(out), *parameters],
        capture_output=True,
        text=True,
        cwd=paths.REPO_ROOT,
    )


@pytest.mark.slow
def test_papermill_with_a_typo_fails_in_the_first_cell_and_trains_nothing(tmp_path):
    """``papermill notebooks/03_train.ipynb out.ipynb -p max_iter 1``: papermill only warns; the notebook stops."""
    work_dir = tmp_path / "run"
    run = _papermill("03_train.ipynb", tmp_path / "out.ipynb", "-p", "max_iter", "1", "-p", "work_dir", str(work_dir))
    assert run.returncode != 0
    assert "unknown 03_train parameter 'max_iter'" in run.stdout + run.stderr
    assert not work_dir.exists()


def test_exponent_numbers_are_numbers_in_one_place():
    assert parse_yaml("2e4", "-p") == 20000 and isinstance(parse_yaml("2e4", "-p"), int)
    assert parse_yaml("[3e-3, 1e-2, 0.1]", "x") == [0.003, 0.01, 0.1]
    assert parse_yaml("1.5e3", "x") == 1500.0 and parse_yaml("abc", "x") == "abc" and parse_yaml("7", "x") == 7


def test_the_yaml_files_take_exponents_and_name_file_line_and_column(tmp_path):
    (tmp_path / "03_train.yaml").write_text("lrs: [3e-3]\nmax_iters: 2e4\n")
    assert parameter_files.stage_parameters("03_train", tmp_path) == {"lrs": [0.003], "max_iters": 20000}
    (tmp_path / "03_train.yaml").write_text("lrs: [0.01\nmax_iters: 10\n")
    with pytest.raises(ParameterError, match=rf"{tmp_path / '03_train.yaml'}, line \d+, column \d+: not valid YAML"):
        parameter_files.stage_parameters("03_train", tmp_path)
    (tmp_path / "03_train.yaml").write_text("max_iters: 10\n\tseed: 1\n")
    with pytest.raises(ParameterError, match=r"03_train.yaml, line 2, column 1: not valid YAML .*'\\t'"):
        parameter_files.stage_parameters("03_train", tmp_path)


def _sweep_cli(tmp_path, *arguments: str) -> subprocess.CompletedProcess:
    """``python -m helpers sweep ... --sbatch``: every check runs, and at worst a script is written, never a run."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "helpers",
            "sweep",
            "--outputs",
            str(tmp_path / "outputs"),
            "--config",
            DEMO_CONFIG,
            *arguments,
            "--sbatch",
            str(tmp_path / "sweep.sbatch"),
        ],
        capture_output=True,
        text=True,
        cwd=paths.REPO_ROOT,
    )


def _one_line_error(run: subprocess.CompletedProcess) -> str:
    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip() and " INFO " not in line]
    assert len(lines) == 1, run.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (["--no-yaml", "-p", "max_iters=abc"], "03_train parameter max_iters = 'abc': allowed: an integer >= 1"),
        (["--no-yaml", "-p", "lr=abc"], "03_train parameter lr = 'abc': allowed: a learning rate"),
        (["--no-yaml", "-p", "lr=0.01", "--lrs", "0.001"], "give the lrs once"),
        (["--no-yaml", "-p", "work_dir=x"], "-p work_dir: the sweep sets it"),
        (["--no-yaml", "-p", "max_iter=3"], "unknown 03_train parameter 'max_iter'"),
        (["--no-yaml", "-p", "positive_rate=[0.5, 0.1"], "-p positive_rate, line 1, column"),
    ],
)
def test_the_sweep_refuses_a_bad_parameter_in_one_line_before_anything(tmp_path, arguments, said):
    line = _one_line_error(_sweep_cli(tmp_path, *arguments))
    assert said in line
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "sweep.sbatch").exists()


def test_a_yaml_syntax_error_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "03_train.yaml").write_text("lrs: [0.01\n")
    line = _one_line_error(_sweep_cli(tmp_path, "--params-dir", str(tmp_path)))
    assert f"{tmp_path / '03_train.yaml'}, line 2, column 1: not valid YAML" in line


def test_the_sweep_takes_exponent_numbers_and_one_lr(tmp_path):
    run = _sweep_cli(tmp_path, "--no-yaml", "-p", "max_iters=2e4", "-p", "lr=3e-3")
    assert run.returncode == 0, run.stderr
    text = (tmp_path / "sweep.sbatch").read_text()
    assert "-p max_iters=20000" in text and "LRS=(0.003)" in text
