"""Evaluation's memory does not grow with the number of images beyond the per-image rows it returns.

``evaluate_run`` (tuning on val included) on subsets of one prepared split at 256x256, traced with ``tracemalloc``
(numpy reports its arrays to it), in batches of 2 (each split two batches or more at both sizes): the peak may grow
by per-image statistics (counts, histograms, table rows), never by per-pixel data. Keeping one byte a pixel of each
image (as the probabilities held in memory did) grows it by 64 KB an image here; the bound is a quarter of that.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from helpers.workflow.evaluate_runs import evaluate_run

SIZE = 256


@pytest.fixture(scope="module")
def prepared_256(tmp_path_factory):
    """Generated pairs prepared at 256x256 (official split: 32 test, 8 val)."""
    from helpers.data.demo_dataset import DemoSpec, generate_demo_dataset
    from helpers.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("memory")
    raw = generate_demo_dataset(root / "raw", DemoSpec(n_train=40, n_test=32, size=SIZE, seed=1), workers=1)
    return prepare_dataset(raw, root / "prepared", img_size=SIZE, split_mode="official", workers=1).out_dir


def _subset(prepared: Path, dest: Path, n_val: int, n_test: int) -> Path:
    """``prepared`` with only the first images of val and test (everything else linked)."""
    dest.mkdir()
    for entry in prepared.iterdir():
        if entry.name not in ("val.txt", "test.txt"):
            (dest / entry.name).symlink_to(entry)
    for split, n in (("val", n_val), ("test", n_test)):
        lines = (prepared / f"{split}.txt").read_text().split()
        assert len(lines) >= n
        (dest / f"{split}.txt").write_text("\n".join(lines[:n]) + "\n")
    return dest


def _traced_peak(run: Path, prepared: Path, out_dir: Path):
    gc.collect()
    tracemalloc.start()
    try:
        result = evaluate_run(run, prepared_root=prepared, out_dir=out_dir, batch_size=2, n_boot=10, device="cpu")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, result


@pytest.mark.slow
def test_evaluation_peak_memory_does_not_grow_per_pixel_with_the_images(trained_demo_run, prepared_256, tmp_path):
    small = _subset(prepared_256, tmp_path / "small", n_val=4, n_test=4)
    large = _subset(prepared_256, tmp_path / "large", n_val=8, n_test=32)
    evaluate_run(
        trained_demo_run.work_dir,
        prepared_root=small,
        out_dir=tmp_path / "warm-up",
        batch_size=2,
        n_boot=10,
        device="cpu",
    )  # imports and caches, once, untraced
    peak_small, result_small = _traced_peak(trained_demo_run.work_dir, small, tmp_path / "eval-small")
    peak_large, result_large = _traced_peak(trained_demo_run.work_dir, large, tmp_path / "eval-large")

    assert result_large.metrics["image_shape"] == [SIZE, SIZE]
    assert len(result_large.per_image) == 32 and result_large.metrics["postprocess"]["val_images"] == 8
    added_images = (32 + 8) - (4 + 4)
    returned = (
        result_large.per_image.memory_usage(deep=True).sum() - result_small.per_image.memory_usage(deep=True).sum()
    )
    bound = returned + added_images * SIZE * SIZE // 4
    growth = peak_large - peak_small
    assert growth <= bound, (
        f"peak grew by {growth / added_images:.0f} B an image "
        f"(bound {bound / added_images:.0f}; one byte a pixel is {SIZE * SIZE})"
    )
    # what it wrote is still every image's: the probabilities of the evaluated split, at full size
    probs = np.load(result_large.probs_path, mmap_mode="r")
    assert probs.shape == (32, SIZE, SIZE) and probs.dtype == np.uint8


def test_scratch_of_a_dead_evaluation_is_removed_and_others_kept(tmp_path):
    import socket
    import subprocess

    from helpers.core import run_folders
    from helpers.core.fileio import remove_dead_scratch

    finished = subprocess.Popen(["true"])
    finished.wait()  # its pid now names no process
    host = socket.gethostname()
    dead = tmp_path / f"{run_folders.SCRATCH_PREFIX}{host}-{finished.pid}-abc_12xy"
    alive = tmp_path / f"{run_folders.SCRATCH_PREFIX}{host}-{os.getpid()}-k2j4h6g8"
    elsewhere = tmp_path / f"{run_folders.SCRATCH_PREFIX}other-node-{finished.pid}-q1w2e3r4"
    unnamed = tmp_path / f"{run_folders.SCRATCH_PREFIX}x8y7z6w5"  # an older run's name: its process is unknown
    for folder in (dead, alive, elsewhere, unnamed):
        (folder / "val").mkdir(parents=True)
        (folder / "val" / "probs.npy").write_bytes(b"\0" * 1024)

    assert remove_dead_scratch(tmp_path, run_folders.SCRATCH_PREFIX) == [dead]
    assert not dead.exists()
    assert alive.is_dir() and elsewhere.is_dir() and unnamed.is_dir()
