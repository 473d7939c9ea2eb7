"""Image I/O with the project's settings: PNG and JPEG radiographs to 8-bit gray (DICOM: helpers.data.dicom), PNG
encoding, overlays.

Prepared images are read at every training step, so they are encoded for decoding speed
(benchmarks/train.py): uncompressed PNG without filters, decoded in 0.2 ms against 3.1 ms for level-1
Huffman-only (a 512x512 image: 257 KB against 98 KB; about 3 GB for all 12,047). Masks and other
mostly-flat pictures (predicted masks, overlays) use plain level 1, which shrinks long runs of zeros to
about 2 KB and decodes in 0.2 ms (Huffman-only: 32 KB, 1.2 ms).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from helpers.core.fileio import atomic_write_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # what read_gray8 is for; DICOM is told by helpers.data.dicom.is_dicom
IMAGE_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 0, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]
MASK_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1]

OVERLAY_COLOURS: dict[str, tuple[int, int, int]] = {
    "true positive": (0, 255, 0),
    "false positive": (255, 0, 0),
    "false negative": (0, 128, 255),
    "truth": (255, 255, 0),
    "prediction": (255, 0, 255),
}
OVERLAY_ALPHA = 0.5


class ImageTooLarge(ValueError):
    """An image of more pixels than the caller's limit; the message names the file, its size and the limit."""


def check_pixels(path: str | Path, width: int, height: int, max_pixels: int | None, where: str = "") -> None:
    """Raise :class:`ImageTooLarge` when ``width x height`` is over ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLarge(
            f"{path}: {width}x{height} pixels ({width * height:,}{where}), over the limit of {max_pixels:,} "
            "pixels an image (predict --max-pixels raises it)"
        )


JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0..SOF15 (not DHT, JPG, DAC)


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) that a PNG's IHDR or a JPEG's frame header gives, read from the file's first bytes
    without decoding; None when they do not say (another format, or a header that does not parse)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 9 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker in JPEG_FRAME_MARKERS:
            return int.from_bytes(data[position + 7 : position + 9], "big"), int.from_bytes(
                data[position + 5 : position + 7], "big"
            )
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return None


def read_gray8(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file to 8-bit grayscale (H, W).

    Colour is converted with the usual luma weights (as 02_prepare does); 16-bit and float images are
    stretched linearly from their own minimum and maximum to 0..255. Raises ``ValueError`` naming the
    file when it cannot be decoded, :class:`ImageTooLarge` when it has more than ``max_pixels`` pixels
    (before decoding when its header says its size).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    data = path.read_bytes()
    if not data:
        raise ValueError(f"{path}: empty file (0 bytes), not an image")
    size = header_size(data)
    if size is not None:
        check_pixels(path, *size, max_pixels, ", from its header")
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise ValueError(f"{path}: not a readable image ({err.err or err})") from err
    if image is None or image.size == 0:
        raise ValueError(f"{path}: not a readable image (expected a PNG or JPEG radiograph)")
    check_pixels(path, image.shape[1], image.shape[0], max_pixels)
    if image.ndim == 3:
        conversion = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, conversion) if image.shape[2] in (3, 4) else image[:, :, 0]
    if image.dtype == np.uint8:
        return image
    image = image.astype(np.float64)
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) * (255.0 / (high - low)) if high > low else np.zeros_like(image)
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def encode_png(image: np.ndarray, params: list[int] = MASK_PNG_PARAMS) -> bytes:
    """PNG bytes of a uint8 image (H x W gray, or H x W x 3 in OpenCV's BGR order); ``ValueError`` otherwise."""
    image = np.asarray(image)
    problem = f"cannot encode an image of shape {image.shape} and dtype {image.dtype} as PNG"
    try:
        ok, encoded = cv2.imencode(".png", image, params)
    except cv2.error as err:
        raise ValueError(problem) from err
    if not ok:
        raise ValueError(problem)
    return encoded.tobytes()


def write_png(path: Path | str, image: np.ndarray, params: list[int] = MASK_PNG_PARAMS) -> Path:
    """Write ``image`` as a PNG, atomically (see :func:`encode_png`); errors name the file."""
    path = Path(path)
    try:
        data = encode_png(image, params)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    atomic_write_bytes(path, data)
    return path


def overlay(
    image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray | None = None, alpha: float = OVERLAY_ALPHA
) -> np.ndarray:
    """An RGB uint8 picture of a grayscale image with masks blended in at ``alpha``.

    With truth and prediction: true positives, false positives and false negatives in the colours of
    :data:`OVERLAY_COLOURS`; with one of them only: ``truth`` or ``prediction`` colour.

    Built in uint8, a lookup table per colour and channel (the blend of each of the 256 gray levels, rounded
    as ``np.round`` does): about 4 bytes a pixel beyond the image, so that a large radiograph in predict costs
    what its pixels do, not a float64 RGB copy (issue 27's 20000x20000 PNG needed 75 bytes a pixel).
    """
    image = np.asarray(image)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.dtype != np.uint8:
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    regions: dict[str, np.ndarray] = {}
    if truth is not None and pred is not None:
        truth, pred = np.asarray(truth, dtype=bool), np.asarray(pred, dtype=bool)
        regions = {"true positive": truth & pred, "false positive": pred & ~truth, "false negative": truth & ~pred}
    elif truth is not None:
        regions = {"truth": np.asarray(truth, dtype=bool)}
    elif pred is not None:
        regions = {"prediction": np.asarray(pred, dtype=bool)}
    for name, region in regions.items():
        if region.shape != image.shape[:2]:
            raise ValueError(f"{name} mask shape {region.shape} differs from the image's {image.shape[:2]}")
    rgb = np.empty((*image.shape, 3), np.uint8)
    levels = np.arange(256, dtype=np.float64)
    for channel in range(3):
        plane = rgb[:, :, channel]
        plane[...] = image
        for name, region in regions.items():
            lut = np.clip(np.round((1 - alpha) * levels + alpha * OVERLAY_COLOURS[name][channel]), 0, 255)
            plane[region] = lut.astype(np.uint8)[image[region]]
    return rgb
