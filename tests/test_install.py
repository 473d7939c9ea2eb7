"""The Makefile's install on a GPU node: mmcv is built with CUDA hidden (CPU ops only, no CUDA toolkit
needed) unless ``MMCV_CUDA=1`` asks for its kernels; ``make tensorboard`` serves outputs/runs/. Checked by
running the commands ``make -n`` prints, with the build command itself replaced by ``env``."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

import pytest

from helpers.core import paths

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


MAKE_VARIABLES = ("MMCV_CUDA", "TORCH_INDEX", "OUTPUTS", "PNEUMO_OUTPUTS_DIR", "TB_PORT")


def dry_run_environment() -> dict[str, str]:
    """This process's environment without the user's own settings of the Makefile's variables."""
    return {key: value for key, value in os.environ.items() if key not in MAKE_VARIABLES}


def dry_run(target: str, *variables: str, env: dict | None = None) -> list[str]:
    """The commands ``make -n`` prints for ``target``."""
    env = dry_run_environment() if env is None else env
    done = subprocess.run(
        [
            "make",
            "-n",
            "-B",
            "--no-print-directory",
            "-C",
            str(paths.REPO_ROOT),
            target,
            "VENV=/nonexistent/venv",
            *variables,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return done.stdout.splitlines()


def mmcv_build_environment(*variables: str) -> dict[str, str]:
    """The environment the Makefile's mmcv build command would run with (on a node where a GPU is visible
    and FORCE_CUDA=1 is set in the user's shell)."""
    (line,) = [line for line in dry_run("venv", *variables) if "mmcv==" in line]
    build = line.split("|| ", 1)[1]
    words = shlex.split(build)
    prefix = words[: next(i for i, word in enumerate(words) if word.endswith("/bin/python"))]
    assert words[len(prefix) + 1 :] == ["-m", "pip", "install", "--no-build-isolation", "mmcv==2.1.0"]
    node = {**os.environ, "CUDA_VISIBLE_DEVICES": "0", "FORCE_CUDA": "1"}
    shown = subprocess.run(
        ["sh", "-c", shlex.join([*prefix, "env"])], env=node, capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)


def test_mmcv_is_built_with_cuda_hidden_by_default():
    environment = mmcv_build_environment()
    assert environment["CUDA_VISIBLE_DEVICES"] == ""
    assert "FORCE_CUDA" not in environment
    assert environment["MMCV_WITH_OPS"] == "1"


def test_mmcv_cuda_1_builds_the_cuda_kernels():
    environment = mmcv_build_environment("MMCV_CUDA=1")
    assert environment["FORCE_CUDA"] == "1"
    assert environment["CUDA_VISIBLE_DEVICES"] == "0"
    assert environment["MMCV_WITH_OPS"] == "1"


def test_torch_index_picks_the_wheel_index():
    (torch_line,) = [
        line for line in dry_run("venv", "TORCH_INDEX=https://download.pytorch.org/whl/cu126") if "torch==" in line
    ]
    assert "--index-url https://download.pytorch.org/whl/cu126" in torch_line
    (plain,) = [line for line in dry_run("venv") if "torch==" in line]
    assert "--index-url" not in plain


def test_make_tensorboard_serves_the_runs_folder():
    command = shlex.split(dry_run("tensorboard")[-1])
    assert command[0].endswith("/bin/tensorboard") and command[command.index("--logdir") + 1] == "outputs/runs"
    moved = shlex.split(dry_run("tensorboard", env={**dry_run_environment(), "PNEUMO_OUTPUTS_DIR": "/scratch/out"})[-1])
    assert moved[moved.index("--logdir") + 1] == "/scratch/out/runs"
