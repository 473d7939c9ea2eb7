"""Stacks of equal-sized images kept on disk as ``.npy`` files, written and read one batch at a time.

Evaluation at 1024x1024 on a split of thousands of images cannot hold its probabilities, truth and decisions in
memory (3 bytes a pixel: about 4 GB for 1,326 test images), and ``np.save`` of a whole array would buffer it once
more. :class:`StackWriter` appends batches to a ``.npy`` file under a temporary name (no memory map: written pages
are the page cache's, not the process's), :class:`Stack` reads it back image by image; boolean stacks are stored
bit-packed along the last axis (``np.packbits(..., axis=-1)``, 1 bit a pixel, as ``mmseg_pred.npy`` has always
been). The bytes are exactly those ``np.save`` writes for the same array, so readers use ``np.load``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


class StackWriter:
    """Writes an ``(N, H, W)`` stack batch by batch to ``path`` (under a temporary name until :meth:`close`).

    ``dtype`` bool stores the stack bit-packed (``(N, H, ceil(W / 8))`` uint8 in the file). The temporary file is
    created with ``open(..., 'xb')``, so it has the umask's mode, as the final file then has.
    """

    def __init__(self, path: str | Path, shape: Sequence[int], dtype: np.dtype | type) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.packed = self.dtype == np.bool_
        stored = (*self.shape[:-1], (self.shape[-1] + 7) // 8) if self.packed else self.shape
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = _temp_name(self.path)
        self._handle = open(self._tmp, "xb")
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8) if self.packed else self.dtype),
            "fortran_order": False,
            "shape": stored,
        }
        np.lib.format.write_array_header_1_0(self._handle, header)
        self.written = 0

    def append(self, batch: np.ndarray) -> None:
        """Append ``(B, H, W)`` images (of this stack's dtype and image shape)."""
        batch = np.asarray(batch)
        if batch.shape[1:] != self.shape[1:] or batch.dtype != self.dtype:
            raise ValueError(
                f"{self.path}: a batch of {batch.dtype} {batch.shape[1:]} for a stack of {self.dtype} {self.shape[1:]}"
            )
        if self.written + len(batch) > self.shape[0]:
            raise ValueError(f"{self.path}: more than the {self.shape[0]} images announced")
        data = np.packbits(batch, axis=-1) if self.packed else np.ascontiguousarray(batch)
        self._handle.write(memoryview(data).cast("B"))
        self.written += len(batch)

    def close(self) -> Stack:
        """Finish the file (all ``N`` images must have been appended), rename it to ``path``, return its reader."""
        self._handle.close()
        if self.written != self.shape[0]:
            self.discard()
            raise ValueError(f"{self.path}: {self.written} images written of the {self.shape[0]} announced")
        os.replace(self._tmp, self.path)
        return Stack(self.path, width=self.shape[-1] if self.packed else None)

    def discard(self) -> None:
        """Close and remove the temporary file (on failure)."""
        self._handle.close()
        self._tmp.unlink(missing_ok=True)


class Stack:
    """An ``(N, H, W)`` ``.npy`` stack read one image at a time: ``len``, ``shape``, ``dtype``, ``stack[i]``
    and iteration give numpy arrays; nothing is kept in memory. ``width`` given: the file holds a bit-packed
    boolean stack of that width, read back as bool."""

    def __init__(self, path: str | Path, width: int | None = None) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(handle)
            self._offset = handle.tell()
        if fortran or len(shape) != 3:
            raise ValueError(f"{self.path}: not a C-ordered (N, H, W) stack")
        self._stored_shape, self._stored_dtype = tuple(shape), np.dtype(dtype)
        self.width = width
        self.shape = (*shape[:2], width) if width is not None else tuple(shape)
        self.dtype = np.dtype(bool) if width is not None else self._stored_dtype
        self._image_bytes = int(np.prod(shape[1:])) * self._stored_dtype.itemsize
        self._handle = None

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return 3

    def _read(self, handle, index: int) -> np.ndarray:
        image = np.empty(self._stored_shape[1:], self._stored_dtype)
        handle.seek(self._offset + index * self._image_bytes)
        if handle.readinto(memoryview(image).cast("B")) != self._image_bytes:
            raise ValueError(f"{self.path}: truncated at image {index}")
        return np.unpackbits(image, axis=-1, count=self.width).astype(bool) if self.width is not None else image

    def __getitem__(self, index: int) -> np.ndarray:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.path}: image {index} of {len(self)}")
        with open(self.path, "rb") as handle:
            return self._read(handle, index % len(self))

    def __iter__(self) -> Iterator[np.ndarray]:
        with open(self.path, "rb") as handle:
            for index in range(len(self)):
                yield self._read(handle, index)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The whole stack in memory (for small stacks and tests)."""
        array = np.stack(list(self)) if len(self) else np.empty(self.shape, self.dtype)
        return array.astype(dtype) if dtype is not None else array


class ArrayWriter:
    """:class:`StackWriter`'s interface around an array in memory (small splits, tests)."""

    def __init__(self, shape: Sequence[int], dtype: np.dtype | type) -> None:
        self.array = np.empty(tuple(shape), dtype)
        self.written = 0

    def append(self, batch: np.ndarray) -> None:
        self.array[self.written : self.written + len(batch)] = batch
        self.written += len(batch)

    def close(self) -> np.ndarray:
        if self.written != len(self.array):
            raise ValueError(f"{self.written} images written of the {len(self.array)} announced")
        return self.array

    def discard(self) -> None:
        pass


class ChainedStack:
    """Several stacks (or arrays) of the same image shape read as one, in order (out-of-fold predictions)."""

    def __init__(self, parts: Sequence) -> None:
        self.parts = list(parts)
        shapes = {tuple(p.shape[1:]) for p in self.parts}
        if len(shapes) != 1:
            raise ValueError(f"stacks of different image shapes: {sorted(shapes)}")
        self.shape = (sum(len(p) for p in self.parts), *shapes.pop())
        self.dtype = self.parts[0].dtype
        self._starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return 3

    def __getitem__(self, index: int) -> np.ndarray:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"image {index} of {len(self)}")
        index %= len(self)
        part = int(np.searchsorted(self._starts, index, side="right")) - 1
        return np.asarray(self.parts[part][index - self._starts[part]])

    def __iter__(self) -> Iterator[np.ndarray]:
        for part in self.parts:
            yield from part

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = np.concatenate([np.asarray(p) for p in self.parts])
        return array.astype(dtype) if dtype is not None else array


def save_stack(path: str | Path, stack, *, packed: bool = False) -> None:
    """Write ``stack`` to ``path`` as ``np.save`` would (``packed``: bit-packed along the last axis): a
    :class:`Stack` already on disk is moved there (same file system) when its form matches, anything else is
    written image by image."""
    path = Path(path)
    if isinstance(stack, Stack) and (stack.width is not None) == packed:
        if stack.path.resolve() != path.resolve():
            os.replace(stack.path, path)
            stack.path = path
        return
    writer = StackWriter(path, stack.shape, bool if packed else stack.dtype)
    try:
        for image in stack:
            writer.append(np.asarray(image)[None])
    except BaseException:
        writer.discard()
        raise
    writer.close()
