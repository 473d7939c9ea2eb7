"""The tree is ruff-clean and formatted (the rules and the line length in pyproject.toml; ruff pinned in
requirements.txt), the notebooks' py twins included."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.core import paths

RUFF = Path(sys.executable).with_name("ruff")


def _ruff(*args: str) -> subprocess.CompletedProcess:
    ruff = str(RUFF) if RUFF.exists() else shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: make venv installs the pinned one (requirements.txt)")
    return subprocess.run([ruff, *args], cwd=paths.REPO_ROOT, capture_output=True, text=True)


def test_ruff_is_the_pinned_one():
    pinned = next(
        line for line in (paths.REPO_ROOT / "requirements.txt").read_text().splitlines() if line.startswith("ruff==")
    )
    assert _ruff("--version").stdout.split() == ["ruff", pinned.split("==")[1]]


def test_ruff_check_is_clean():
    result = _ruff("check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_leaves_every_file_as_it_is():
    result = _ruff("format", "--check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr
