"""Post-processing of a probability map: the SIIM-ACR 1st place's "triplet", and its tuning on val.

Threshold the pneumothorax probability (``p > t``), drop connected components (8-connected) smaller than
``min_component_area`` pixels, and empty the mask when the area left is below ``min_total_area``. Tuned
to maximize the mean per-image Dice on the val split only (never the evaluated one). A run's tuned triplet
is found in its evaluation folders (:func:`find_tuned_postprocess`) and applied to images of any size
(:class:`TunedPostProcess`) by predict and the ONNX side-car.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pandas as pd

from helpers import runs
from helpers.metrics import pixel_counts
from helpers.progress import tqdm

if TYPE_CHECKING:  # only for the type hints: importing the model side would load mmseg
    from helpers.modeling.inference import Predictions

DEFAULT_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Fractions of the image's pixels (H * W): 0.001 is 262 pixels at 512x512, 1049 at 1024x1024.
DEFAULT_COMPONENT_AREAS = (0.0, 0.0001, 0.0005, 0.001, 0.002)
DEFAULT_TOTAL_AREAS = (0.0, 0.0005, 0.001, 0.002, 0.004)


@dataclass
class PostProcess:
    """The post-processing "triplet": probability threshold, minimum component area, minimum total area."""

    threshold: float = 0.5
    min_component_area: int = 0
    min_total_area: int = 0

    def as_dict(self) -> dict[str, float]:
        """The three fields as a plain dict (for JSON)."""
        return asdict(self)


def binarize(prob: np.ndarray, threshold: float) -> np.ndarray:
    """``p > threshold``, with uint8 input read as ``p = value / 255`` (the comparison every scheme uses)."""
    prob = np.asarray(prob)
    return prob > threshold * 255 if prob.dtype == np.uint8 else prob > threshold


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


def area_grid(fractions: Sequence[float], pixels: int) -> np.ndarray:
    """Areas in pixels (sorted, unique) for ``fractions`` of an image of ``pixels`` pixels."""
    return np.array(sorted({int(round(f * pixels)) for f in fractions}), dtype=np.int64)


def tune_postprocess(val: Predictions, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                     component_areas: Sequence[float] = DEFAULT_COMPONENT_AREAS,
                     total_areas: Sequence[float] = DEFAULT_TOTAL_AREAS) -> tuple[PostProcess, pd.DataFrame]:
    """Grid-search the triplet for the best mean per-image Dice on ``val``.

    ``component_areas`` and ``total_areas`` are fractions of the image's pixels. Ties go to the threshold
    nearest 0.5, then to the smaller areas (the least post-processing).
    """
    thresholds = np.array(sorted(set(float(t) for t in thresholds)))
    pixels = int(val.probs.shape[1] * val.probs.shape[2])
    comp = area_grid(component_areas, pixels)
    total = area_grid(total_areas, pixels)
    true_area = np.zeros(len(val.names), dtype=np.int64)  # filled image by image: val may be on disk (helpers.stacks)
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
                count, labels, stats, _ = cv2.connectedComponentsWithStats(binarize(prob, threshold).astype(np.uint8), connectivity=8)
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
    grid = pd.DataFrame({
        "threshold": t_grid.ravel(), "min_component_area": c_grid.ravel(), "min_total_area": m_grid.ravel(),
        "component_fraction": c_grid.ravel() / pixels, "total_fraction": m_grid.ravel() / pixels,
        "image_dice": dice_sum.ravel() / len(val.names),
        "image_dice_positive": dice_sum_pos.ravel() / n_pos if n_pos else np.nan,
        "negatives_empty": empty_neg.ravel() / n_neg if n_neg else np.nan,
    })
    ranked = grid.assign(distance=(grid["threshold"] - 0.5).abs()).sort_values(
        ["image_dice", "distance", "min_component_area", "min_total_area"], ascending=[False, True, True, True], kind="stable")
    best = ranked.iloc[0]
    pp = PostProcess(float(best["threshold"]), int(best["min_component_area"]), int(best["min_total_area"]))
    return pp, grid


def postprocess_counts(preds: Predictions, pp: PostProcess) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) pixel counts and (N,) areas of the post-processed masks."""
    counts = np.array([pixel_counts(apply_postprocess(p, pp), t) for p, t in zip(preds.probs, preds.truth)])
    return counts.reshape(-1, 4), counts[:, 0] + counts[:, 1]




@dataclass
class TunedPostProcess:
    """The run's post-processing tuned on val, with the image shape its areas (pixels) were tuned at."""

    postprocess: PostProcess
    image_shape: tuple[int, int]  # (height, width) of the evaluated images
    source: str  # the eval.json it came from

    def for_shape(self, height: int, width: int) -> PostProcess:
        """The same post-processing for an image of another size: areas scaled by the ratio of pixel counts."""
        ratio = (height * width) / (self.image_shape[0] * self.image_shape[1])
        pp = self.postprocess
        return PostProcess(pp.threshold, int(round(pp.min_component_area * ratio)), int(round(pp.min_total_area * ratio)))

    def describe(self) -> str:
        """One line for the user."""
        pp = self.postprocess
        return (f"post-processing tuned on val: probability > {pp.threshold:g}, components >= {pp.min_component_area} px, "
                f"total >= {pp.min_total_area} px at {self.image_shape[1]}x{self.image_shape[0]} (scaled to each "
                f"image's size), from {self.source}")

    def as_dict(self) -> dict:
        """For JSON (the ONNX side-car)."""
        return {**self.postprocess.as_dict(), "image_shape": list(self.image_shape), "source": self.source}

    @classmethod
    def from_dict(cls, data: dict) -> TunedPostProcess:
        """The inverse of :meth:`as_dict`."""
        pp = PostProcess(float(data["threshold"]), int(data["min_component_area"]), int(data["min_total_area"]))
        return cls(pp, (int(data["image_shape"][0]), int(data["image_shape"][1])), str(data["source"]))


def find_tuned_postprocess(run_dir: str | Path, checkpoint: str | Path) -> TunedPostProcess | None:
    """The post-processing 04_evaluate tuned on val for this checkpoint of the run folder ``run_dir``
    (``<outputs>/runs/<config>/lr<lr>``), from its evaluation folders (:func:`helpers.runs.eval_dir` under the
    same ``<outputs>``, the test split's first); None when there is none."""
    run_dir = Path(run_dir).resolve()
    if len(run_dir.parents) < 3:
        return None
    eval_root = runs.eval_dir(run_dir, "test", outputs=run_dir.parents[2]).parent
    candidates = sorted(eval_root.glob(f"*/{runs.EVAL_INFO_FILE}"), key=lambda p: (p.parent.name != "test", p.parent.name))
    for eval_path in candidates:
        info = json.loads(eval_path.read_text())
        metrics_path = eval_path.parent / runs.EVAL_METRICS_FILE
        if Path(info.get("checkpoint", "")).name != Path(checkpoint).name or not metrics_path.is_file():
            continue
        metrics = json.loads(metrics_path.read_text())
        if metrics.get("postprocess", {}).get("tuned_on") != "val":
            continue
        height, width = metrics["image_shape"]
        return TunedPostProcess(PostProcess(**info["postprocess"]), (int(height), int(width)), str(eval_path))
    return None
