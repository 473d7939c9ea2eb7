"""Shared fixtures: small generated datasets, a prepared copy, one tiny trained run, the real sample; and the two
lanes: every test that trains, runs a notebook, runs the pipeline or starts torchrun is marked ``slow`` here, from
what it calls and the fixtures it uses (``make test-fast`` runs the rest)."""

from __future__ import annotations

import ast
import functools
import inspect
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

from helpers.core import paths  # noqa: E402
from helpers.core.paths import DEMO_CONFIG  # noqa: E402

REAL_SAMPLE = paths.REPO_ROOT.parent / "shared" / "realdata-sample"


def random_pixel_counts(rng: np.random.Generator, n: int, pixels: int = 4096) -> np.ndarray:
    """``n`` images' pixel counts ``[tp, fp, fn, tn]``: about 30 % with pneumothorax (up to 49 pixels), part of
    it found, and false positives on about 40 %; for checking metric code against a direct computation."""
    truth = rng.integers(0, 50, n) * (rng.random(n) < 0.3)
    tp = np.minimum(truth, rng.integers(0, 50, n))
    fp = rng.integers(0, 20, n) * (rng.random(n) < 0.4)
    return np.stack([tp, fp, truth - tp, pixels - truth - fp], axis=1)


# A test is slow when it, a fixture it uses (at any depth), or a function of its module that either calls (at any
# depth) calls one of these: each trains a model, executes a notebook or runs the demo.
SLOW_CALLS = frozenset(
    {
        "run_training",
        "build_runner",
        "run_notebook",
        "sweep",
        "run_pipeline",
        "execute_notebook",
        "launch_torchrun",
        "run_demo",
    }
)
SLOW_COMMANDS = frozenset({"demo", "pipeline", "sweep"})  # `python -m helpers <command>` (a sweep --sbatch only writes)


@functools.cache
def _module_functions(module) -> dict:
    return {
        name: obj for name, obj in vars(module).items() if inspect.isfunction(obj) and obj.__module__ == module.__name__
    }


def _called_names(function) -> set[str]:
    """The names ``function`` calls (``f(...)`` and ``x.f(...)``) and the CLI commands it runs (``main(["demo"])``,
    ``[python, "-m", "helpers", "demo"]``)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            target = node.func
            names.add(target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", ""))
        if isinstance(node, ast.List):
            words = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            command = words[words.index("helpers") + 1] if "helpers" in words[:-1] else (words or [None])[0]
            if command in SLOW_COMMANDS and "--sbatch" not in words:
                names.add("run_demo")
    return names


def _is_slow(function, seen: set) -> bool:
    if function in seen:
        return False
    seen.add(function)
    called = _called_names(function)
    if called & SLOW_CALLS:
        return True
    module = inspect.getmodule(function)
    local = _module_functions(module) if module is not None else {}
    return any(_is_slow(local[name], seen) for name in called if name in local)


def pytest_collection_modifyitems(config, items):
    """Mark ``slow`` every test that trains, runs a notebook, runs the pipeline or the demo, itself or through its
    fixtures; a hand-written mark stays as it is."""
    for item in items:
        if item.get_closest_marker("slow") or not hasattr(item, "function"):
            continue
        functions = [item.function]
        for name in item.fixturenames:
            for definition in item._fixtureinfo.name2fixturedefs.get(name, ()):
                functions.append(definition.func)
        if any(_is_slow(function, set()) for function in functions):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _the_fast_lane_never_trains(request, monkeypatch):
    """In a test not marked slow, training (mmengine's Runner.train) and executing a notebook (papermill) fail the
    test: the check that the marking above missed nothing that runs in this process."""
    if not request.node.get_closest_marker("slow"):

        def refuse(*args, **kwargs):
            pytest.fail(
                f"{request.node.nodeid} trains or runs a notebook but is not marked slow: "
                "add what it calls to SLOW_CALLS in tests/conftest.py"
            )

        monkeypatch.setattr("mmengine.runner.Runner.train", refuse)
        monkeypatch.setattr("papermill.execute_notebook", refuse)
    yield


@pytest.fixture(scope="session")
def real_sample_dir() -> Path:
    """The 18 real pairs in the Kaggle layout (``../shared/realdata-sample``); skipped when absent."""
    if not (REAL_SAMPLE / paths.KAGGLE_FOLDER / "png_images").is_dir():
        pytest.skip("../shared/realdata-sample is not here (it is not part of a user's clone)")
    return REAL_SAMPLE


@pytest.fixture(scope="session")
def demo_raw_dir(tmp_path_factory) -> Path:
    """A small demo dataset (80 train + 20 test at 128x128) in the Kaggle layout; read-only for tests."""
    from helpers.data.demo_dataset import DemoSpec, generate_demo_dataset

    dest = tmp_path_factory.mktemp("demo")
    generate_demo_dataset(dest, DemoSpec(n_train=80, n_test=20, size=128, seed=0), workers=1)
    return dest


@pytest.fixture(scope="session")
def demo_prepared(demo_raw_dir, tmp_path_factory):
    """The demo dataset prepared at 64x64 (official split); a PrepareResult."""
    from helpers.data.prepare import prepare_dataset

    return prepare_dataset(
        demo_raw_dir, tmp_path_factory.mktemp("prepared"), img_size=64, split_mode="official", workers=1
    )


@pytest.fixture(scope="session")
def trained_demo_run(demo_prepared, tmp_path_factory):
    """The demo config trained briefly at 64x64 on the CPU (a TrainResult with best and last checkpoints)."""
    from helpers.modeling.train import TrainParams, run_training

    work_dir = tmp_path_factory.mktemp("runs") / "demo" / "lr0.003"
    return run_training(
        TrainParams(
            config=DEMO_CONFIG,
            prepared_root=str(demo_prepared.out_dir),
            img_size=64,
            max_iters=60,
            val_interval=30,
            work_dir=str(work_dir),
        )
    )
