"""Comparing two runtimes' decisions: floats agree within a tolerance, never exactly, so a pixel whose probability
lies within that tolerance of a threshold may be decided either way. Decisions must agree everywhere else, and such
pixels must be few."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

PROBABILITY_TOLERANCE = 1e-4  # what ONNX Runtime and PyTorch (or two batchings) are allowed to differ by
NEAR_THRESHOLD_SHARE = 0.01  # at most this share of the pixels may sit within the tolerance of a threshold


def assert_decisions_agree(
    decided: np.ndarray,
    expected: np.ndarray,
    probability: np.ndarray,
    thresholds: float | Iterable[float],
    tolerance: float = PROBABILITY_TOLERANCE,
) -> None:
    """``decided`` equals ``expected`` at every pixel whose ``probability`` is farther than ``tolerance`` from each of
    ``thresholds``; the pixels that close are at most NEAR_THRESHOLD_SHARE of all."""
    thresholds = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    probability = np.asarray(probability, dtype=np.float64)
    near = (np.abs(probability[..., None] - thresholds) <= tolerance).any(axis=-1)
    assert near.mean() <= NEAR_THRESHOLD_SHARE, f"{near.sum()} of {near.size} pixels within {tolerance} of {thresholds}"
    differ = (np.asarray(decided, dtype=bool) != np.asarray(expected, dtype=bool)) & ~near
    assert not differ.any(), f"{differ.sum()} pixels decided differently, away from the thresholds {thresholds}"
