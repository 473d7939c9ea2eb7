"""01_explore's statistics against an independent computation from the decoded PNGs."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from helpers.data.explore import STATS_FILE, explore_dataset
from helpers.data.rawdata import RawDataError, read_index

KAGGLE = "siim-acr-pneumothorax"
CSVS = {"train": "stage_1_train_images.csv", "test": "stage_1_test_images.csv"}
EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def independent_scan(root: Path) -> tuple[list[dict], int]:
    """Per present pair, decoded with PIL: stage, flag, size, modes, foreground pixels, 8-connected regions.

    Also returns the number of CSV rows.
    """
    ds = root / KAGGLE
    present = {p.name for p in (ds / "png_images").iterdir()} & {p.name for p in (ds / "png_masks").iterdir()}
    pairs, csv_rows = [], 0
    for stage, filename in CSVS.items():
        with open(ds / filename, newline="") as handle:
            for row in csv.DictReader(handle):
                csv_rows += 1
                if row["new_filename"] not in present:
                    continue
                image = Image.open(ds / "png_images" / row["new_filename"])
                mask_image = Image.open(ds / "png_masks" / row["new_filename"])
                mask = np.asarray(mask_image) > 0
                _, regions = ndimage.label(mask, structure=EIGHT_CONNECTED)
                pairs.append(
                    {
                        "stage": stage,
                        "flag": int(row["has_pneumo"]),
                        "width": image.width,
                        "height": image.height,
                        "modes": (image.mode, mask_image.mode),
                        "fg": int(mask.sum()),
                        "regions": regions,
                    }
                )
    return pairs, csv_rows


@pytest.fixture(params=["demo_raw_dir", "real_sample_dir"])
def dataset_dir(request) -> Path:
    return request.getfixturevalue(request.param)


def test_explore_statistics_equal_an_independent_computation(dataset_dir, tmp_path):
    pairs, csv_rows = independent_scan(dataset_dir)
    result = explore_dataset(dataset_dir, workers=1, out_dir=tmp_path)

    total = sum(p["width"] * p["height"] for p in pairs)
    fg_total = sum(p["fg"] for p in pairs)
    classes = result.class_table.set_index("class name")
    assert classes.loc["pneumothorax", "pixel percentage"] == pytest.approx(100 * fg_total / total)
    assert classes.loc["background", "pixel percentage"] == pytest.approx(100 * (total - fg_total) / total)
    assert classes.loc["pneumothorax", "num. images in this category"] == sum(p["fg"] > 0 for p in pairs)
    assert classes.loc["background", "num. images in this category"] == sum(
        p["fg"] < p["width"] * p["height"] for p in pairs
    )

    splits = result.split_table.set_index("split")
    for stage in ("train", "test", "all"):
        chosen = [p for p in pairs if stage in (p["stage"], "all")]
        assert splits.loc[stage, "images"] == len(chosen)
        assert splits.loc[stage, "positive"] == sum(p["flag"] for p in chosen)
        assert splits.loc[stage, "positive rate"] == pytest.approx(np.mean([p["flag"] for p in chosen]))

    fractions = np.array([p["fg"] / (p["width"] * p["height"]) for p in pairs if p["fg"]])
    area = result.area_summary.set_index("statistic")["area fraction"]
    assert area["min"] == pytest.approx(fractions.min())
    assert area["median"] == pytest.approx(np.median(fractions))
    assert area["p95"] == pytest.approx(np.quantile(fractions, 0.95))
    assert area["max"] == pytest.approx(fractions.max())

    components = dict(zip(result.components_table["components"], result.components_table["masks"], strict=True))
    assert components == dict(Counter(p["regions"] for p in pairs if p["fg"]))
    sizes = {(r.width, r.height, r.image_mode, r.mask_mode): r.images for r in result.sizes_table.itertuples()}
    assert sizes == dict(Counter((p["width"], p["height"], *p["modes"]) for p in pairs))

    assert result.stats_path == tmp_path / STATS_FILE
    stats = json.loads(result.stats_path.read_text())
    assert stats["images_scanned"] == stats["pairs_present"] == len(pairs)
    assert stats["csv_rows_without_files"] == csv_rows - len(pairs)
    saved = {row["class name"]: row for row in stats["class_table"]}
    assert saved["pneumothorax"]["pixels"] == fg_total
    assert saved["pneumothorax"]["pixel percentage"] == pytest.approx(100 * fg_total / total)
    assert {row["split"]: row["images"] for row in stats["split_table"]}["all"] == len(pairs)
    assert {row["components"]: row["masks"] for row in stats["components"]} == components


def test_max_images_caps_with_a_random_sample(demo_raw_dir, tmp_path):
    ordered = list(read_index(demo_raw_dir).pairs["name"])
    first = explore_dataset(demo_raw_dir, max_images=10, seed=0, workers=1, out_dir=tmp_path)
    again = explore_dataset(demo_raw_dir, max_images=10, seed=0, workers=1)
    other = explore_dataset(demo_raw_dir, max_images=10, seed=1, workers=1)
    names = set(first.scans["name"])
    assert len(first.scans) == 10 and names <= set(ordered)
    assert names == set(again.scans["name"])
    assert names != set(other.scans["name"])
    assert names != set(ordered[:10])
    assert first.class_table["num. images in this category"].max() <= 10
    stats = json.loads((tmp_path / STATS_FILE).read_text())
    assert (stats["images_scanned"], stats["max_images"], stats["pairs_present"]) == (10, 10, len(ordered))


def test_stages_select_the_official_split(demo_raw_dir):
    result = explore_dataset(demo_raw_dir, stages=["test"], workers=1)
    assert set(result.scans["stage"]) == {"test"}
    assert len(result.scans) == sum(1 for _ in open(demo_raw_dir / KAGGLE / CSVS["test"])) - 1
    with pytest.raises(ValueError, match="unknown split"):
        explore_dataset(demo_raw_dir, stages=["val"], workers=1)


def test_explore_names_a_bad_mask(demo_raw_dir, tmp_path):
    raw = Path(shutil.copytree(demo_raw_dir, tmp_path / "raw"))
    path = next((raw / KAGGLE / "png_masks").iterdir())
    mask = np.asarray(Image.open(path)).copy()
    mask[0, 0] = 7
    Image.fromarray(mask).save(path)
    with pytest.raises(RawDataError, match="are not within") as caught:
        explore_dataset(raw, workers=1, out_dir=tmp_path / "out")
    assert str(path) in str(caught.value)
    assert not (tmp_path / "out" / STATS_FILE).exists()
