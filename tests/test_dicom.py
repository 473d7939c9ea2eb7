"""helpers.data.dicom and DICOM input to predict: the 8-bit image the model sees, spacing, errors that name the file."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from helpers.core import paths
from helpers.data.dicom import DicomError, is_dicom, read_dicom
from helpers.data.images import read_gray8
from tests.dicom_files import ENCODINGS, dataset, encode, generated_gray, write


def real_pngs(real_sample_dir, count: int = 2) -> list:
    return sorted((real_sample_dir / paths.KAGGLE_FOLDER / "png_images").glob("*.png"))[:count]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_dicom_gives_the_png_paths_image_generated(encoding, tmp_path):
    gray = generated_gray()
    png = tmp_path / "image.png"
    cv2.imwrite(str(png), gray)
    dcm = write(tmp_path / "image.dcm", encode(gray, encoding))
    seen = read_dicom(dcm).gray8
    assert seen.dtype == np.uint8 and seen.shape == gray.shape
    assert np.abs(seen.astype(int) - read_gray8(png).astype(int)).max() <= 1


@pytest.mark.realdata
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_dicom_gives_the_png_paths_image_real(encoding, real_sample_dir, tmp_path):
    for png in real_pngs(real_sample_dir):
        gray = read_gray8(png)
        seen = read_dicom(write(tmp_path / f"{png.stem}.dcm", encode(gray, encoding))).gray8
        assert np.abs(seen.astype(int) - gray.astype(int)).max() <= 1, png.name


def test_window_is_needed_to_get_the_image_back(tmp_path):
    """The windowed encodings are not the bit range in disguise: without the window the image differs."""
    gray = generated_gray()
    ds = encode(gray, "12bit_monochrome2_window")
    del ds.WindowCenter, ds.WindowWidth
    unwindowed = read_dicom(write(tmp_path / "nowindow.dcm", ds)).gray8
    assert np.abs(unwindowed.astype(int) - gray.astype(int)).max() > 50


def test_voi_lut_sequence(tmp_path):
    """A 12-bit image with an 8-bit VOI LUT (value // 16, starting at stored value 0): gives the image back."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    gray = generated_gray()
    ds = dataset((gray.astype(np.uint16) * 16 + 3), "MONOCHROME1", 12)
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 8])  # LUTDescriptor: entries, first stored value mapped, bits
    item.add_new(0x00283006, "US", [int(v) for v in np.arange(4096) // 16])  # LUTData
    ds.VOILUTSequence = Sequence([item])
    ds.WindowCenter, ds.WindowWidth = 100, 10  # the LUT comes first
    seen = read_dicom(write(tmp_path / "lut.dcm", ds)).gray8
    np.testing.assert_array_equal(seen, 255 - gray)


def test_window_functions_follow_the_standard(tmp_path):
    """LINEAR_EXACT and SIGMOID (PS3.3 C.11.2.1.3) on a ramp of stored values, against the formulas."""
    ramp = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)
    center, width = 2000.0, 1000.0
    exact = read_dicom(
        write(
            tmp_path / "exact.dcm",
            dataset(ramp, "MONOCHROME2", 12, WindowCenter=center, WindowWidth=width, VOILUTFunction="LINEAR_EXACT"),
        )
    ).gray8
    expected = np.clip((ramp - (center - width / 2)) / width, 0, 1) * 255
    assert np.abs(exact.astype(float) - expected).max() <= 0.5 + 1e-9
    sigmoid = read_dicom(
        write(
            tmp_path / "sigmoid.dcm",
            dataset(ramp, "MONOCHROME2", 12, WindowCenter=center, WindowWidth=width, VOILUTFunction="SIGMOID"),
        )
    ).gray8
    expected = 255 / (1 + np.exp(-4 * (ramp - center) / width))
    assert np.abs(sigmoid.astype(float) - expected).max() <= 0.5 + 1e-9


def test_spacing_and_detection(tmp_path):
    gray = generated_gray()
    with_spacing = write(tmp_path / "a.dcm", dataset(gray, "MONOCHROME2", 8, PixelSpacing=[0.2, 0.3]))
    imager = write(tmp_path / "b.dcm", dataset(gray, "MONOCHROME2", 8, ImagerPixelSpacing=[0.15, 0.15]))
    neither = write(tmp_path / "no_extension", dataset(gray, "MONOCHROME2", 8))
    assert read_dicom(with_spacing).spacing_mm == (0.2, 0.3)
    assert read_dicom(imager).spacing_mm == (0.15, 0.15)
    assert read_dicom(neither).spacing_mm is None
    assert is_dicom(neither)  # by its DICM marker
    png = tmp_path / "c.png"
    cv2.imwrite(str(png), gray)
    assert not is_dicom(png)


def _colour(tmp_path):
    rgb = np.zeros((32, 40, 3), np.uint8)
    rgb[..., 0] = 200
    return write(tmp_path / "colour_scan.dcm", dataset(rgb, "RGB", 8))


def _corrupt(tmp_path):
    good = write(tmp_path / "good_for_cut.dcm", dataset(generated_gray(), "MONOCHROME2", 8))
    path = tmp_path / "corrupt_scan.dcm"
    path.write_bytes(good.read_bytes()[:700])  # cut inside the pixel data
    return path


def _not_dicom(tmp_path):
    path = tmp_path / "garbage_scan.dcm"
    path.write_bytes(b"\x00" * 128 + b"XXXX" + b"no dicom here" * 20)
    return path


def _no_pixels(tmp_path):
    ds = dataset(generated_gray(), "MONOCHROME2", 8)
    del ds.PixelData
    return write(tmp_path / "report_only.dcm", ds)


def _no_decoder(tmp_path):
    """Multi-component JPEG 2000 (Part 2): no pydicom decoder plugin reads it."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000MC

    ds = dataset(generated_gray(), "MONOCHROME2", 8)
    ds.file_meta.TransferSyntaxUID = JPEG2000MC
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    return write(tmp_path / "part2_scan.dcm", ds)


def _not_a_syntax(tmp_path):
    """The file meta names a UID that is no transfer syntax (pydicom refuses to write one: patched in)."""
    path = write(tmp_path / "odd_syntax_scan.dcm", dataset(generated_gray(), "MONOCHROME2", 8))
    data = path.read_bytes()
    assert data.count(b"1.2.840.10008.1.2.1\x00") == 1
    path.write_bytes(data.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.5.1.4\x00"))  # same length
    return path


def _compressed(tmp_path):
    """JPEG Lossless (process 14, first-order prediction) whose codestream is cut: pylibjpeg-libjpeg fails."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLosslessSV1

    ds = dataset(generated_gray(), "MONOCHROME2", 8)
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + b"\x00" * 60 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    return write(tmp_path / "lossless_scan.dcm", ds)


BAD = {
    "colour": (_colour, "colour DICOM"),
    "corrupt": (_corrupt, "cannot be decoded|unreadable DICOM"),
    "not_dicom": (_not_dicom, "not a DICOM file"),
    "no_pixels": (_no_pixels, "no pixel data"),
    "compressed": (_compressed, "compressed as JPEG Lossless.* is damaged"),
    "no_decoder": (_no_decoder, "no installed pydicom decoder reads"),
    "not_a_syntax": (_not_a_syntax, "is not a transfer syntax"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_unreadable_dicoms_have_their_own_error_naming_the_file(kind, tmp_path):
    make, message = BAD[kind]
    path = make(tmp_path)
    with pytest.raises(DicomError, match=message) as caught:
        read_dicom(path)
    assert str(path) in str(caught.value)
    others = {other for name, (_, other) in BAD.items() if name != kind}
    assert not any(re.search(other, str(caught.value)) for other in others)


@pytest.mark.slow
def test_predict_mixed_folder_with_bad_dicoms(trained_demo_run, tmp_path):
    """PNG, JPEG and DICOM (with and without spacing) in one folder; the corrupt and colour DICOMs are
    reported with their own errors and the rest is predicted. Areas in cm² on a hand-made case: with
    threshold -1 every pixel is called, so the area is width x height x row spacing x column spacing."""
    from helpers.predict import PREDICTIONS_FILE, predict_images

    folder = tmp_path / "in"
    gray = generated_gray(120, 100)
    folder.mkdir()
    cv2.imwrite(str(folder / "a_png.png"), gray)
    cv2.imwrite(str(folder / "b_jpeg.jpg"), gray)
    write(folder / "c_window.dcm", encode(gray, "12bit_monochrome1_window"))
    spaced = dataset(gray, "MONOCHROME2", 8, PixelSpacing=[0.2, 0.3])
    write(folder / "d_spaced", spaced)  # no extension: found by its DICM marker
    _corrupt(folder)
    _colour(folder)
    (folder / "good_for_cut.dcm").unlink()
    (folder / "notes.txt").write_text("not an image")

    table = predict_images(trained_demo_run.best_checkpoint, [folder], tmp_path / "out", threshold=-1.0, device="cpu")
    assert [p.split("/")[-1] for p in table["input"]] == [
        "a_png.png",
        "b_jpeg.jpg",
        "c_window.dcm",
        "colour_scan.dcm",
        "corrupt_scan.dcm",
        "d_spaced",
        "notes.txt",
    ]
    rows = table.set_index(table["input"].str.split("/").str[-1])
    assert (
        "colour DICOM" in rows.loc["colour_scan.dcm", "error"]
        and "colour_scan.dcm" in rows.loc["colour_scan.dcm", "error"]
    )
    assert "corrupt_scan.dcm" in rows.loc["corrupt_scan.dcm", "error"]
    assert "colour" not in rows.loc["corrupt_scan.dcm", "error"]
    assert rows.loc["notes.txt", "status"] == "skipped: not an image" and rows.loc["notes.txt", "error"] == ""
    good = rows[rows["status"] == "predicted"]
    assert list(good.index) == ["a_png.png", "b_jpeg.jpg", "c_window.dcm", "d_spaced"]
    assert (good["predicted_area"] == 120 * 100).all() and good["pneumothorax"].all()
    assert good.loc["d_spaced", "area_cm2"] == pytest.approx(120 * 100 * 0.2 * 0.3 / 100)  # 7.2 cm²
    assert np.isnan(good.loc["a_png.png", "area_cm2"]) and np.isnan(good.loc["c_window.dcm", "area_cm2"])
    assert cv2.imread(str(tmp_path / "out" / "d_spaced_mask.png"), cv2.IMREAD_UNCHANGED).shape == (120, 100)
    saved = (tmp_path / "out" / PREDICTIONS_FILE).read_text()
    assert "corrupt_scan.dcm" in saved and "7.2" in saved

    nothing = predict_images(
        trained_demo_run.best_checkpoint, [folder / "d_spaced"], tmp_path / "none", threshold=1.0, device="cpu"
    )
    assert nothing.loc[0, "predicted_area"] == 0 and nothing.loc[0, "area_cm2"] == 0.0
    assert not nothing.loc[0, "pneumothorax"]


def _predict_pair(checkpoint, gray, encoding, folder, out):
    from helpers.predict import predict_images

    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "as_png.png"), gray)
    write(folder / "as_dicom.dcm", encode(gray, encoding))
    table = predict_images(checkpoint, [folder], out, device="cpu", postprocess="none")
    assert (table["error"] == "").all()
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) > 0 for p in table["mask_path"]], table


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_dicom_and_png_predictions_agree_generated(encoding, trained_demo_run, tmp_path):
    gray = cv2.resize(generated_gray(), (64, 64), interpolation=cv2.INTER_AREA)
    gray.flat[:256] = np.arange(256)
    (from_png, from_dicom), table = _predict_pair(
        trained_demo_run.best_checkpoint, gray, encoding, tmp_path / "in", tmp_path / "out"
    )
    np.testing.assert_array_equal(from_png, from_dicom)
    assert table.loc[0, "max_prob"] == pytest.approx(table.loc[1, "max_prob"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.realdata
def test_dicom_and_png_predictions_agree_real(trained_demo_run, real_sample_dir, tmp_path):
    """A real 1024x1024 radiograph as a 12-bit MONOCHROME1 DICOM with a window, and as its PNG."""
    png = real_pngs(real_sample_dir, 1)[0]
    gray = read_gray8(png)
    (from_png, from_dicom), table = _predict_pair(
        trained_demo_run.best_checkpoint, gray, "12bit_monochrome1_window", tmp_path / "in", tmp_path / "out"
    )
    assert from_png.shape == (1024, 1024)
    np.testing.assert_array_equal(from_png, from_dicom)
