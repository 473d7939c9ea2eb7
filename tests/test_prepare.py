"""02_prepare: splits, {0, 1} masks at the requested size, split files, idempotence, folds, duplicates.

Expectations are computed from the raw folder (csv module, PIL, sklearn), not from prepare's own tables.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from sklearn.model_selection import train_test_split

from helpers.data.prepare import assign_splits, prepare_dataset
from helpers.data.prepared_folder import prepared_pairs
from helpers.data.rawdata import read_index, validate_dataset

KAGGLE = "siim-acr-pneumothorax"
CSVS = {"train": "stage_1_train_images.csv", "test": "stage_1_test_images.csv"}
SPLITS = ("train", "val", "test")


def raw_rows(root: Path) -> dict[str, tuple[str, int]]:
    """``stem -> (stage, has_pneumo)`` for the CSV rows whose image and mask are both present."""
    ds = root / KAGGLE
    present = {p.name for p in (ds / "png_images").iterdir()} & {p.name for p in (ds / "png_masks").iterdir()}
    rows = {}
    for stage, filename in CSVS.items():
        with open(ds / filename, newline="") as handle:
            for row in csv.DictReader(handle):
                if row["new_filename"] in present:
                    rows[row["new_filename"].removesuffix(".png")] = (stage, int(row["has_pneumo"]))
    return rows


def split_files(out_dir: Path, kind: str = "images") -> dict[str, set[str]]:
    """The stems written under ``images/`` (or ``masks/``) per split."""
    return {s: {p.stem for p in (out_dir / kind / s).glob("*.png")} for s in SPLITS}


def split_list(out_dir: Path, filename: str) -> list[str]:
    return (out_dir / filename).read_text().splitlines()


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """(mtime, bytes) of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def check_layout(out_dir: Path, raw_root: Path, img_size: int) -> None:
    """Every pair written once, at ``img_size``, masks {0, 1} agreeing with the flag, split files exact."""
    rows = raw_rows(raw_root)
    images, masks = split_files(out_dir), split_files(out_dir, "masks")
    assert images == masks
    for a in SPLITS:
        for b in SPLITS:
            assert a == b or not images[a] & images[b], (a, b)
    assert set().union(*images.values()) == set(rows)
    values = set()
    for split, stems in images.items():
        assert sorted(split_list(out_dir, f"{split}.txt")) == sorted(f"{split}/{s}" for s in stems)
        for stem in stems:
            image = Image.open(out_dir / "images" / split / f"{stem}.png")
            mask_image = Image.open(out_dir / "masks" / split / f"{stem}.png")
            assert (image.size, mask_image.size, image.mode, mask_image.mode) == ((img_size, img_size),) * 2 + (
                "L",
                "L",
            )
            mask = np.asarray(mask_image)
            values |= set(np.unique(mask).tolist())
            assert mask.any() == bool(rows[stem][1]), stem
    assert values == {0, 1}


def test_official_split_sizes_and_positive_rates(demo_prepared, demo_raw_dir):
    rows = raw_rows(demo_raw_dir)
    files = split_files(demo_prepared.out_dir)
    test_stage = {s for s, (stage, _) in rows.items() if stage == "test"}
    assert files["test"] == test_stage
    n_train_stage = len(rows) - len(test_stage)
    assert len(files["train"]) + len(files["val"]) == n_train_stage
    assert abs(len(files["val"]) - 0.2 * n_train_stage) <= 1
    for split, stems in files.items():
        stage = "test" if split == "test" else "train"
        stage_rate = np.mean([flag for row_stage, flag in rows.values() if row_stage == stage])
        rate = np.mean([rows[s][1] for s in stems])
        assert abs(rate - stage_rate) <= 1 / len(stems), (split, rate, stage_rate)


def test_prepared_files_are_exact(demo_prepared, demo_raw_dir):
    out_dir = demo_prepared.out_dir
    check_layout(out_dir, demo_raw_dir, 64)
    ds = demo_raw_dir / KAGGLE
    for split, stems in split_files(out_dir).items():
        for stem in sorted(stems)[:5]:
            raw_image = cv2.imread(str(ds / "png_images" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE)
            raw_mask = cv2.imread(str(ds / "png_masks" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE)
            expected_image = cv2.resize(raw_image, (64, 64), interpolation=cv2.INTER_AREA)
            expected_mask = cv2.resize((raw_mask == 255).astype(np.uint8), (64, 64), interpolation=cv2.INTER_NEAREST)
            np.testing.assert_array_equal(
                cv2.imread(str(out_dir / "images" / split / f"{stem}.png"), cv2.IMREAD_UNCHANGED), expected_image
            )
            np.testing.assert_array_equal(
                cv2.imread(str(out_dir / "masks" / split / f"{stem}.png"), cv2.IMREAD_UNCHANGED), expected_mask
            )


def test_prepared_pairs_name_the_written_files_and_their_patients(demo_prepared):
    pairs = prepared_pairs(demo_prepared.out_dir)
    labels = demo_prepared.labels
    assert pairs["name"].tolist() == labels["name"].tolist()
    assert pairs["patient"].tolist() == labels["patient"].astype(str).tolist()
    for row in pairs.itertuples():
        assert Path(row.image_path) == demo_prepared.out_dir / "images" / row.split / f"{row.name}.png"
        assert Path(row.image_path).is_file() and Path(row.mask_path).is_file()


def test_rerun_writes_nothing_and_resumes_a_missing_file(demo_raw_dir, tmp_path):
    first = prepare_dataset(demo_raw_dir, tmp_path, img_size=32, workers=1)
    assert first.written == len(raw_rows(demo_raw_dir))
    before = snapshot(first.out_dir)
    again = prepare_dataset(demo_raw_dir, tmp_path, img_size=32, workers=1)
    assert (again.written, again.removed, again.skipped) == (0, 0, first.written)
    assert snapshot(first.out_dir) == before

    lost = next((first.out_dir / "images" / "val").glob("*.png"))
    lost.unlink()
    resumed = prepare_dataset(demo_raw_dir, tmp_path, img_size=32, workers=1)
    assert resumed.written == 1
    assert lost.read_bytes() == before[str(lost.relative_to(first.out_dir))][1]


def test_seed_split_is_the_seed_projects_80_20(demo_raw_dir, tmp_path):
    result = prepare_dataset(demo_raw_dir, tmp_path, img_size=32, split_mode="seed", workers=1)
    assert result.out_dir == tmp_path / "seed-32"
    names = sorted(os.listdir(demo_raw_dir / KAGGLE / "png_images"))
    train, val = train_test_split(names, test_size=0.2, random_state=0)
    files = split_files(result.out_dir)
    assert files["val"] == {n.removesuffix(".png") for n in val}
    assert files["train"] == {n.removesuffix(".png") for n in train}
    assert (len(files["train"]), len(files["val"]), files["test"]) == (80, 20, set())
    assert split_list(result.out_dir, "test.txt") == []
    check_layout(result.out_dir, demo_raw_dir, 32)


def test_folds_are_a_stratified_k_fold_with_fold_files(demo_raw_dir, tmp_path):
    folds = 4
    result = prepare_dataset(demo_raw_dir, tmp_path, img_size=32, split_mode="official", folds=folds, workers=1)
    rows = raw_rows(demo_raw_dir)
    files = split_files(result.out_dir)
    pool = {f"{split}/{s}" for split in ("train", "val") for s in files[split]}
    held_out = []
    for k in range(folds):
        val = split_list(result.out_dir, f"fold{k}_val.txt")
        train = split_list(result.out_dir, f"fold{k}_train.txt")
        assert len(set(val)) == len(val) and len(set(train)) == len(train)
        assert set(train) == pool - set(val)
        held_out.append(set(val))
    assert not (result.out_dir / f"fold{folds}_val.txt").exists()
    assert sorted(e for fold in held_out for e in fold) == sorted(pool)
    sizes = [len(v) for v in held_out]
    positives = [sum(rows[e.split("/", 1)[1]][1] for e in v) for v in held_out]
    largest_patient = result.labels.groupby("patient").size().max()  # folds are grouped by patient
    assert max(sizes) - min(sizes) <= largest_patient
    assert max(positives) - min(positives) <= 2
    labels = result.labels.set_index("name")
    assert result.labels[result.labels["split"] != "test"].groupby("patient")["fold"].nunique().max() == 1
    for k, fold in enumerate(held_out):
        assert {labels.loc[e.split("/", 1)[1], "fold"] for e in fold} == {k}
    assert set(labels.loc[labels["split"] == "test", "fold"]) == {-1}


def test_dropping_folds_leaves_no_stale_fold_file(demo_raw_dir, tmp_path):
    prepare_dataset(demo_raw_dir, tmp_path, img_size=32, folds=3, workers=1)
    result = prepare_dataset(demo_raw_dir, tmp_path, img_size=32, folds=0, workers=1)
    assert sorted(p.name for p in result.out_dir.glob("*.txt")) == ["test.txt", "train.txt", "val.txt"]


def test_changing_val_fraction_moves_files_and_leaves_nothing_stale(demo_raw_dir, tmp_path):
    first = prepare_dataset(demo_raw_dir, tmp_path, img_size=32, split_mode="official", val_fraction=0.2, workers=1)
    before = dict(zip(first.labels["name"], first.labels["split"], strict=True))
    second = prepare_dataset(demo_raw_dir, tmp_path, img_size=32, split_mode="official", val_fraction=0.3, workers=1)
    after = dict(zip(second.labels["name"], second.labels["split"], strict=True))
    moved = [n for n in after if after[n] != before[n]]
    assert moved
    assert second.written == len(moved)
    assert second.removed == 2 * len(moved)
    n_train_stage = sum(stage == "train" for stage, _ in raw_rows(demo_raw_dir).values())
    largest_patient = second.labels.groupby("patient").size().max()  # val is drawn by patient
    assert abs(len(split_files(second.out_dir)["val"]) - 0.3 * n_train_stage) <= largest_patient
    expected = {f"{kind}/{split}/{name}.png" for name, split in after.items() for kind in ("images", "masks")}
    on_disk = {str(p.relative_to(second.out_dir)) for p in second.out_dir.rglob("*") if p.is_file()}
    assert {p for p in on_disk if "/" in p} == expected
    assert {p for p in on_disk if "/" not in p} == {"train.txt", "val.txt", "test.txt", "labels.csv", "manifest.json"}
    check_layout(second.out_dir, demo_raw_dir, 32)


def test_duplicate_images_across_splits_are_reported(demo_raw_dir, tmp_path):
    raw = Path(shutil.copytree(demo_raw_dir, tmp_path / "raw"))
    rows = raw_rows(raw)
    source = next(s for s, (stage, flag) in rows.items() if stage == "train" and flag == 1)
    target = next(s for s, (stage, flag) in rows.items() if stage == "test" and flag == 1)
    for folder in ("png_images", "png_masks"):
        shutil.copy(raw / KAGGLE / folder / f"{source}.png", raw / KAGGLE / folder / f"{target}.png")
    validate_dataset(raw, workers=1)  # still a consistent dataset: same pixels, same mask, same flag
    result = prepare_dataset(raw, tmp_path / "prepared", img_size=32, split_mode="official", workers=1)
    source_split = next(split for split, stems in split_files(result.out_dir).items() if source in stems)
    assert result.duplicates == [sorted([f"{source_split}/{source}", f"test/{target}"])]
    assert result.manifest["duplicates_across_splits"] == result.duplicates


def test_real_sample_prepares_into_the_official_split(real_sample_dir, tmp_path):
    result = prepare_dataset(real_sample_dir, tmp_path, img_size=64, split_mode="official", workers=1)
    rows = raw_rows(real_sample_dir)
    files = split_files(result.out_dir)
    assert files["test"] == {s for s, (stage, _) in rows.items() if stage == "test"}
    n_train_stage = sum(stage == "train" for stage, _ in rows.values())
    assert len(files["train"]) + len(files["val"]) == n_train_stage
    assert abs(len(files["val"]) - 0.2 * n_train_stage) < 1
    check_layout(result.out_dir, real_sample_dir, 64)
    assert result.manifest["csv_rows_without_files"] == len(read_index(real_sample_dir).missing)


@pytest.mark.parametrize("kwargs", [dict(split_mode="random"), dict(val_fraction=0.0), dict(val_fraction=1.0)])
def test_assign_splits_rejects_bad_parameters(demo_raw_dir, kwargs):
    with pytest.raises(ValueError):
        assign_splits(read_index(demo_raw_dir).pairs, **kwargs)
