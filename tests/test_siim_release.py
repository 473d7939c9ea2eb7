"""The Kaggle pixels exactly: the two real DICOMs of the SIIM-ACR release in ../shared/realdata-sample/siim-release/
(JPEG Baseline, as the whole release) convert to the Kaggle PNGs pixel for pixel, masks included, and predict
reads the same pixels (docs/predict.md says which decoder and why)."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from helpers.core import paths
from helpers.data.rawdata import CSV_FILES

RELEASE = "siim-release"
KAGGLE_NAMES = ("2_train_1_.png", "4_train_1_.png")  # the sample's radiographs that the release's two DICOMs are


@pytest.fixture(scope="module")
def real_release(real_sample_dir):
    release = real_sample_dir / RELEASE
    if not (release / "dicom-images-train").is_dir():
        pytest.skip(f"{release} is not here")
    return release


def _kaggle_ids(kaggle_root) -> dict[str, str]:
    table = pd.concat(pd.read_csv(kaggle_root / f) for f in CSV_FILES.values())
    return dict(zip(table["ImageId"], table["new_filename"], strict=True))


@pytest.mark.realdata
def test_the_release_converts_to_the_kaggle_pngs_pixel_for_pixel(real_release, real_sample_dir, tmp_path):
    from helpers.data.siim_convert import convert_siim

    kaggle_root = real_sample_dir / paths.KAGGLE_FOLDER
    out = tmp_path / "converted"
    result = convert_siim(real_release, out, kaggle_csvs=kaggle_root, workers=1)
    assert result.converted == 2 and result.unreadable == 0
    for name in KAGGLE_NAMES:
        for folder in ("png_images", "png_masks"):
            converted = cv2.imread(str(out / folder / name), cv2.IMREAD_UNCHANGED)
            kaggle = cv2.imread(str(kaggle_root / folder / name), cv2.IMREAD_UNCHANGED)
            assert converted is not None and converted.dtype == kaggle.dtype == np.uint8
            np.testing.assert_array_equal(converted, kaggle, err_msg=f"{folder}/{name}")


@pytest.mark.realdata
def test_predict_reads_the_kaggle_pixels_of_the_release(real_release, real_sample_dir):
    from helpers.data.dicom import read_dicom
    from helpers.predict import input_kind, read_input

    kaggle_root = real_sample_dir / paths.KAGGLE_FOLDER
    names = _kaggle_ids(kaggle_root)
    dicoms = sorted(real_release.rglob("*.dcm"))
    assert len(dicoms) == 2
    for dicom in dicoms:
        kaggle = cv2.imread(str(kaggle_root / "png_images" / names[dicom.stem]), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(read_dicom(dicom).gray8, kaggle)
        gray, spacing, _ = read_input(dicom, input_kind(dicom))
        np.testing.assert_array_equal(gray, kaggle)
        assert spacing is not None


def test_jpeg_baseline_goes_through_pillow_when_it_is_there():
    """The decoder choice itself, without the sample: Pillow's plugin is installed (requirements.txt) and
    it is the one JPEG Baseline takes."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGBaseline8Bit

    from helpers.data.dicom import KAGGLE_JPEG_PLUGIN

    assert KAGGLE_JPEG_PLUGIN == "pillow" and "pillow" in get_decoder(JPEGBaseline8Bit).available_plugins
