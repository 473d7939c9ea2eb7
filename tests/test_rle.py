"""helpers.data.rle: the SIIM release's relative RLE and the Kaggle absolute RLE, both ways, and the RLE CSVs."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.data.rle import (
    RleError,
    decode_kaggle,
    decode_siim,
    encode_kaggle,
    encode_siim,
    is_rle_csv,
    read_rle_csv,
    union_mask,
)

# A 4x4 mask by hand. Pixels are numbered down the columns: column 1 holds pixels 4..7, column 3 holds 12..15.
HAND_MASK = np.array([[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]], dtype=bool)
HAND_KAGGLE = "5 2 15 2"  # runs at pixels 4-5 and 14-15, 1-based
HAND_SIIM = "4 2 8 2"  # 4 skipped, 2 set, then 8 skipped (6..13), 2 set
# 2 high, 3 wide: column 0 is pixels 0-1, column 2 is pixels 4-5 (only its lower pixel, 5, set).
WIDE_MASK = np.array([[1, 0, 0], [1, 0, 1]], dtype=bool)


def test_hand_made_cases():
    assert encode_kaggle(HAND_MASK) == HAND_KAGGLE and encode_siim(HAND_MASK) == HAND_SIIM
    np.testing.assert_array_equal(decode_kaggle(HAND_KAGGLE, 4, 4), HAND_MASK)
    np.testing.assert_array_equal(decode_siim(HAND_SIIM, 4, 4), HAND_MASK)
    assert encode_kaggle(WIDE_MASK) == "1 2 6 1" and encode_siim(WIDE_MASK) == "0 2 3 1"
    np.testing.assert_array_equal(decode_siim("0 2 3 1", 2, 3), WIDE_MASK)
    np.testing.assert_array_equal(decode_kaggle("1 2 6 1", 2, 3), WIDE_MASK)
    for empty in ("-1", " -1", ""):
        assert not decode_siim(empty, 3, 5).any() and decode_siim(empty, 3, 5).shape == (3, 5)
    assert encode_siim(np.zeros((4, 4))) == "-1" == encode_kaggle(np.zeros((4, 4)))


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (64, 48), (256, 256)])
def test_random_round_trips(shape):
    rng = np.random.default_rng(sum(shape))
    for density in (0.0, 0.05, 0.5, 1.0):
        mask = rng.random(shape) < density
        np.testing.assert_array_equal(decode_siim(encode_siim(mask), *shape), mask)
        np.testing.assert_array_equal(decode_kaggle(encode_kaggle(mask), *shape), mask)
        relative = np.array(encode_siim(mask).split(), dtype=int) if mask.any() else np.zeros(0, int)
        absolute = np.array(encode_kaggle(mask).split(), dtype=int) if mask.any() else np.zeros(0, int)
        # the two forms hold the same runs: cumulative relative starts are the absolute ones, less one
        ends = np.cumsum(relative[0::2] + relative[1::2])
        np.testing.assert_array_equal(ends - relative[1::2], absolute[0::2] - 1)


def test_several_rows_are_a_union():
    left, right = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    left[:, :2], right[1:3, 1:] = True, True
    mask = union_mask([encode_siim(left), "-1", encode_siim(right)], 4, 4)
    np.testing.assert_array_equal(mask, left | right)


@pytest.mark.parametrize(
    "rle, problem",
    [
        ("10 4 2 3", "past the"),
        ("14 3", "past the"),
        ("1 2 3", "odd count"),
        ("1 x", "not an integer"),
        ("2 0", "non-positive"),
    ],
)
def test_bad_runs_are_errors_naming_the_image(rle, problem):
    with pytest.raises(RleError, match=problem) as caught:
        decode_siim(rle, 4, 4, "1.2.3.4")
    assert "1.2.3.4" in str(caught.value)
    with pytest.raises(RleError, match="past the"):
        decode_kaggle("16 2", 4, 4, "1.2.3.4")


def test_release_csv_with_bom_and_leading_spaces(tmp_path):
    path = tmp_path / "train-rle.csv"
    path.write_bytes("\ufeffImageId, EncodedPixels\n1.2.3, -1\n1.2.4, 4 2 8 2\n1.2.4, 0 1\n".encode("utf-8"))
    assert is_rle_csv(path)
    table = read_rle_csv(path)
    assert table.to_dict("list") == {"image_id": ["1.2.3", "1.2.4", "1.2.4"], "rle": ["-1", "4 2 8 2", "0 1"]}
    expected = HAND_MASK.copy()
    expected[0, 0] = True
    np.testing.assert_array_equal(union_mask(list(table["rle"][1:]), 4, 4, "1.2.4"), expected)
    other = tmp_path / "other.csv"
    other.write_text("new_filename,ImageId,has_pneumo\n")
    assert not is_rle_csv(other)
    with pytest.raises(RleError, match="other.csv"):
        read_rle_csv(other)
