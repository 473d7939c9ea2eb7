"""The raw Kaggle layout: finding it, partial downloads, and a clear error for each bad input.

Every failing call must name the file and its problem and leave the raw folder exactly as it was.
Bad inputs are made on copies of the demo dataset (the session fixture itself is never modified).
"""

from __future__ import annotations

import csv
import hashlib
import pickle
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.data.prepare import prepare_dataset
from helpers.data.rawdata import (
    RawDataError,
    download_dataset,
    download_instructions,
    find_dataset_root,
    read_index,
    validate_dataset,
)

KAGGLE = "siim-acr-pneumothorax"
CSVS = {"train": "stage_1_train_images.csv", "test": "stage_1_test_images.csv"}


@pytest.fixture
def raw_copy(demo_raw_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the demo dataset (its parent folder, as ``data/raw`` would be)."""
    return Path(shutil.copytree(demo_raw_dir, tmp_path / "raw"))


def tree_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (folders marked as such), by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        for p in sorted(root.rglob("*"))
    }


def csv_rows(ds: Path, stage: str) -> list[dict[str, str]]:
    with open(ds / CSVS[stage], newline="") as handle:
        return list(csv.DictReader(handle))


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def pick(ds: Path, stage: str, flag: int, nth: int = 0) -> str:
    """The nth file name of a stage with the given has_pneumo flag."""
    return [r["new_filename"] for r in csv_rows(ds, stage) if r["has_pneumo"] == str(flag)][nth]


def set_csv_value(ds: Path, stage: str, name: str, column: str, value: str) -> None:
    rows = csv_rows(ds, stage)
    for row in rows:
        if row["new_filename"] == name:
            row[column] = value
    write_csv(ds / CSVS[stage], list(rows[0]), [list(r.values()) for r in rows])


# Each corruption edits the dataset folder and returns (the file the error must name, its problem).
def corrupt_png(ds: Path) -> tuple[Path, str]:
    path = ds / "png_images" / pick(ds, "train", 1)
    path.write_bytes(b"these bytes are not a PNG file\n" * 40)
    return path, "unreadable or truncated PNG"


def truncated_png(ds: Path) -> tuple[Path, str]:
    path = ds / "png_images" / pick(ds, "test", 0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, "truncated"


def mask_size_mismatch(ds: Path) -> tuple[Path, str]:
    path = ds / "png_masks" / pick(ds, "train", 1, nth=1)
    Image.open(path).resize((64, 64), Image.NEAREST).save(path)
    return path, "differs from the image"


def paint_mask(path: Path, start: int, value: int) -> None:
    """Set a 10x10 square of the mask at (start, start) to ``value``."""
    mask = np.asarray(Image.open(path)).copy()
    mask[start : start + 10, start : start + 10] = value
    Image.fromarray(mask).save(path)


def mask_value_128(ds: Path) -> tuple[Path, str]:
    path = ds / "png_masks" / pick(ds, "train", 0, nth=2)
    paint_mask(path, 40, 128)
    return path, "are not within {0, 255} or {0, 1}"


def mask_not_empty_for_negative(ds: Path) -> tuple[Path, str]:
    path = ds / "png_masks" / pick(ds, "test", 0, nth=3)
    paint_mask(path, 10, 255)
    return path, "has_pneumo is 0 in the CSV but the mask is not empty"


def csv_flag_disagrees(ds: Path) -> tuple[Path, str]:
    name = pick(ds, "train", 1, nth=2)
    set_csv_value(ds, "train", name, "has_pneumo", "0")
    return ds / "png_masks" / name, "has_pneumo is 0 in the CSV but the mask is not empty"


def image_without_mask(ds: Path) -> tuple[Path, str]:
    path = ds / "png_masks" / pick(ds, "train", 0, nth=4)
    path.unlink()
    return path, "mask is missing for this image"


def mask_without_image(ds: Path) -> tuple[Path, str]:
    name = pick(ds, "test", 1)
    (ds / "png_images" / name).unlink()
    return ds / "png_images" / name, "image is missing for this mask"


def png_in_no_csv(ds: Path) -> tuple[Path, str]:
    source = pick(ds, "train", 0)
    for folder in ("png_images", "png_masks"):
        shutil.copy(ds / folder / source, ds / folder / "500_train_0_.png")
    return ds / "png_images" / "500_train_0_.png", "PNG is not named in either CSV"


def csv_wrong_columns(ds: Path) -> tuple[Path, str]:
    rows = csv_rows(ds, "test")
    write_csv(ds / CSVS["test"], ["filename", "ImageId", "has_pneumo"], [list(r.values()) for r in rows])
    return ds / CSVS["test"], "columns are ['filename', 'ImageId', 'has_pneumo']"


def csv_missing(ds: Path) -> tuple[Path, str]:
    (ds / CSVS["train"]).unlink()
    return ds / CSVS["train"], "CSV file is missing"


def csv_flag_not_binary(ds: Path) -> tuple[Path, str]:
    set_csv_value(ds, "test", pick(ds, "test", 0), "has_pneumo", "2")
    return ds / CSVS["test"], "has_pneumo must be 0 or 1"


def csv_name_listed_twice(ds: Path) -> tuple[Path, str]:
    train, test = csv_rows(ds, "train"), csv_rows(ds, "test")
    write_csv(ds / CSVS["test"], list(test[0]), [list(r.values()) for r in test + train[:1]])
    return ds, f"file {train[0]['new_filename']} is listed more than once in the CSVs"


CORRUPTIONS: list[Callable[[Path], tuple[Path, str]]] = [
    corrupt_png,
    truncated_png,
    mask_size_mismatch,
    mask_value_128,
    mask_not_empty_for_negative,
    csv_flag_disagrees,
    image_without_mask,
    mask_without_image,
    png_in_no_csv,
    csv_wrong_columns,
    csv_missing,
    csv_flag_not_binary,
    csv_name_listed_twice,
]


def run_validate(raw: Path, tmp_path: Path) -> None:
    validate_dataset(raw, workers=1)


def run_prepare(raw: Path, tmp_path: Path) -> None:
    prepare_dataset(raw, tmp_path / "prepared", img_size=32, workers=1)


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("entry", [run_validate, run_prepare], ids=["validate", "prepare"])
def test_bad_input_names_the_file_and_leaves_raw_untouched(raw_copy, tmp_path, corrupt, entry):
    path, problem = corrupt(raw_copy / KAGGLE)
    before = tree_hashes(raw_copy)
    with pytest.raises(RawDataError) as caught:
        entry(raw_copy, tmp_path)
    assert any(str(p) == str(path) and problem in message for p, message in caught.value.problems), (
        caught.value.problems
    )
    assert f"{path}: " in str(caught.value)
    assert tree_hashes(raw_copy) == before


def test_validate_lists_every_problem_at_once(raw_copy):
    expected = [corrupt(raw_copy / KAGGLE) for corrupt in (corrupt_png, mask_value_128, mask_not_empty_for_negative)]
    with pytest.raises(RawDataError) as caught:
        validate_dataset(raw_copy, workers=1)
    found = {(str(p), m) for p, m in caught.value.problems}
    for path, problem in expected:
        assert any(p == str(path) and problem in m for p, m in found), (path, found)


def test_raw_data_error_survives_pickling():
    """Worker processes send the error to the parent pickled; it must arrive intact (not hang the pool)."""
    error = RawDataError([(Path("png_masks/1_train_1_.png"), "mask values [0, 128] are not within {0, 255} or {0, 1}")])
    copy = pickle.loads(pickle.dumps(error))
    assert copy.problems == error.problems
    assert str(copy) == str(error)


def test_partial_download_reports_the_missing_rows(raw_copy, tmp_path):
    ds = raw_copy / KAGGLE
    gone = [pick(ds, "train", 0, nth=5), pick(ds, "train", 1, nth=3), pick(ds, "test", 0, nth=1)]
    for name in gone:
        (ds / "png_images" / name).unlink()
        (ds / "png_masks" / name).unlink()
    before = tree_hashes(raw_copy)

    index = read_index(raw_copy)
    assert sorted(index.missing["name"]) == sorted(gone)
    assert len(index.pairs) == 97 and not set(gone) & set(index.pairs["name"])
    assert "3 CSV rows have no files here" in index.describe()
    assert len(validate_dataset(raw_copy, workers=1)) == 97
    result = prepare_dataset(raw_copy, tmp_path / "prepared", img_size=32, workers=1)
    assert len(result.labels) == 97
    assert result.manifest["csv_rows_without_files"] == 3

    with pytest.raises(RawDataError) as caught:
        validate_dataset(raw_copy, strict=True, workers=1)
    named = {Path(p).name for p, m in caught.value.problems if m == "listed in the CSVs but absent"}
    assert named == set(gone)
    assert tree_hashes(raw_copy) == before


def test_real_sample_is_valid_and_its_missing_rows_are_reported(real_sample_dir):
    ds = real_sample_dir / KAGGLE
    files = sorted(p.name for p in (ds / "png_images").iterdir())
    flags = {r["new_filename"]: int(r["has_pneumo"]) for stage in CSVS for r in csv_rows(ds, stage)}
    scans = validate_dataset(real_sample_dir, workers=1)
    assert sorted(scans["name"]) == files
    assert dict(zip(scans["name"], scans["has_pneumo"], strict=True)) == {n: flags[n] for n in files}
    assert ((scans["fg_pixels"] > 0) == (scans["has_pneumo"] == 1)).all()
    sizes = {Image.open(ds / "png_images" / n).size for n in files}
    assert set(zip(scans["width"], scans["height"], strict=True)) == sizes
    index = read_index(real_sample_dir)
    assert len(index.missing) == len(flags) - len(files)
    assert not set(index.missing["name"]) & set(files)


def test_find_dataset_root_accepts_the_folder_or_its_parent(demo_raw_dir):
    ds = demo_raw_dir / KAGGLE
    assert find_dataset_root(demo_raw_dir) == ds
    assert find_dataset_root(ds) == ds
    assert find_dataset_root(str(ds)) == ds


def test_find_dataset_root_elsewhere_explains_the_download(tmp_path):
    (tmp_path / "png_images").mkdir()  # half a layout is not one
    with pytest.raises(FileNotFoundError) as caught:
        find_dataset_root(tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message
    assert download_instructions() in message
    assert "https://www.kaggle.com/datasets/vbookshelf/pneumothorax-chest-xray-images-and-masks" in message
    with pytest.raises(FileNotFoundError):
        validate_dataset(tmp_path / "nothing here", workers=1)


def test_download_without_the_kaggle_command_is_a_clear_error(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: calls.append(args))
    with pytest.raises(RuntimeError) as caught:
        download_dataset(tmp_path / "dest")
    assert "`kaggle` command is not installed" in str(caught.value)
    assert download_instructions(tmp_path / "dest") in str(caught.value)
    assert calls == []


def test_download_failure_shows_kaggles_message(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/kaggle")
    monkeypatch.setattr(
        subprocess, "run", lambda args, **kwargs: subprocess.CompletedProcess(args, 1, "", "401 - Unauthorized")
    )
    with pytest.raises(RuntimeError, match="kaggle download failed: 401 - Unauthorized"):
        download_dataset(tmp_path / "dest")


def test_download_unpacks_the_archive(demo_raw_dir, tmp_path, monkeypatch):
    def fake_kaggle(args: list[str], **kwargs) -> subprocess.CompletedProcess:
        dest = Path(args[args.index("-p") + 1])
        with zipfile.ZipFile(dest / "archive.zip", "w") as archive:
            for path in (demo_raw_dir / KAGGLE).rglob("*"):
                archive.write(path, path.relative_to(demo_raw_dir))
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/kaggle")
    monkeypatch.setattr(subprocess, "run", fake_kaggle)
    root = download_dataset(tmp_path / "dest")
    assert root == tmp_path / "dest" / KAGGLE
    assert list((tmp_path / "dest").glob("*.zip")) == []
    assert len(validate_dataset(root, workers=1)) == 100


def test_download_is_skipped_when_the_data_is_there(demo_raw_dir, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: pytest.fail("looked for the kaggle command"))
    assert download_dataset(demo_raw_dir) == demo_raw_dir / KAGGLE


def test_no_kaggle_download_but_demo_data_reads_the_demo_and_says_where_real_data_goes(
    demo_raw_dir, tmp_path, monkeypatch
):
    """What 01 and 02 do when opened with their defaults (raw_root None) after `make demo`."""
    from helpers.core import paths
    from helpers.data.rawdata import choose_raw_root

    empty_raw = tmp_path / "raw"
    empty_raw.mkdir()
    monkeypatch.setattr(paths, "RAW_DIR", empty_raw)
    monkeypatch.setattr(paths, "DEMO_DIR", demo_raw_dir)
    monkeypatch.setattr(paths, "DEMO_PREPARED_DIR", demo_raw_dir / "prepared")
    chosen = choose_raw_root(None)
    assert chosen.root == demo_raw_dir and chosen.prepared_parent == demo_raw_dir / "prepared"
    assert str(demo_raw_dir) in chosen.note and str(empty_raw / paths.KAGGLE_FOLDER) in chosen.note
    given = choose_raw_root(empty_raw)  # asked for explicitly (as the pipeline does): never replaced
    assert given.root == empty_raw and given.note is None
    monkeypatch.setattr(paths, "RAW_DIR", demo_raw_dir)  # a download present: used, nothing said
    assert choose_raw_root(None).note is None and choose_raw_root(None).root == demo_raw_dir
