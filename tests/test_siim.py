"""convert-siim: a small SIIM-ACR release built from the real sample (DICOM + RLE) -> the Kaggle layout, pixel for
pixel."""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from helpers.core import paths
from helpers.data.rawdata import CSV_FILES, find_dataset_root
from tests.dicom_files import dataset, generated_gray, write

JPEG_QUALITY = 95


def own_siim_rle(mask: np.ndarray) -> str:
    """The release's relative RLE, written pixel by pixel (independent of helpers.data.rle)."""
    flat, numbers, position, previous_end = (mask > 0).T.reshape(-1), [], 0, 0
    while position < len(flat):
        if flat[position]:
            start = position
            while position < len(flat) and flat[position]:
                position += 1
            numbers += [start - previous_end, position - start]
            previous_end = position
        else:
            position += 1
    return " ".join(map(str, numbers)) if numbers else "-1"


def jpeg_baseline_dataset(gray: np.ndarray, **elements):
    """A DICOM holding ``gray`` as JPEG Baseline (Pillow's encoder), as the SIIM release stores its images."""
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    ds = dataset(gray, "MONOCHROME2", 8, **elements)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    return ds


def build_release(sample_root: Path, dest: Path) -> tuple[Path, pd.DataFrame]:
    """The sample as the SIIM release: DICOMs under study/series folders (every third uncompressed, the rest
    JPEG Baseline), ``train-rle.csv`` (header with a leading space, a space before each value, positive masks
    split into two rows) for the train images and a second CSV (BOM) for the test images and one train image
    again; plus one DICOM without a row, one row without a DICOM and one truncated DICOM with a row."""
    kaggle = pd.concat([pd.read_csv(sample_root / f).assign(stage=s) for s, f in CSV_FILES.items()])
    names = sorted(p.name for p in (sample_root / "png_images").glob("*.png"))
    sample = kaggle[kaggle["new_filename"].isin(names)].reset_index(drop=True)
    release = dest / "siim"
    rows = {"train": [], "test": []}
    for number, row in enumerate(sample.itertuples()):
        gray = cv2.imread(str(sample_root / "png_images" / row.new_filename), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(sample_root / "png_masks" / row.new_filename), cv2.IMREAD_UNCHANGED)
        elements = dict(SOPInstanceUID=row.ImageId, PixelSpacing=[0.168, 0.168], ViewPosition="PA", Modality="CR")
        ds = dataset(gray, "MONOCHROME2", 8, **elements) if number % 3 == 0 else jpeg_baseline_dataset(gray, **elements)
        folder = release / f"dicom-images-{row.stage}" / f"1.2.study.{number}" / f"1.2.series.{number}"
        write(folder / f"{row.ImageId}.dcm", ds)
        halves = [mask.copy(), mask.copy()]
        halves[0][:, 512:], halves[1][:, :512] = 0, 0
        rles = [own_siim_rle(h) for h in halves if h.any()] or ["-1"]
        rows[row.stage] += [(row.ImageId, rle) for rle in rles]
    write(release / "dicom-images-train" / "s" / "r" / "1.2.no.row.dcm", dataset(generated_gray(), "MONOCHROME2", 8))
    broken = write(
        release / "dicom-images-test" / "s" / "r" / "1.2.broken.dcm", dataset(generated_gray(), "MONOCHROME2", 8)
    )
    broken.write_bytes(broken.read_bytes()[:600])
    rows["test"] += [("1.2.broken", "-1"), ("1.2.no.dicom", "1 5")]
    (release / "train-rle.csv").write_text(
        "ImageId, EncodedPixels\n" + "".join(f"{i}, {r}\n" for i, r in rows["train"])
    )
    first_train = rows["train"][0][0]
    test_rows = rows["test"] + [row for row in rows["train"] if row[0] == first_train]  # the same rows again
    (release / "stage_1_test_labels.csv").write_bytes(
        ("\ufeffImageId, EncodedPixels\n" + "".join(f"{i}, {r}\n" for i, r in test_rows)).encode("utf-8")
    )
    return dest, sample


@pytest.fixture(scope="module")
def release(real_sample_dir, tmp_path_factory):
    return build_release(real_sample_dir / paths.KAGGLE_FOLDER, tmp_path_factory.mktemp("release"))


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.realdata
def test_convert_with_kaggle_csvs_gives_the_kaggle_files(release, real_sample_dir, tmp_path):
    import pydicom

    from helpers.data.explore import explore_dataset
    from helpers.data.siim_convert import REPORT_FILE, convert_siim

    src, sample = release
    kaggle_root = real_sample_dir / paths.KAGGLE_FOLDER
    out = tmp_path / "converted"
    result = convert_siim(src, out, kaggle_csvs=kaggle_root, workers=1)
    assert result.converted == len(sample) == 18
    for row in sample.itertuples():
        image = cv2.imread(str(out / "png_images" / row.new_filename), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(out / "png_masks" / row.new_filename), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(
            mask, cv2.imread(str(kaggle_root / "png_masks" / row.new_filename), cv2.IMREAD_UNCHANGED)
        )
        dicom = next((src / "siim" / f"dicom-images-{row.stage}").rglob(f"{row.ImageId}.dcm"))
        decoded = pydicom.dcmread(dicom)
        decoded.pixel_array_options(decoding_plugin="pillow")  # JPEG Baseline as the Kaggle PNGs were decoded
        np.testing.assert_array_equal(image, decoded.pixel_array)  # the DICOM's pixels exactly
        source = cv2.imread(str(kaggle_root / "png_images" / row.new_filename), cv2.IMREAD_UNCHANGED)
        if pydicom.dcmread(dicom).file_meta.TransferSyntaxUID.is_compressed:
            assert np.abs(image.astype(int) - source).mean() < 2  # JPEG at quality 95
        else:
            np.testing.assert_array_equal(image, source)  # the sample's own PNG, pixel for pixel
    for _stage, filename in CSV_FILES.items():
        kaggle_lines = (kaggle_root / filename).read_text().splitlines()
        written = (out / filename).read_text().splitlines()
        assert written[0] == kaggle_lines[0]
        assert written[1:] == [line for line in kaggle_lines[1:] if line.split(",")[1] in set(sample["ImageId"])]
    problems = pd.read_csv(out / REPORT_FILE).set_index("image_id")["problem"]
    assert sorted(problems.index) == ["1.2.broken", "1.2.no.dicom", "1.2.no.row"]
    assert "no RLE row" in problems["1.2.no.row"] and "no DICOM image" in problems["1.2.no.dicom"]
    assert "not in the Kaggle CSVs" in problems["1.2.broken"] and result.unreadable == 0

    converted = explore_dataset(out, workers=1)
    original = explore_dataset(kaggle_root, workers=1)
    for table in ("class_table", "split_table", "area_summary", "components_table", "sizes_table"):
        pd.testing.assert_frame_equal(getattr(converted, table), getattr(original, table))

    before = _snapshot(out)
    again = convert_siim(src, out, kaggle_csvs=kaggle_root, workers=1)
    assert again.written == 0 and again.converted == 18 and _snapshot(out) == before


@pytest.mark.realdata
def test_convert_without_kaggle_csvs_and_the_not_converted_message(release, tmp_path):
    from helpers.data.rawdata import read_index
    from helpers.data.siim_convert import convert_siim

    src, sample = release
    with pytest.raises(FileNotFoundError, match="convert-siim"):
        find_dataset_root(src)
    out = tmp_path / "named"
    result = convert_siim(src, out, workers=1)
    assert result.converted == 18 and result.unreadable == 1
    problems = result.problems.set_index("image_id")["problem"]
    assert "1.2.broken.dcm" in problems["1.2.broken"] and "cannot be decoded" in problems["1.2.broken"]
    assert not list((out / "png_images").glob("*broken*"))
    index = read_index(out)
    expected = {
        f"{row.ImageId}_{row.stage}_{row.has_pneumo}_.png": (row.stage, row.has_pneumo) for row in sample.itertuples()
    }
    assert {row.name: (row.stage, row.has_pneumo) for row in index.pairs.itertuples()} == expected
    for _stage, filename in CSV_FILES.items():
        ids = pd.read_csv(out / filename)["ImageId"].tolist()
        assert ids == sorted(ids)


def test_cli_refuses_what_is_not_a_release(tmp_path):
    from helpers.__main__ import main

    with pytest.raises(SystemExit, match="not the SIIM-ACR release"):
        main(["convert-siim", str(tmp_path), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_cli_on_a_tiny_release(tmp_path, capsys):
    """Generated 64x48 images: one good, one that is not DICOM in a release folder; exit code 1 for it."""
    from helpers.__main__ import main
    from helpers.data.rle import encode_siim

    gray = generated_gray(48, 64)
    mask = np.zeros_like(gray)
    mask[10:20, 30:40] = 255
    write(tmp_path / "rel" / "dicom-images-train" / "a" / "b" / "1.9.1.dcm", dataset(gray, "MONOCHROME2", 8))
    (tmp_path / "rel" / "dicom-images-train" / "a" / "b" / "notes.txt").write_text("not an image")
    (tmp_path / "rel" / "train-rle.csv").write_text(f"ImageId, EncodedPixels\n1.9.1, {encode_siim(mask)}\n")
    with pytest.raises(SystemExit) as caught:
        main(["convert-siim", str(tmp_path / "rel"), str(tmp_path / "out"), "--workers", "1"])
    assert caught.value.code == 1
    assert "notes.txt" in capsys.readouterr().err
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out" / "png_masks" / "1.9.1_train_1_.png"), 0), mask)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out" / "png_images" / "1.9.1_train_1_.png"), 0), gray)
    assert os.path.getsize(tmp_path / "out" / "stage_1_test_images.csv") > 0


def test_a_pair_is_written_whole_or_not(tmp_path):
    """The masks folder cannot be created (a file is in its place): the image is not left without its mask,
    the problem names the file, and the CSVs list nothing."""
    from helpers.data.rle import encode_siim
    from helpers.data.siim_convert import convert_siim

    gray = generated_gray(48, 64)
    write(tmp_path / "rel" / "dicom-images-test" / "a" / "b" / "1.9.2.dcm", dataset(gray, "MONOCHROME2", 8))
    (tmp_path / "rel" / "train-rle.csv").write_text(f"ImageId, EncodedPixels\n1.9.2, {encode_siim(gray > 200)}\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "png_masks").write_text("in the way")
    result = convert_siim(tmp_path / "rel", tmp_path / "out", workers=1)
    assert result.converted == 0 and result.unreadable == 1
    assert (
        "cannot be written" in result.problems.loc[0, "problem"]
        and "1.9.2_test_1_.png" in result.problems.loc[0, "problem"]
    )
    assert not list((tmp_path / "out" / "png_images").glob("*.png"))
    assert pd.read_csv(tmp_path / "out" / "stage_1_test_images.csv").empty
