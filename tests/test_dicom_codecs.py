"""The compressions PACS export, decoded by the plugins in requirements.txt: each transfer syntax written in the
test (pydicom's encoders through pylibjpeg-openjpeg, pyjpegls and its own RLE; Pillow and imagecodecs for the
JPEG processes pydicom cannot encode), read back equal (lossless) or close (lossy) to the source pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import uid

from helpers.data.dicom import read_dataset, read_dicom, stored_pixels
from tests.dicom_files import dataset, generated_gray, write


def source(bits: int) -> np.ndarray:
    """A smooth test image with texture: 8 bits as is, 12 or 16 bits stretched over the stored range."""
    gray = generated_gray(64, 48).astype(np.float64)
    if bits == 8:
        return gray.astype(np.uint8)
    return np.round(gray * (2**bits - 1) / 255).astype(np.uint16)


def _encapsulated(pixels: np.ndarray, bits: int, syntax: str, frame: bytes):
    from pydicom.encaps import encapsulate

    ds = dataset(pixels, "MONOCHROME2", bits)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True  # as the standard has encapsulated pixel data
    return ds


def jpeg_baseline(pixels: np.ndarray, bits: int):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return _encapsulated(pixels, bits, uid.JPEGBaseline8Bit, buffer.getvalue())


def jpeg_lossless(predictor: int, syntax: str):
    def make(pixels: np.ndarray, bits: int):
        import imagecodecs

        frame = imagecodecs.jpeg8_encode(pixels, lossless=True, predictor=predictor, bitspersample=bits)
        return _encapsulated(pixels, bits, syntax, frame)

    return make


def pydicom_encoder(syntax: str, **options):
    def make(pixels: np.ndarray, bits: int):
        ds = dataset(pixels, "MONOCHROME2", bits)
        ds.compress(syntax, **options)
        return ds

    return make


# (transfer syntax, bits stored, how it is written, the largest difference allowed from the source)
CASES = {
    "jpeg_baseline_8": (uid.JPEGBaseline8Bit, 8, jpeg_baseline, 25),
    "jpeg_lossless_sv1_8": (uid.JPEGLosslessSV1, 8, jpeg_lossless(1, uid.JPEGLosslessSV1), 0),
    "jpeg_lossless_sv1_12": (uid.JPEGLosslessSV1, 12, jpeg_lossless(1, uid.JPEGLosslessSV1), 0),
    "jpeg_lossless_p6_16": (uid.JPEGLossless, 16, jpeg_lossless(6, uid.JPEGLossless), 0),
    "jpeg_ls_lossless_8": (uid.JPEGLSLossless, 8, pydicom_encoder(uid.JPEGLSLossless), 0),
    "jpeg_ls_lossless_16": (uid.JPEGLSLossless, 16, pydicom_encoder(uid.JPEGLSLossless), 0),
    "jpeg_ls_near_lossless_12": (uid.JPEGLSNearLossless, 12, pydicom_encoder(uid.JPEGLSNearLossless, jls_error=3), 3),
    "jpeg2000_lossless_8": (uid.JPEG2000Lossless, 8, pydicom_encoder(uid.JPEG2000Lossless), 0),
    "jpeg2000_lossless_16": (uid.JPEG2000Lossless, 16, pydicom_encoder(uid.JPEG2000Lossless), 0),
    "jpeg2000_lossy_8": (uid.JPEG2000, 8, pydicom_encoder(uid.JPEG2000, j2k_psnr=[45]), 25),
    "jpeg2000_lossy_16": (uid.JPEG2000, 16, pydicom_encoder(uid.JPEG2000, j2k_psnr=[45]), 3000),
    "rle_8": (uid.RLELossless, 8, pydicom_encoder(uid.RLELossless), 0),
    "rle_16": (uid.RLELossless, 16, pydicom_encoder(uid.RLELossless), 0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_transfer_syntax_decodes(case, tmp_path):
    syntax, bits, make, tolerance = CASES[case]
    pixels = source(bits)
    path = write(tmp_path / f"{case}.dcm", make(pixels, bits))
    ds = read_dataset(path)
    assert ds.file_meta.TransferSyntaxUID == syntax
    stored = stored_pixels(path, ds)
    assert stored.shape == pixels.shape
    difference = np.abs(stored.astype(np.int64) - pixels.astype(np.int64))
    assert difference.max() <= tolerance, (case, difference.max())
    if tolerance:  # lossy, yet the image: a peak signal-to-noise ratio of at least 35 dB
        psnr = 10 * np.log10((2**bits - 1) ** 2 / np.mean(difference.astype(np.float64) ** 2))
        assert psnr >= 35, (case, psnr)
    gray = read_dicom(path).gray8  # the 8-bit image the model sees: the source's, to rounding (or the loss)
    expected = np.round(pixels.astype(np.float64) * 255 / (2**bits - 1))
    assert np.abs(gray - expected).max() <= 1 + tolerance * 255 / (2**bits - 1)


def test_dataset_without_file_meta_and_compressed_pixels(tmp_path):
    """A JPEG-LS file without preamble and file meta: the transfer syntax is read off the codestream."""
    pixels = source(8)
    ds = pydicom_encoder(uid.JPEGLSLossless)(pixels, 8)
    del ds.file_meta
    ds.preamble = None
    path = tmp_path / "bare_jpeg_ls"
    ds.save_as(path, implicit_vr=False, little_endian=True, enforce_file_format=False)
    np.testing.assert_array_equal(stored_pixels(path, read_dataset(path)), pixels)


@pytest.mark.parametrize("case", ["jpeg_baseline_8", "jpeg_lossless_sv1_12", "jpeg2000_lossless_16", "rle_8"])
def test_compressed_files_without_file_meta(case, tmp_path):
    """Encapsulated JPEG and JPEG 2000 without file meta: the syntax is read off the codestream's frame header
    (a JPEG Lossless stream is read as Process 14, which covers SV1). RLE has no signature: a named error."""
    from helpers.data.dicom import DicomError

    syntax, bits, make, tolerance = CASES[case]
    pixels = source(bits)
    ds = make(pixels, bits)
    del ds.file_meta
    ds.preamble = None
    path = tmp_path / f"bare_{case}"
    ds.save_as(path, implicit_vr=False, little_endian=True, enforce_file_format=False)
    if case == "rle_8":
        with pytest.raises(DicomError, match=f"bare_{case}"):
            stored_pixels(path, read_dataset(path))
        return
    difference = np.abs(stored_pixels(path, read_dataset(path)).astype(np.int64) - pixels.astype(np.int64))
    assert difference.max() <= tolerance
