"""helpers.core.stacks: on-disk image stacks, byte for byte what np.save writes, read back image by image."""

from __future__ import annotations

import io

import numpy as np
import pytest

from helpers.core.stacks import ArrayWriter, ChainedStack, Stack, StackWriter, save_stack


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _images(n: int = 5, shape: tuple[int, int] = (6, 13), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def test_writer_in_batches_equals_np_save_and_reads_back(tmp_path):
    images = _images()
    writer = StackWriter(tmp_path / "probs.npy", images.shape, np.uint8)
    assert not (tmp_path / "probs.npy").exists()  # under a temporary name until closed
    writer.append(images[:2])
    writer.append(images[2:])
    stack = writer.close()
    assert (tmp_path / "probs.npy").read_bytes() == _npy_bytes(images)
    assert [p.name for p in tmp_path.iterdir()] == ["probs.npy"]
    assert stack.shape == images.shape and stack.dtype == np.uint8 and len(stack) == 5
    np.testing.assert_array_equal(stack[3], images[3])
    np.testing.assert_array_equal(stack[-1], images[-1])
    np.testing.assert_array_equal(np.stack(list(stack)), images)
    np.testing.assert_array_equal(np.asarray(stack), images)
    with pytest.raises(IndexError):
        stack[5]


def test_boolean_stacks_are_bit_packed_as_mmseg_pred_npy_always_was(tmp_path):
    masks = _images() > 127  # width 13: a partial last byte
    writer = StackWriter(tmp_path / "pred.npy", masks.shape, bool)
    writer.append(masks)
    stack = writer.close()
    assert (tmp_path / "pred.npy").read_bytes() == _npy_bytes(np.packbits(masks, axis=-1))
    assert stack.dtype == bool and stack.shape == masks.shape
    np.testing.assert_array_equal(np.asarray(stack), masks)
    # save_stack writes an in-memory array the same way, and moves a stack already on disk
    save_stack(tmp_path / "again.npy", masks, packed=True)
    assert (tmp_path / "again.npy").read_bytes() == (tmp_path / "pred.npy").read_bytes()
    save_stack(tmp_path / "moved.npy", stack, packed=True)
    assert not (tmp_path / "pred.npy").exists() and stack.path == tmp_path / "moved.npy"
    np.testing.assert_array_equal(np.load(tmp_path / "moved.npy"), np.packbits(masks, axis=-1))


def test_a_writer_given_too_few_or_too_many_images_leaves_no_file(tmp_path):
    images = _images()
    writer = StackWriter(tmp_path / "probs.npy", images.shape, np.uint8)
    writer.append(images[:3])
    with pytest.raises(ValueError, match="3 images written of the 5"):
        writer.close()
    writer = StackWriter(tmp_path / "probs.npy", (2, 6, 13), np.uint8)
    with pytest.raises(ValueError, match="more than the 2"):
        writer.append(images)
    writer.discard()
    assert list(tmp_path.iterdir()) == []


def test_chained_stacks_and_array_writer_read_as_one(tmp_path):
    images = _images(7)
    first = ArrayWriter(images[:3].shape, np.uint8)
    first.append(images[:3])
    second = StackWriter(tmp_path / "b.npy", images[3:].shape, np.uint8)
    second.append(images[3:])
    chained = ChainedStack([first.close(), second.close()])
    assert chained.shape == images.shape and len(chained) == 7
    np.testing.assert_array_equal(np.stack(list(chained)), images)
    np.testing.assert_array_equal(chained[4], images[4])
    np.testing.assert_array_equal(chained[-7], images[0])
    np.testing.assert_array_equal(np.asarray(Stack(tmp_path / "b.npy")), images[3:])
