"""The generated demo dataset: Kaggle layout and formats, valid, deterministic from its seed."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from helpers.data.demo_dataset import DemoSpec, draw_radiograph, generate_demo_dataset
from helpers.data.rawdata import validate_dataset

KAGGLE = "siim-acr-pneumothorax"
NAME = re.compile(r"^(\d+)_(train|test)_([01])_\.png$")
CSVS = {"train": "stage_1_train_images.csv", "test": "stage_1_test_images.csv"}


def read_csv_rows(root: Path) -> dict[str, list[dict[str, str]]]:
    """Both CSVs with the csv module, per stage."""
    rows = {}
    for stage, filename in CSVS.items():
        with open(root / KAGGLE / filename, newline="") as handle:
            reader = csv.DictReader(handle)
            assert reader.fieldnames == ["new_filename", "ImageId", "has_pneumo"]
            rows[stage] = list(reader)
    return rows


def folder_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# Run in its own process (a deadlock must fail the test, not hang the suite): generate in-process (the
# parent uses OpenCV), then with worker processes, repeatedly, and compare the bytes.
WORKERS_SCRIPT = """
import sys
from pathlib import Path

from helpers.data.demo_dataset import DemoSpec, generate_demo_dataset


def tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


if __name__ == "__main__":
    base = Path(sys.argv[1])
    for seed in range(20):
        spec = DemoSpec(n_train=4, n_test=2, size=64, seed=seed)
        one = generate_demo_dataset(base / f"one{seed}", spec, workers=1)
        two = generate_demo_dataset(base / f"two{seed}", spec, workers=2)
        assert tree(one) == tree(two), f"seed {seed}: workers=2 wrote different bytes"
"""


def test_demo_passes_validation(demo_raw_dir):
    scans = validate_dataset(demo_raw_dir, workers=1)
    assert len(scans) == 100
    assert (scans["problems"].map(len) == 0).all()


def test_demo_has_the_kaggle_names_formats_and_positive_rate(demo_raw_dir):
    rows = read_csv_rows(demo_raw_dir)
    assert [len(rows["train"]), len(rows["test"])] == [80, 20]
    images = sorted(p.name for p in (demo_raw_dir / KAGGLE / "png_images").iterdir())
    masks = sorted(p.name for p in (demo_raw_dir / KAGGLE / "png_masks").iterdir())
    assert images == masks
    assert sorted(r["new_filename"] for stage in rows.values() for r in stage) == images
    for stage, stage_rows in rows.items():
        indices = []
        for row in stage_rows:
            match = NAME.match(row["new_filename"])
            assert match, row["new_filename"]
            assert match.group(2) == stage
            assert match.group(3) == row["has_pneumo"]
            indices.append(int(match.group(1)))
            image = Image.open(demo_raw_dir / KAGGLE / "png_images" / row["new_filename"])
            mask = Image.open(demo_raw_dir / KAGGLE / "png_masks" / row["new_filename"])
            assert (image.mode, mask.mode, image.size, mask.size) == ("L", "L", (128, 128), (128, 128))
            values = set(np.unique(np.asarray(mask)).tolist())
            assert values <= {0, 255}
            assert (255 in values) == (row["has_pneumo"] == "1")
        assert sorted(indices) == list(range(len(stage_rows)))
        rate = np.mean([r["has_pneumo"] == "1" for r in stage_rows])
        assert abs(rate - 0.22) < 0.03, (stage, rate)
    ids = [r["ImageId"] for stage in rows.values() for r in stage]
    assert len(set(ids)) == len(ids)


def test_demo_is_deterministic_from_its_seed(tmp_path):
    spec = DemoSpec(n_train=6, n_test=3, size=64, seed=3)
    first = generate_demo_dataset(tmp_path / "a", spec, workers=1)
    second = generate_demo_dataset(tmp_path / "b", spec, workers=1)
    other = generate_demo_dataset(tmp_path / "c", DemoSpec(n_train=6, n_test=3, size=64, seed=4), workers=1)
    assert folder_bytes(first) == folder_bytes(second)
    differing = {k for k, v in folder_bytes(other).items() if folder_bytes(first).get(k) != v}
    assert any(k.startswith("png_images") for k in differing)


def test_worker_processes_write_the_same_bytes_and_do_not_deadlock(tmp_path):
    """OpenCV's thread pool does not survive fork() (opencv/opencv#5150): a forked worker can hang."""
    script = tmp_path / "workers.py"
    script.write_text(WORKERS_SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = process.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(
            "generate_demo_dataset(workers=2) hung after in-process OpenCV use: the worker processes "
            "were forked with OpenCV's thread pool state (opencv/opencv#5150)"
        )
    assert process.returncode == 0, stderr[-3000:]


def test_demo_is_kept_when_the_spec_is_unchanged_and_rebuilt_when_it_changes(tmp_path):
    spec = DemoSpec(n_train=4, n_test=2, size=32, seed=1)
    root = generate_demo_dataset(tmp_path, spec, workers=1)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    assert generate_demo_dataset(tmp_path, spec, workers=1) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.png")} == before
    generate_demo_dataset(tmp_path, DemoSpec(n_train=5, n_test=2, size=32, seed=1), workers=1)
    assert len(list((root / "png_images").iterdir())) == 7
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".demo-")] == []


def test_demo_without_a_test_stage_is_valid(tmp_path):
    generate_demo_dataset(tmp_path, DemoSpec(n_train=5, n_test=0, size=32), workers=1)
    assert read_csv_rows(tmp_path)["test"] == []
    assert len(validate_dataset(tmp_path, workers=1)) == 5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_radiograph_lesion_is_one_dark_region_only_when_positive(seed):
    image, mask = draw_radiograph(96, True, np.random.default_rng(seed))
    _, empty = draw_radiograph(96, False, np.random.default_rng(seed))
    assert image.dtype == np.uint8 and image.shape == mask.shape == (96, 96)
    assert not empty.any()
    assert set(np.unique(mask).tolist()) == {0, 255}
    _, regions = ndimage.label(mask > 0, structure=np.ones((3, 3)))
    assert regions == 1
    assert image[mask > 0].mean() < image[mask == 0].mean()
