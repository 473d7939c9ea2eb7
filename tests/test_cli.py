"""The command line as a user meets it: ``--help`` shows examples (that parse) and defaults on every subcommand without
importing the heavy libraries, ``--version`` says pyproject's version, the console script is the same CLI, and
``requires-python`` is what the pinned distributions themselves require."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata

import pytest
from packaging.specifiers import SpecifierSet

from helpers import __version__
from helpers.__main__ import EXAMPLES, POSTPROCESS_CHOICES, build_parser
from helpers.core import paths

PYPROJECT = tomllib.loads((paths.REPO_ROOT / "pyproject.toml").read_text())


def _subcommands() -> dict:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


def test_every_subcommand_has_examples_that_parse_and_shows_its_defaults():
    parser = build_parser()
    commands = _subcommands()
    assert set(EXAMPLES) == set(commands)
    for name, command in commands.items():
        text = command.format_help()
        assert "examples:" in text, name
        for example in EXAMPLES[name]:
            assert example in text
            words = example.split()
            assert words[:4] == ["python", "-m", "helpers", name]
            parser.parse_args(words[3:])
    assert "(default: winner)" in commands["predict"].format_help()
    assert f"(default: {paths.DEMO_DIR})" in " ".join(commands["demo-data"].format_help().split())


def test_help_imports_no_heavy_library():
    code = (
        "import sys\nfrom helpers.__main__ import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('pandas', 'sklearn', 'torch', 'cv2', 'mmseg', 'scipy') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=paths.REPO_ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_cli_postprocess_choices_are_the_schemes():
    from helpers.postprocessing.tuned import CHOICES

    assert POSTPROCESS_CHOICES == CHOICES


def test_version_is_pyprojects(capsys):
    assert __version__ == PYPROJECT["project"]["version"]
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"python -m helpers {__version__}"


def test_the_console_script_is_the_same_cli():
    assert PYPROJECT["project"]["scripts"] == {"pneumothorax": "helpers.__main__:main"}


def test_requires_python_allows_only_pythons_every_pin_supports():
    ours = SpecifierSet(PYPROJECT["project"]["requires-python"])
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==", (paths.REPO_ROOT / "requirements.txt").read_text(), re.M)
    required = {}
    for name in pins:
        try:
            spec = metadata.metadata(name).get("Requires-Python")
        except metadata.PackageNotFoundError:
            continue
        if spec:
            required[name] = SpecifierSet(spec)
    assert {"numpy", "pandas", "scikit-learn"} <= set(required), "the pins that set the floor are installed"
    allowed = [f"3.{minor}" for minor in range(8, 16) if f"3.{minor}" in ours]
    assert allowed, ours
    for version in allowed:
        refusing = sorted(name for name, spec in required.items() if version not in spec)
        assert refusing == [], f"requires-python {ours} allows Python {version}, which {refusing} do not support"
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert running in ours
