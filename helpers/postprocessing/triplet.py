"""Post-processing of a probability map: the SIIM-ACR 1st place's "triplet", and its tuning on val.

Threshold the pneumothorax probability (``p > t``), drop connected components (8-connected) smaller than
``min_component_area`` pixels, and empty the mask when the area left is below ``min_total_area``. Tuned
to maximize the mean per-image Dice on the val split only (never the evaluated one). A run's tuned triplet
is stored in its evaluation folders (helpers.postprocessing.tuned).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np
import pandas as pd

from helpers.core.progress import tqdm
from helpers.postprocessing.base import SchemeValues, area_grid, binarize, scheme_counts
from helpers.postprocessing.prediction_set import Predictions

DEFAULT_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Fractions of the image's pixels (H * W): 0.001 is 262 pixels at 512x512, 1049 at 1024x1024.
DEFAULT_COMPONENT_AREAS = (0.0, 0.0001, 0.0005, 0.001, 0.002)
DEFAULT_TOTAL_AREAS = (0.0, 0.0005, 0.001, 0.002, 0.004)


@dataclass
class PostProcess(SchemeValues):
    """The post-processing "triplet": probability threshold, minimum component area, minimum total area."""

    name: ClassVar[str] = "triplet"
    threshold: float = 0.5
    min_component_area: int = 0
    min_total_area: int = 0

    def apply(self, prob: np.ndarray) -> np.ndarray:
        """The post-processed mask of one probability map (:func:`apply_postprocess`)."""
        return apply_postprocess(prob, self)

    def scaled(self, ratio: float) -> PostProcess:
        """The same triplet for an image with ``ratio`` times the pixels: the areas scaled."""
        return PostProcess(
            self.threshold, int(round(self.min_component_area * ratio)), int(round(self.min_total_area * ratio))
        )

    def describe(self) -> str:
        """The rule in words."""
        return (
            f"probability > {self.threshold:g}, components >= {self.min_component_area} px, "
            f"total >= {self.min_total_area} px"
        )

    @classmethod
    def tune(cls, val: Predictions) -> tuple[PostProcess, pd.DataFrame]:
        """:func:`tune_postprocess` with its default grid."""
        return tune_postprocess(val)


def apply_postprocess(prob: np.ndarray, pp: PostProcess) -> np.ndarray:
    """The post-processed boolean mask of one probability map (uint8 0..255 or float 0..1, H x W)."""
    mask = binarize(prob, pp.threshold)
    if pp.min_component_area > 0 and mask.any():
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        keep = np.zeros(count, dtype=bool)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= pp.min_component_area
        mask = keep[labels]
    if pp.min_total_area > 0 and np.count_nonzero(mask) < pp.min_total_area:
        mask = np.zeros_like(mask)
    return mask


def tune_postprocess(
    val: Predictions,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    component_areas: Sequence[float] = DEFAULT_COMPONENT_AREAS,
    total_areas: Sequence[float] = DEFAULT_TOTAL_AREAS,
) -> tuple[PostProcess, pd.DataFrame]:
    """Grid-search the triplet for the best mean per-image Dice on ``val``.

    ``component_areas`` and ``total_areas`` are fractions of the image's pixels. Ties go to the threshold
    nearest 0.5, then to the smaller areas (the least post-processing).
    """
    thresholds = np.array(sorted(set(float(t) for t in thresholds)))
    pixels = int(val.probs.shape[1] * val.probs.shape[2])
    comp = area_grid(component_areas, pixels)
    total = area_grid(total_areas, pixels)
    true_area = np.zeros(
        len(val.names), dtype=np.int64
    )  # filled image by image: val may be on disk (helpers.core.stacks)
    dice_sum = np.zeros((len(thresholds), len(comp), len(total)))
    dice_sum_pos = np.zeros_like(dice_sum)
    empty_neg = np.zeros_like(dice_sum)
    for i in tqdm(range(len(val.names)), desc="tune post-processing", unit="image"):
        prob, truth = val.probs[i], val.truth[i]
        true_area[i] = np.count_nonzero(truth)
        top = prob.max()
        for t_index, threshold in enumerate(thresholds):
            if not binarize(top, threshold):
                pred_area = np.zeros((len(comp), len(total)), dtype=np.int64)
                tp = pred_area
            else:
                count, labels, stats, _ = cv2.connectedComponentsWithStats(
                    binarize(prob, threshold).astype(np.uint8), connectivity=8
                )
                areas = stats[1:, cv2.CC_STAT_AREA].astype(np.int64)
                comp_tp = np.bincount(labels[truth], minlength=count)[1:]
                kept = areas[None, :] >= comp[:, None]
                area_c = (kept * areas).sum(1)
                tp_c = (kept * comp_tp).sum(1)
                keep_total = area_c[:, None] >= total[None, :]
                pred_area = np.where(keep_total, area_c[:, None], 0)
                tp = np.where(keep_total, tp_c[:, None], 0)
            denominator = pred_area + true_area[i]
            dice = np.where(denominator == 0, 1.0, 2 * tp / np.maximum(denominator, 1))
            dice_sum[t_index] += dice
            if true_area[i] > 0:
                dice_sum_pos[t_index] += dice
            else:
                empty_neg[t_index] += pred_area == 0
    positive = true_area > 0
    t_grid, c_grid, m_grid = np.meshgrid(thresholds, comp, total, indexing="ij")
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    grid = pd.DataFrame(
        {
            "threshold": t_grid.ravel(),
            "min_component_area": c_grid.ravel(),
            "min_total_area": m_grid.ravel(),
            "component_fraction": c_grid.ravel() / pixels,
            "total_fraction": m_grid.ravel() / pixels,
            "image_dice": dice_sum.ravel() / len(val.names),
            "image_dice_positive": dice_sum_pos.ravel() / n_pos if n_pos else np.nan,
            "negatives_empty": empty_neg.ravel() / n_neg if n_neg else np.nan,
        }
    )
    ranked = grid.assign(distance=(grid["threshold"] - 0.5).abs()).sort_values(
        ["image_dice", "distance", "min_component_area", "min_total_area"],
        ascending=[False, True, True, True],
        kind="stable",
    )
    best = ranked.iloc[0]
    pp = PostProcess(float(best["threshold"]), int(best["min_component_area"]), int(best["min_total_area"]))
    return pp, grid


def postprocess_counts(preds: Predictions, pp: PostProcess) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) pixel counts and (N,) areas of the post-processed masks."""
    counts = scheme_counts(preds, pp)
    return counts, counts[:, 0] + counts[:, 1]
