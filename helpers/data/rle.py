"""Run-length encoded masks as the SIIM-ACR release and Kaggle write them, both ways, and the RLE CSVs.

Both forms number the pixels down the columns (the flat index of the transposed mask: decode into a flat
array, reshape to (width, height), transpose) and hold pairs ``start length``:

- the **SIIM form** (``train-rle.csv`` of the 2019 release): *relative* starts, from 0; each start counts
  the pixels skipped since the end of the previous run;
- the **Kaggle form** (the usual Kaggle submission RLE): *absolute* starts, 1-based.

``-1`` (or an empty string) is an empty mask. A run that leaves the image is an error naming the ImageId,
never a clipped mask. The RLE CSVs have the columns ``ImageId`` and `` EncodedPixels`` (a leading space in
the release's header); some copies start with a UTF-8 BOM and put a space before each value; an image may
have several rows (one per pneumothorax), its mask being their union.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

EMPTY = "-1"
ID_COLUMN = "ImageId"
RLE_COLUMN = "EncodedPixels"


class RleError(ValueError):
    """An RLE string or CSV that does not describe a mask; the message names the ImageId or the file."""


def _pairs(rle: str, image_id: str) -> np.ndarray:
    """The (start, length) pairs of an RLE string as an (n, 2) int64 array; empty for ``-1``."""
    text = str(rle).strip()
    if text in ("", EMPTY):
        return np.zeros((0, 2), dtype=np.int64)
    try:
        numbers = np.array([int(token) for token in text.split()], dtype=np.int64)
    except ValueError as err:
        raise RleError(f"{image_id}: RLE holds something that is not an integer ({err})") from err
    if len(numbers) % 2:
        raise RleError(f"{image_id}: RLE has an odd count of numbers ({len(numbers)}); expected start/length pairs")
    return numbers.reshape(-1, 2)


def _runs_to_mask(starts: np.ndarray, lengths: np.ndarray, height: int, width: int, image_id: str) -> np.ndarray:
    """A bool (height, width) mask from absolute 0-based column-major starts and lengths."""
    size = height * width
    if (lengths <= 0).any():
        raise RleError(f"{image_id}: RLE run of length {int(lengths[lengths <= 0][0])}; lengths must be positive")
    if (starts < 0).any():
        raise RleError(f"{image_id}: RLE run starting at {int(starts[starts < 0][0])}, before the image")
    ends = starts + lengths
    if len(ends) and int(ends.max()) > size:
        raise RleError(
            f"{image_id}: RLE run ends at pixel {int(ends.max())}, past the {width}x{height} image ({size} pixels)"
        )
    flat = np.zeros(size + 1, dtype=np.int32)
    np.add.at(flat, starts, 1)
    np.add.at(flat, ends, -1)
    return (np.cumsum(flat[:-1]) > 0).reshape(width, height).T


def decode_siim(rle: str, height: int, width: int, image_id: str = "mask") -> np.ndarray:
    """The bool (height, width) mask of a relative, 0-based SIIM RLE string (see the module doc)."""
    pairs = _pairs(rle, image_id)
    if (pairs[:, 0] < 0).any():
        raise RleError(f"{image_id}: negative relative start in the RLE")
    if (pairs[:, 1] <= 0).any():
        raise RleError(f"{image_id}: RLE run of non-positive length")
    ends = np.cumsum(pairs[:, 0] + pairs[:, 1])
    return _runs_to_mask(ends - pairs[:, 1], pairs[:, 1], height, width, image_id)


def decode_kaggle(rle: str, height: int, width: int, image_id: str = "mask") -> np.ndarray:
    """The bool (height, width) mask of an absolute, 1-based Kaggle RLE string (see the module doc)."""
    pairs = _pairs(rle, image_id)
    return _runs_to_mask(pairs[:, 0] - 1, pairs[:, 1], height, width, image_id)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absolute 0-based column-major starts and lengths of the foreground runs of a 2-D mask."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    flat = np.concatenate([[0], (mask.T.reshape(-1) > 0).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    return starts, ends - starts


def encode_siim(mask: np.ndarray) -> str:
    """The relative SIIM RLE of a mask (nonzero is foreground); ``-1`` when empty."""
    starts, lengths = _runs(mask)
    if not len(starts):
        return EMPTY
    gaps = starts - np.concatenate([[0], starts[:-1] + lengths[:-1]])
    return " ".join(f"{g} {n}" for g, n in zip(gaps, lengths, strict=True))


def encode_kaggle(mask: np.ndarray) -> str:
    """The absolute, 1-based Kaggle RLE of a mask (nonzero is foreground); ``-1`` when empty."""
    starts, lengths = _runs(mask)
    if not len(starts):
        return EMPTY
    return " ".join(f"{s + 1} {n}" for s, n in zip(starts, lengths, strict=True))


def read_rle_csv(path: str | Path) -> pd.DataFrame:
    """An RLE CSV as ``image_id, rle`` (strings, stripped), one row per CSV row, in file order.

    Accepts a UTF-8 BOM, spaces around the header's names and around the values. Raises :class:`RleError`
    naming the file when it is not such a CSV.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, encoding="utf-8-sig", keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise RleError(f"{path}: not a readable RLE CSV ({err})") from err
    table.columns = [str(column).strip() for column in table.columns]
    if ID_COLUMN not in table.columns or RLE_COLUMN not in table.columns:
        raise RleError(f"{path}: columns are {list(table.columns)}; an RLE CSV has {ID_COLUMN} and {RLE_COLUMN}")
    return pd.DataFrame({"image_id": table[ID_COLUMN].str.strip(), "rle": table[RLE_COLUMN].str.strip()})


def is_rle_csv(path: str | Path) -> bool:
    """Whether the first line of ``path`` names the two columns of an RLE CSV."""
    try:
        with Path(path).open(encoding="utf-8-sig") as handle:
            header = [name.strip() for name in handle.readline().split(",")]
    except (OSError, UnicodeDecodeError):
        return False
    return ID_COLUMN in header and RLE_COLUMN in header


def union_mask(rles: list[str], height: int, width: int, image_id: str = "mask") -> np.ndarray:
    """The union of the masks of several SIIM RLE rows of one image (one row per pneumothorax)."""
    mask = np.zeros((height, width), dtype=bool)
    for rle in rles:
        mask |= decode_siim(rle, height, width, image_id)
    return mask
