"""The pins live in requirements.txt; environment.yml, the Makefile and the installed packages agree."""

from __future__ import annotations

import re
from importlib import metadata

import yaml

from helpers import paths


def read_pins() -> dict[str, str]:
    pins = {}
    for line in (paths.REPO_ROOT / "requirements.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def test_every_requirement_is_pinned_exactly():
    lines = [l.strip() for l in (paths.REPO_ROOT / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.+]*", l) for l in lines), lines


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


def test_makefile_installs_from_the_pins_file():
    makefile = (paths.REPO_ROOT / "Makefile").read_text()
    assert "-r requirements.txt" in makefile
    assert "$(call pin,torch)" in makefile and "$(call pin,mmcv)" in makefile
    assert "ipykernel install" in makefile


def test_ci_runs_exactly_make_test():
    lines = [l for l in (paths.REPO_ROOT / ".ci" / "run").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines[-1].strip() == "make test"
