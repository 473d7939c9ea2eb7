"""Shared fixtures: small generated datasets, a prepared copy, one tiny trained run, the real sample."""

from __future__ import annotations

import os
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
