"""DICOM files written for the tests with pydicom, from an 8-bit gray image, in the encodings PACS export.

Each encoding stores the image so that the DICOM grayscale pipeline (modality LUT, VOI window,
MONOCHROME1 inversion, 8 bits) gives the 8-bit image back: that is the independent answer the tests
compare :func:`helpers.data.dicom.read_dicom` with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# The window used below maps the modality values 1000 + 10 g (g = 0..255) to g exactly (LINEAR function):
# low = c - 0.5 - (w - 1) / 2 = 1000 and w - 1 = 2550.
WINDOW_CENTER, WINDOW_WIDTH = 2275.5, 2551.0

ENCODINGS = (
    "8bit_monochrome2",
    "8bit_monochrome1",
    "12bit_monochrome2",
    "12bit_monochrome1",
    "12bit_monochrome2_window",
    "12bit_monochrome1_window",
    "16bit_rescale_window",
)


def dataset(image: np.ndarray, photometric: str, bits_stored: int, **elements):
    """A single-frame DX dataset holding ``image`` (uint8 or uint16) uncompressed, with extra elements."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.set_pixel_data(image, photometric_interpretation=photometric, bits_stored=bits_stored)
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def encode(gray: np.ndarray, encoding: str):
    """A dataset whose pixels, through the DICOM pipeline, give ``gray`` (uint8) back.

    The windowed encodings push the image's 0 and 255 pixels far outside the window (to the stored range's
    ends), so that only a correctly applied window gives ``gray`` back: scaling the bit range would not.
    """
    g = gray.astype(np.int64)
    if encoding == "8bit_monochrome2":
        return dataset(gray, "MONOCHROME2", 8)
    if encoding == "8bit_monochrome1":
        return dataset((255 - gray).astype(np.uint8), "MONOCHROME1", 8)
    if encoding == "12bit_monochrome2":  # no window: 0..4095 is scaled to 0..255
        return dataset(np.round(g * 4095 / 255).astype(np.uint16), "MONOCHROME2", 12)
    if encoding == "12bit_monochrome1":
        return dataset(np.round((255 - g) * 4095 / 255).astype(np.uint16), "MONOCHROME1", 12)
    if encoding in ("12bit_monochrome2_window", "12bit_monochrome1_window"):
        shown = g if encoding == "12bit_monochrome2_window" else 255 - g
        stored = np.where(shown == 0, 0, np.where(shown == 255, 4095, 1000 + 10 * shown))
        return dataset(
            stored.astype(np.uint16),
            encoding.split("_")[1].upper(),
            12,
            WindowCenter=WINDOW_CENTER,
            WindowWidth=WINDOW_WIDTH,
        )
    if encoding == "16bit_rescale_window":  # modality value = 2 * stored - 1024
        modality = np.where(g == 0, -1024, np.where(g == 255, 2 * 65535 - 1024, 1000 + 10 * g))
        stored = (modality + 1024) // 2
        return dataset(
            stored.astype(np.uint16),
            "MONOCHROME2",
            16,
            RescaleSlope=2,
            RescaleIntercept=-1024,
            RescaleType="US",
            WindowCenter=WINDOW_CENTER,
            WindowWidth=WINDOW_WIDTH,
        )
    raise ValueError(f"unknown encoding {encoding}")


def write(path: Path, ds) -> Path:
    """Save as a DICOM file (preamble and ``DICM``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def generated_gray(height: int = 96, width: int = 80, seed: int = 0) -> np.ndarray:
    """A smooth gray test image holding every value 0..255 (a gradient with texture and a dark blob)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = 40 + 170 * x / (width - 1) + 30 * np.sin(y / 5.0) + rng.normal(0, 6, (height, width))
    image[(y - height // 2) ** 2 + (x - width // 3) ** 2 < (min(height, width) // 6) ** 2] -= 60
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    image.flat[:256] = np.arange(256)  # every gray level present, 0 and 255 included
    return image
