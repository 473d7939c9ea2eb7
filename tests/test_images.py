"""helpers.data.images: any radiograph (PNG, JPEG, DICOM) to 8-bit gray, PNGs with the project's settings."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from helpers.data.images import IMAGE_PNG_PARAMS, MASK_PNG_PARAMS, encode_png, read_gray8, write_png


def test_read_gray8_converts_colour_and_16_bit(tmp_path):
    colour = np.zeros((5, 7, 3), np.uint8)
    colour[..., 2] = 200  # BGR: pure red
    cv2.imwrite(str(tmp_path / "colour.png"), colour)
    gray = read_gray8(tmp_path / "colour.png")
    assert gray.shape == (5, 7) and gray.dtype == np.uint8
    assert int(gray[0, 0]) == int(cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)[0, 0]) == 60

    deep = np.array([[1000, 2000], [3000, 5000]], np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    assert read_gray8(tmp_path / "deep.png").tolist() == [[0, 64], [128, 255]]


def test_unreadable_and_missing_files_are_named(tmp_path):
    broken = tmp_path / "broken_xray.png"
    broken.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="broken_xray.png"):
        read_gray8(broken)
    with pytest.raises(FileNotFoundError, match="absent.png"):
        read_gray8(tmp_path / "absent.png")


def test_pngs_round_trip_with_both_settings(tmp_path):
    """Prepared images are stored uncompressed (fast to decode), masks compressed; both decode to the array."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 48), dtype=np.uint8)
    mask = np.zeros((64, 48), np.uint8)
    mask[10:20, 5:30] = 1
    for array, params in ((image, IMAGE_PNG_PARAMS), (mask, MASK_PNG_PARAMS)):
        path = write_png(tmp_path / "x.png", array, params)
        np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), array)
    assert len(encode_png(image, IMAGE_PNG_PARAMS)) > image.size  # stored, not deflated
    assert len(encode_png(mask, MASK_PNG_PARAMS)) < mask.size // 10
    assert len(encode_png(mask, IMAGE_PNG_PARAMS)) > mask.size
    with pytest.raises(ValueError, match=r"bad\.png: cannot encode an image of shape \(2, 2, 7\)"):
        write_png(tmp_path / "bad.png", np.zeros((2, 2, 7), np.uint8))
    assert not (tmp_path / "bad.png").exists()
