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


def read_gray8(path: str | Path) -> np.ndarray:
    """Decode an image file to 8-bit grayscale (H, W).

    Colour is converted with the usual luma weights (as 02_prepare does); 16-bit and float images are
    stretched linearly from their own minimum and maximum to 0..255. Raises ``ValueError`` naming the
    file when it cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    data = path.read_bytes()
    if not data:
        raise ValueError(f"{path}: empty file (0 bytes), not an image")
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise ValueError(f"{path}: not a readable image ({err.err or err})") from err
    if image is None or image.size == 0:
        raise ValueError(f"{path}: not a readable image (expected a PNG or JPEG radiograph)")
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
    """
    image = np.asarray(image)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    rgb = np.repeat(image.astype(np.float64)[:, :, None], 3, axis=2)
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
        rgb[region] = (1 - alpha) * rgb[region] + alpha * np.array(OVERLAY_COLOURS[name], dtype=np.float64)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)
