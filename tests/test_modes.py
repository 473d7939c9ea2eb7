"""Files and folders the project writes get the mode the umask gives, as ``open()`` and ``mkdir`` give it
(0644 and 0755 under umask 022), not mkstemp's 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers.core import paths
from helpers.core.fileio import atomic_write_bytes, atomic_write_json


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, set[str]]:
    """{'files': modes, 'dirs': modes} (octal strings) of everything under ``root``."""
    found: dict[str, set[str]] = {"files": set(), "dirs": set()}
    for path in root.rglob("*"):
        kind = "dirs" if path.is_dir() else "files"
        found[kind].add(oct(stat.S_IMODE(path.lstat().st_mode)))
    return found


@pytest.mark.parametrize(("mask", "file_mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_take_the_umask_mode(tmp_path, mask, file_mode):
    with umask(mask):
        atomic_write_bytes(tmp_path / "a" / "b.bin", b"x")
        atomic_write_json(tmp_path / "a" / "c.json", {"k": 1})
        with open(tmp_path / "plain.txt", "w") as handle:  # what open() gives, for comparison
            handle.write("x")
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == file_mode
    for name in ("b.bin", "c.json"):
        assert stat.S_IMODE((tmp_path / "a" / name).stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o777 & ~mask
    assert [p.name for p in (tmp_path / "a").iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_a_small_pipeline_under_umask_022_writes_0644_files_and_0755_folders(demo_raw_dir, tmp_path):
    """02 (prepare), 03 (train, with checkpoints and logs), 04 (evaluate, comparison), predict and the index,
    on the demo data at 64x64 for two iterations: walk data/ and outputs/."""
    from helpers.data.prepare import prepare_dataset
    from helpers.evaluation import comparison_table, write_comparison
    from helpers.modeling.train import TrainParams, run_training
    from helpers.predict import predict_images
    from helpers.workflow.evaluate_runs import evaluate_run_folders
    from helpers.workflow.index import write_index

    data, outputs = tmp_path / "data", tmp_path / "outputs"
    with umask(0o022):
        prepared = prepare_dataset(demo_raw_dir, data / "prepared", img_size=64, split_mode="official", workers=1)
        run = run_training(
            TrainParams(
                config=paths.DEMO_CONFIG,
                prepared_root=str(prepared.out_dir),
                img_size=64,
                max_iters=2,
                val_interval=2,
                work_dir=str(outputs / "runs" / "demo" / "lr0.003"),
            )
        )
        results, failures = evaluate_run_folders(
            [run.work_dir], split="test", outputs=outputs, postprocess="none", n_boot=10
        )
        assert results and not failures
        write_comparison(comparison_table(results, failures), outputs / "eval")
        images = sorted((prepared.out_dir / "images" / "test").glob("*.png"))[:2]
        predict_images(run.work_dir, images, outputs / "predictions")
        write_index(outputs)
    for root in (data, outputs):
        found = modes(root)
        assert found["files"] == {"0o644"}, root
        assert found["dirs"] == {"0o755"}, root
