"""The SIIM-ACR 1st place's dual-threshold post-processing, tuned on val beside the triplet.

``(top_threshold, min_area, bottom_threshold)``: an image is empty unless at least ``min_area`` pixels have
a probability above ``top_threshold``; when it is not empty, the mask is every pixel above
``bottom_threshold`` (``min_area = 0`` keeps every image, as in the winners' code). Thresholds compare
like the triplet's (helpers.postprocessing.base.binarize): ``p > t``, with uint8 maps read as ``p = value / 255``.
The winners' values were (0.75, 2000, 0.3) on their validation at 1024x1024.

Tuning is a grid search for the best mean per-image Dice on the val split. Because the rule only counts
pixels above thresholds, each image reduces to two 256-bin histograms of its uint8 probabilities (all
pixels, and pixels inside the true mask): the whole grid is then scored at once, for all images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from helpers.core.progress import tqdm
from helpers.postprocessing.base import SchemeValues, area_grid, binarize, scheme_counts
from helpers.postprocessing.prediction_set import Predictions

DEFAULT_TOP_THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.9)
DEFAULT_BOTTOM_THRESHOLDS = (0.2, 0.3, 0.4, 0.5)
# Fractions of the image's pixels: 0.002 is 2097 pixels at 1024x1024 (the winners' 2000), 524 at 512x512.
DEFAULT_MIN_AREAS = (0.0, 0.0001, 0.0005, 0.001, 0.002, 0.004)


@dataclass
class DualThreshold(SchemeValues):
    """The dual-threshold triplet: top probability, minimum pixel count above it, bottom probability."""

    name: ClassVar[str] = "dual_threshold"
    top_threshold: float = 0.75
    min_area: int = 0
    bottom_threshold: float = 0.3

    def apply(self, prob: np.ndarray) -> np.ndarray:
        """The mask of one probability map (:func:`apply_dual_threshold`)."""
        return apply_dual_threshold(prob, self)

    def scaled(self, ratio: float) -> DualThreshold:
        """The same rule for an image with ``ratio`` times the pixels: ``min_area`` scaled."""
        return DualThreshold(self.top_threshold, int(round(self.min_area * ratio)), self.bottom_threshold)

    def describe(self) -> str:
        """The rule in words."""
        return (
            f"empty unless >= {self.min_area} px have probability > {self.top_threshold:g}, "
            f"else probability > {self.bottom_threshold:g}"
        )

    @classmethod
    def tune(cls, val: Predictions) -> tuple[DualThreshold, pd.DataFrame]:
        """:func:`tune_dual_threshold` with its default grid."""
        return tune_dual_threshold(val)


def apply_dual_threshold(prob: np.ndarray, dt: DualThreshold) -> np.ndarray:
    """The boolean mask of one probability map (uint8 0..255 or float 0..1, H x W) under ``dt``."""
    if np.count_nonzero(binarize(prob, dt.top_threshold)) < dt.min_area:
        return np.zeros(np.shape(prob), dtype=bool)
    return binarize(prob, dt.bottom_threshold)


def _above_counts(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(N, T) number of uint8 values ``> t * 255`` per row of ``values`` (N, 256 histogram bins)."""
    # v > t * 255 for an integer v is v > floor(t * 255): the counts above bin k are a reversed cumsum.
    above = np.cumsum(values[:, ::-1], axis=1)[:, ::-1]  # above[:, k] = count of values >= k
    above = np.concatenate([above, np.zeros((len(values), 1), dtype=above.dtype)], axis=1)
    first_bin = np.floor(thresholds * 255).astype(np.int64) + 1
    return above[:, np.clip(first_bin, 0, 256)]


def _histograms(preds: Predictions) -> tuple[np.ndarray, np.ndarray]:
    """(N, 256) histograms of each image's uint8 probabilities: all pixels, and pixels in the true mask."""
    if preds.probs.dtype != np.uint8:
        raise ValueError(
            f"tune_dual_threshold needs uint8 probabilities (as predict_split stores), not {preds.probs.dtype}"
        )
    n = len(preds.names)
    every, inside = np.zeros((n, 256), dtype=np.int64), np.zeros((n, 256), dtype=np.int64)
    # one image at a time: the stacks may be on disk (helpers.core.stacks)
    images = zip(preds.probs, preds.truth, strict=True)
    for i, (prob, truth) in enumerate(tqdm(images, total=n, desc="dual-threshold histograms", unit="image")):
        every[i] = np.bincount(prob.ravel(), minlength=256)
        inside[i] = np.bincount(prob[truth], minlength=256)
    return every, inside


def tune_dual_threshold(
    val: Predictions,
    top_thresholds: Sequence[float] = DEFAULT_TOP_THRESHOLDS,
    min_areas: Sequence[float] = DEFAULT_MIN_AREAS,
    bottom_thresholds: Sequence[float] = DEFAULT_BOTTOM_THRESHOLDS,
) -> tuple[DualThreshold, pd.DataFrame]:
    """Grid-search the dual threshold for the best mean per-image Dice on ``val`` (only combinations with
    ``bottom <= top``). ``min_areas`` are fractions of the image's pixels. Ties go to the top threshold
    nearest 0.5, then the smaller ``min_area``, then the bottom threshold nearest 0.5."""
    tops = np.array(sorted({float(t) for t in top_thresholds}))
    bottoms = np.array(sorted({float(b) for b in bottom_thresholds}))
    pixels = int(val.probs.shape[1] * val.probs.shape[2])
    areas = area_grid(min_areas, pixels)
    every, inside = _histograms(val)
    true_area = inside.sum(1)
    top_count = _above_counts(every, tops)  # (N, T)
    bottom_area, bottom_tp = _above_counts(every, bottoms), _above_counts(inside, bottoms)  # (N, B)
    keep = top_count[:, :, None] >= areas[None, None, :]  # (N, T, A): not empty

    pred_area = keep[..., None] * bottom_area[:, None, None, :]  # (N, T, A, B)
    tp = keep[..., None] * bottom_tp[:, None, None, :]
    denominator = pred_area + true_area[:, None, None, None]
    dice = np.where(denominator == 0, 1.0, 2 * tp / np.maximum(denominator, 1))
    positive = true_area > 0
    t_grid, a_grid, b_grid = np.meshgrid(tops, areas, bottoms, indexing="ij")
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    grid = pd.DataFrame(
        {
            "top_threshold": t_grid.ravel(),
            "min_area": a_grid.ravel(),
            "bottom_threshold": b_grid.ravel(),
            "area_fraction": a_grid.ravel() / pixels,
            "image_dice": dice.mean(0).ravel(),
            "image_dice_positive": dice[positive].mean(0).ravel() if n_pos else np.nan,
            "negatives_empty": (pred_area[~positive] == 0).mean(0).ravel() if n_neg else np.nan,
        }
    )
    grid = grid[grid["bottom_threshold"] <= grid["top_threshold"]].reset_index(drop=True)
    ranked = grid.assign(
        top_distance=(grid["top_threshold"] - 0.5).abs(), bottom_distance=(grid["bottom_threshold"] - 0.5).abs()
    ).sort_values(
        ["image_dice", "top_distance", "min_area", "bottom_distance"],
        ascending=[False, True, True, True],
        kind="stable",
    )
    best = ranked.iloc[0]
    return DualThreshold(float(best["top_threshold"]), int(best["min_area"]), float(best["bottom_threshold"])), grid


def dual_threshold_counts(preds: Predictions, dt: DualThreshold) -> np.ndarray:
    """(N, 4) pixel counts of the dual-threshold masks."""
    return scheme_counts(preds, dt)
