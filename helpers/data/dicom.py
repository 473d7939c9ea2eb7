"""Radiographs as PACS export them: one DICOM file -> the 8-bit gray image the model sees, and its pixel spacing.

The conversion follows the DICOM grayscale pipeline (PS3.3 C.11), then makes 8 bits as the training PNGs
were made:

1. the stored values through the Modality LUT (the LUT sequence, or RescaleSlope / RescaleIntercept);
2. the first VOI transform present: the VOI LUT sequence (its output range scaled to 0..255), else the
   first WindowCenter / WindowWidth with the VOILUTFunction (LINEAR, LINEAR_EXACT or SIGMOID) straight to
   0..255; without either, the range of the stored bits (0..2^BitsStored - 1, or its signed counterpart,
   through the rescale) is scaled linearly to 0..255: the identity for 8-bit data, which is how the Kaggle
   PNGs were made from the challenge's 8-bit DICOMs (a float image is stretched from its minimum to its
   maximum);
3. MONOCHROME1 (white is low) inverted, so that air is dark as in the training images.

The transform is computed once per distinct stored value (a lookup table) when the pixels are integers,
which is most of the cost saved on a 1024x1024 radiograph. Compressed pixel data is decoded by pydicom's
plugins, installed with requirements.txt: JPEG Baseline by Pillow (libjpeg-turbo: the decoder that gives the
Kaggle PNGs pixel for pixel; docs/predict.md), JPEG Extended and Lossless (Process 14, SV1 included) by
pylibjpeg-libjpeg, JPEG-LS (lossless and near-lossless) by pyjpegls, JPEG 2000 and HTJ2K (8 to 16 bits,
lossless and lossy) by pylibjpeg-openjpeg, RLE by pylibjpeg-rle or pydicom itself, Deflate by pydicom.
A file without the preamble or the file meta (older archives) is read with pydicom's ``force``, its transfer
syntax inferred (the encoding pydicom found, or the codestream of encapsulated pixels). Any other transfer
syntax, damaged pixel data, a file without pixel data, a colour or multi-frame image raise
:class:`DicomError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DICOM_SUFFIXES = (".dcm", ".dicom")
PREAMBLE_BYTES = 128
MAGIC = b"DICM"
MAX_LUT_ENTRIES = 1 << 17
DESCRIPTIVE_KEYWORDS = ("Modality", "ViewPosition", "BodyPartExamined", "PresentationIntentType", "SOPClassUID")
ITEM_TAG = b"\xfe\xff\x00\xe0"  # (FFFE,E000), little endian: the first item of encapsulated pixel data
FIRST_GROUPS = (b"\x02\x00", b"\x08\x00")  # a dataset without preamble starts in group 0002 or 0008


KAGGLE_JPEG_PLUGIN = "pillow"  # pydicom's plugin for JPEG Baseline: Pillow's libjpeg-turbo, as the Kaggle PNGs


class DicomError(ValueError):
    """A DICOM file that cannot give a grayscale radiograph; the message names the file and the problem."""


@dataclass
class DicomImage:
    """The 8-bit gray image (H, W) and the pixel spacing (row, column) in mm when the file gives one."""

    gray8: np.ndarray
    spacing_mm: tuple[float, float] | None
    attributes: dict[str, str] = field(default_factory=dict)


def has_preamble(path: str | Path) -> bool:
    """Whether the file has the 128-byte preamble and the ``DICM`` marker."""
    try:
        with Path(path).open("rb") as handle:
            head = handle.read(PREAMBLE_BYTES + len(MAGIC))
    except OSError:
        return False
    return head[PREAMBLE_BYTES:] == MAGIC


def _is_bare_dataset(path: Path) -> bool:
    """A DICOM dataset without preamble (older archives): starts with a group 0002 or 0008 tag and pydicom
    parses its first elements."""
    import pydicom

    try:
        with path.open("rb") as handle:
            if handle.read(2) not in FIRST_GROUPS:
                return False
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
        return len(ds) > 0 or len(getattr(ds, "file_meta", ()) or ()) > 0
    except Exception:  # noqa: BLE001 - whatever pydicom raises on a file that is not DICOM means "no"
        return False


def is_dicom(path: str | Path) -> bool:
    """A ``.dcm`` / ``.dicom`` file, any file with the DICOM preamble's ``DICM`` marker (PACS exports often
    have no extension), or a dataset without preamble."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    return has_preamble(path) or _is_bare_dataset(path)


def pixel_spacing(ds) -> tuple[float, float] | None:
    """(row, column) spacing in mm: PixelSpacing, else ImagerPixelSpacing (at the detector); None if absent
    or not two positive numbers."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is None:
            continue
        try:
            row, column = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if row > 0 and column > 0:
            return row, column
    return None


def _first(value) -> float:
    """The first number of a DS value that may be multi-valued."""
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def _window_to_8bit(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 / C.11.2.1.3: modality values through the window, as floats in 0..255."""
    if function == "SIGMOID":
        return 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        low, span = center - width / 2, width
    else:  # LINEAR, the default
        low, span = center - 0.5 - (width - 1) / 2, width - 1
    if span <= 0:
        return np.where(values > center - 0.5, 255.0, 0.0)
    return np.clip((values - low) / span, 0.0, 1.0) * 255.0


def _voi_lut_to_8bit(values: np.ndarray, item) -> np.ndarray:
    """PS3.3 C.11.2.1.1: the VOI LUT (first mapped value, entries, bits per entry) applied to modality values,
    as floats in 0..255 (values below the first entry take the first, above the last take the last). Done
    here rather than by pydicom's ``apply_voi``, which wraps input values above 255 for an 8-bit LUT."""
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    data = item.LUTData
    table = (np.frombuffer(data, dtype="<u2") if isinstance(data, bytes) else np.asarray(data)).astype(np.float64)
    entries = entries or 65536
    index = np.clip(np.round(values).astype(np.int64) - first, 0, min(entries, len(table)) - 1)
    return table[index] * (255.0 / (2**bits - 1))


def _output_range(ds) -> tuple[float, float]:
    """The modality values of the lowest and highest storable values (BitsStored, PixelRepresentation)."""
    from pydicom.pixels import apply_modality_lut

    bits = int(ds.get("BitsStored", 8))
    ends = np.array(
        [-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if int(ds.get("PixelRepresentation", 0)) else [0, 2**bits - 1]
    )
    low, high = apply_modality_lut(ends, ds).astype(np.float64)
    return min(low, high), max(low, high)


def _to_8bit(path: Path, ds, stored: np.ndarray) -> np.ndarray:
    """Modality LUT, VOI LUT or window, 8 bits, MONOCHROME1 inverted, for an array of stored values."""
    from pydicom.pixels import apply_modality_lut

    values = apply_modality_lut(stored, ds).astype(np.float64)
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        scaled = _voi_lut_to_8bit(values, ds.VOILUTSequence[0])
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        width = _first(ds.WindowWidth)
        if width <= 0:
            raise DicomError(f"{path}: WindowWidth {width} is not positive")
        scaled = _window_to_8bit(values, _first(ds.WindowCenter), width, function)
    else:
        low, high = _output_range(ds) if np.issubdtype(stored.dtype, np.integer) else (values.min(), values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    gray = np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    return 255 - gray if ds.PhotometricInterpretation == "MONOCHROME1" else gray


def _decoder_available(syntax) -> bool:
    """Whether a pydicom decoder plugin for ``syntax`` is installed."""
    from pydicom.pixels import get_decoder

    try:
        return bool(get_decoder(syntax).is_available)
    except Exception:  # noqa: BLE001 - pydicom has no decoder at all for it
        return False


def _plugin_available(syntax, plugin: str) -> bool:
    """Whether pydicom's decoder for ``syntax`` has ``plugin`` installed and usable."""
    from pydicom.pixels import get_decoder

    try:
        return plugin in get_decoder(syntax).available_plugins
    except Exception:  # noqa: BLE001 - no decoder for it at all
        return False


def _pixel_array(ds, syntax) -> np.ndarray:
    """``ds.pixel_array``, JPEG Baseline through pydicom's Pillow plugin (libjpeg-turbo, the decoder that
    reproduces the Kaggle PNGs exactly; pylibjpeg-libjpeg, pydicom's default once installed, rounds about 3 % of
    the pixels of a SIIM radiograph one gray level the other way), else pydicom's first available plugin. A
    file the Pillow plugin fails on is tried with the others."""
    from pydicom.uid import JPEGBaseline8Bit

    if syntax == JPEGBaseline8Bit and _plugin_available(syntax, KAGGLE_JPEG_PLUGIN):
        try:
            ds.pixel_array_options(decoding_plugin=KAGGLE_JPEG_PLUGIN)
            return ds.pixel_array
        except Exception:  # noqa: BLE001 - any decoder failure: the other plugins decide, and name it
            ds.pixel_array_options(decoding_plugin="")
    return ds.pixel_array


def _decode(path: Path, ds) -> np.ndarray:
    """The stored pixel values of a single-frame grayscale image, or a DicomError saying why not."""
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DicomError(f"{path}: the DICOM file has no pixel data (not an image)")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if int(ds.get("SamplesPerPixel", 1)) != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomError(
            f"{path}: a colour DICOM ({photometric or 'no PhotometricInterpretation'}, "
            f"{ds.get('SamplesPerPixel', 1)} samples per pixel); expected a grayscale radiograph "
            "(MONOCHROME1 or MONOCHROME2)"
        )
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise DicomError(f"{path}: {ds.NumberOfFrames} frames; expected a single radiograph")
    if syntax is not None and not syntax.is_transfer_syntax:
        known = f" ({syntax.name})" if syntax.name != str(syntax) else ""
        raise DicomError(
            f"{path}: the file's TransferSyntaxUID {syntax}{known} is not a transfer syntax, so "
            "how its pixel data is encoded is unknown"
        )
    try:
        return _pixel_array(ds, syntax)
    except Exception as err:  # pydicom raises RuntimeError, NotImplementedError or ValueError by decoder
        name = getattr(syntax, "name", syntax) or "unknown transfer syntax"
        if syntax is not None and syntax.is_compressed and not _decoder_available(syntax):
            raise DicomError(
                f"{path}: pixel data compressed as {name}, which no installed pydicom decoder "
                f"reads (requirements.txt lists the decoder packages): {err}"
            ) from err
        if syntax is not None and syntax.is_compressed:
            raise DicomError(
                f"{path}: pixel data compressed as {name} is damaged, the installed decoder "
                f"fails on it ({type(err).__name__}: {err})"
            ) from err
        raise DicomError(f"{path}: the pixel data cannot be decoded ({name}): {err}") from err


def _sniff_encapsulated(ds):
    """The transfer syntax of encapsulated pixel data from its first fragment's codestream markers (for files
    without file meta), or None."""
    from pydicom import uid
    from pydicom.encaps import generate_fragments

    try:
        fragment = next(generate_fragments(ds.PixelData[8 + int.from_bytes(ds.PixelData[4:8], "little") :]))
    except Exception:  # noqa: BLE001 - not encapsulated as the standard says
        return None
    if fragment[:4] == b"\xff\x4f\xff\x51" or fragment[4:8] == b"jP  ":
        return uid.JPEG2000
    frames = {
        0xC0: uid.JPEGBaseline8Bit,
        0xC1: uid.JPEGExtended12Bit,
        0xC3: uid.JPEGLossless,
        0xF7: uid.JPEGLSNearLossless,
    }
    position = 2 if fragment[:2] == b"\xff\xd8" else len(fragment)
    while position + 4 <= len(fragment) and fragment[position] == 0xFF:  # marker segments up to the frame header
        marker = fragment[position + 1]
        if marker in frames:
            return frames[marker]
        position += 2 + int.from_bytes(fragment[position + 2 : position + 4], "big")
    return None


def _infer_transfer_syntax(ds) -> None:
    """Give a dataset read without file meta (no preamble, older archives) the transfer syntax its encoding
    shows: the byte order and VR form pydicom found, or the codestream of encapsulated pixel data."""
    from pydicom import uid
    from pydicom.dataset import FileMetaDataset

    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" in ds.file_meta:
        return
    if "PixelData" in ds and (ds["PixelData"].is_undefined_length or ds.PixelData[:4] == ITEM_TAG):
        syntax = _sniff_encapsulated(ds)
        if syntax is not None:
            ds.file_meta.TransferSyntaxUID = syntax
        return
    implicit, little = ds.original_encoding
    ds.file_meta.TransferSyntaxUID = (
        uid.ImplicitVRLittleEndian if implicit else uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian
    )


def read_dataset(path: str | Path):
    """The pydicom dataset of a DICOM file, with or without the 128-byte preamble and file meta (the transfer
    syntax then inferred). Raises FileNotFoundError or :class:`DicomError`, each naming the file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such DICOM file")
    try:
        ds = pydicom.dcmread(path, force=not has_preamble(path) and _is_bare_dataset(path))
    except InvalidDicomError as err:
        raise DicomError(f"{path}: not a DICOM file ({err})") from err
    except Exception as err:  # truncated or garbled files fail in the parser with many exception types
        raise DicomError(f"{path}: unreadable DICOM file ({type(err).__name__}: {err})") from err
    if not len(ds):
        raise DicomError(f"{path}: not a DICOM file (no data elements)")
    try:
        _infer_transfer_syntax(ds)
    except Exception as err:
        raise DicomError(f"{path}: unreadable DICOM file ({type(err).__name__}: {err})") from err
    return ds


def stored_pixels(path: str | Path, ds) -> np.ndarray:
    """The stored values (H, W) of a single-frame grayscale image, or a DicomError naming the file."""
    path = Path(path)
    stored = _decode(path, ds)
    if stored.ndim != 2 or stored.size == 0:
        raise DicomError(f"{path}: pixel array of shape {stored.shape}; expected one 2-D image")
    return stored


def gray8_of(path: str | Path, ds, stored: np.ndarray) -> np.ndarray:
    """The 8-bit image the model sees (the module doc's pipeline) of stored values from ``ds``."""
    path = Path(path)
    if np.issubdtype(stored.dtype, np.integer):
        low, high = int(stored.min()), int(stored.max())
        if high - low < MAX_LUT_ENTRIES:
            table = _to_8bit(path, ds, np.arange(low, high + 1, dtype=np.int64))
            return table[stored.astype(np.int64) - low] if low else table[stored]
    return _to_8bit(path, ds, stored)


def describe(ds) -> dict[str, str]:
    """What the file says it shows: Modality, ViewPosition, BodyPartExamined, PresentationIntentType and the
    SOP class, as strings ("" when absent)."""
    return {keyword: str(ds.get(keyword, "") or "").strip() for keyword in DESCRIPTIVE_KEYWORDS}


def read_dicom(path: str | Path, max_pixels: int | None = None) -> DicomImage:
    """Read one DICOM radiograph as the 8-bit gray image the model sees, its pixel spacing and what it says it
    shows (see the module doc). Raises FileNotFoundError or :class:`DicomError`, each naming the file, and
    :class:`helpers.data.images.ImageTooLarge` before decoding when Rows x Columns is over ``max_pixels``."""
    from helpers.data.images import check_pixels

    ds = read_dataset(path)
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if isinstance(rows, int) and isinstance(columns, int):
        check_pixels(path, columns, rows, max_pixels, ", from its Rows and Columns")
    stored = stored_pixels(path, ds)
    check_pixels(path, stored.shape[1], stored.shape[0], max_pixels)
    return DicomImage(gray8_of(path, ds, stored), pixel_spacing(ds), describe(ds))
