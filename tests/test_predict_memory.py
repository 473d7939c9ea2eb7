"""Bounded memory per image in predict: an image over the pixel limit is refused with its size and the limit
before it is decoded where its header says its size (PNG, JPEG, DICOM), and the overlay is built in uint8."""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import numpy as np
import pandas as pd
import pytest

from helpers.data.images import ImageTooLarge, header_size, overlay
from helpers.predict import MAX_PIXELS, PREDICTED, PREDICTIONS_FILE, REFUSED, input_kind, predict_images, read_input
from tests.dicom_files import dataset, generated_gray, write

HUGE = 20000  # the fault probe's 20000x20000 PNG: 400 MP, 21.4 GB RSS before


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(path, side: int = HUGE):
    """A valid gray PNG of side x side black pixels, compressed row by row (never held whole)."""
    compressor, row, parts = zlib.compressobj(9), b"\0" * (side + 1), []
    parts = [compressor.compress(row) for _ in range(side)] + [compressor.flush()]
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")
    )
    return path


def test_the_limit_is_the_one_the_cli_shows():
    from helpers import __main__

    assert __main__.MAX_PIXELS == MAX_PIXELS and HUGE * HUGE > MAX_PIXELS


def test_a_huge_png_is_refused_from_its_header_without_decoding(tmp_path):
    path = huge_png(tmp_path / "huge.png")
    assert header_size(path.read_bytes()[:64]) == (HUGE, HUGE)
    tracemalloc.start()
    with pytest.raises(ImageTooLarge, match=rf"huge.png: {HUGE}x{HUGE} pixels \(400,000,000, from its header\), over"):
        read_input(path, input_kind(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20  # the file's bytes, not its pixels


def test_a_huge_dicom_is_refused_from_rows_and_columns(tmp_path):
    ds = dataset(generated_gray(64, 64), "MONOCHROME2", 8)
    ds.Rows = ds.Columns = HUGE  # the header claims 400 MP: refused before any decoder sees the pixel data
    path = write(tmp_path / "huge.dcm", ds)
    with pytest.raises(ImageTooLarge, match=rf"{HUGE}x{HUGE} pixels \(400,000,000, from its Rows and Columns\)"):
        read_input(path, input_kind(path))
    small = write(tmp_path / "small.dcm", dataset(generated_gray(64, 64), "MONOCHROME2", 8))
    with pytest.raises(ImageTooLarge, match="64x64 pixels"):
        read_input(small, input_kind(small), max_pixels=1000)


def test_the_overlay_is_built_in_uint8():
    side = 2000
    image = generated_gray(side, side)
    mask = np.zeros((side, side), bool)
    mask[: side // 2] = True
    tracemalloc.start()
    out = overlay(image, None, mask)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.dtype == np.uint8 and out.shape == (side, side, 3)
    assert peak < 6 * side * side  # the RGB result and a region's values: no float64 copy (48+ bytes a pixel)
    reference = np.repeat(image.astype(np.float64)[:, :, None], 3, axis=2)
    reference[mask] = 0.5 * reference[mask] + 0.5 * np.array((255, 0, 255), np.float64)
    np.testing.assert_array_equal(out, np.clip(np.round(reference), 0, 255).astype(np.uint8))


@pytest.mark.slow
def test_predict_refuses_the_huge_image_and_predicts_the_rest(trained_demo_run, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    huge_png(folder / "huge.png")
    write(folder / "small.dcm", dataset(generated_gray(300, 300), "MONOCHROME2", 8, ViewPosition="PA"))
    out = tmp_path / "out"
    table = predict_images(trained_demo_run.best_checkpoint, [folder], out, device="cpu", threshold=0.5)
    assert table["status"].tolist() == [REFUSED, PREDICTED]
    assert f"{HUGE}x{HUGE} pixels" in table.loc[0, "error"] and f"{MAX_PIXELS:,}" in table.loc[0, "error"]
    assert not (out / "huge_mask.png").exists() and (out / "small_mask.png").exists()
    assert pd.read_csv(out / PREDICTIONS_FILE)["status"].tolist() == [REFUSED, PREDICTED]
