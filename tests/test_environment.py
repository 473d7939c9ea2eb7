"""The pins live in requirements.txt; environment.yml, the Makefile and the installed packages agree."""

from __future__ import annotations

import os
import re
import subprocess
from importlib import metadata

import yaml

from helpers.core import paths


def read_pins() -> dict[str, str]:
    pins = {}
    for line in (paths.REPO_ROOT / "requirements.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def test_every_requirement_is_pinned_exactly():
    lines = [
        line.strip()
        for line in (paths.REPO_ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.+]*", line) for line in lines), lines


def test_environment_yml_agrees_with_requirements():
    env = yaml.safe_load((paths.REPO_ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pins = dict(p.lower().split("==") for p in pip_section)
    pins = read_pins()
    # mmcv is built from source after the environment exists (its instruction names the same pin)
    assert conda_pins == {k: v for k, v in pins.items() if k != "mmcv"}
    assert f"mmcv=={pins['mmcv']}" in (paths.REPO_ROOT / "environment.yml").read_text()


def test_installed_packages_match_the_pins():
    for name, version in read_pins().items():
        installed = metadata.version(name)
        assert installed.split("+")[0] == version, f"{name}: installed {installed}, pinned {version}"


def test_makefile_installs_the_pinned_versions(tmp_path):
    """What ``make venv`` would run (a dry run into a scratch venv): torch and mmcv at their pins first,
    then requirements.txt, the package and the kernel."""
    plan = subprocess.run(
        ["make", "-n", "-B", "venv", f"VENV={tmp_path / 'venv'}"],
        cwd=paths.REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pins = read_pins()
    commands = plan.splitlines()
    torch_at = next(
        i for i, c in enumerate(commands) if re.search(rf"install .*torch=={re.escape(pins['torch'])}\b", c)
    )
    mmcv_at = next(i for i, c in enumerate(commands) if f"mmcv=={pins['mmcv']}" in c)
    requirements_at = next(i for i, c in enumerate(commands) if "install -r requirements.txt" in c)
    assert torch_at < mmcv_at < requirements_at
    assert any("ipykernel install" in c and paths.KERNEL_NAME in c for c in commands[requirements_at:])


def test_ci_runs_make_test_from_the_repository_root(tmp_path):
    """.ci/run, started from elsewhere with a recording ``make`` first on PATH, runs ``make test`` in the repository."""
    fake = tmp_path / "make"
    fake.write_text('#!/bin/sh\necho "$PWD $*" >> "$RECORD"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "RECORD": str(tmp_path / "calls")}
    subprocess.run(["bash", str(paths.REPO_ROOT / ".ci" / "run")], cwd=tmp_path, env=env, check=True)
    assert (tmp_path / "calls").read_text().splitlines() == [f"{paths.REPO_ROOT} test"]
