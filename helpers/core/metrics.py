"""Metric formulas for binary segmentation, from per-image pixel counts (numpy only).

Conventions, also written into every evaluation report:

- **pooled** (mmseg's ``IoUMetric``, what ``mim test`` prints): pixel counts summed over the whole split,
  then per class IoU = I / U and Dice = 2I / (P + L); mIoU / mDice average background and pneumothorax;
  aAcc = correct pixels / all pixels. Percentages rounded to 2 decimals as mmseg does.
- **foreground pooled**: the pneumothorax class alone of the above.
- **per-image Dice** (the SIIM-ACR competition metric): 2|P∩T| / (|P| + |T|) per image, and 1 when both
  prediction and truth are empty; averaged over images. Also over positive images only.
- **detection**: an image is called positive when its predicted area reaches ``min_area`` pixels.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np


def pixel_counts(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``[tp, fp, fn, tn]`` for one binary prediction against one binary truth (same shape)."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    tp = np.count_nonzero(pred & truth)
    fp = np.count_nonzero(pred) - tp
    fn = np.count_nonzero(truth) - tp
    return np.array([tp, fp, fn, pred.size - tp - fp - fn], dtype=np.int64)


def per_image_dice(counts: np.ndarray) -> np.ndarray:
    """Dice per image from an ``(N, 4)`` count array; empty prediction on empty truth scores 1."""
    counts = np.atleast_2d(counts).astype(np.float64)
    tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator == 0, 1.0, 2 * tp / denominator)


def per_image_iou(counts: np.ndarray) -> np.ndarray:
    """IoU per image; empty on empty scores 1."""
    counts = np.atleast_2d(counts).astype(np.float64)
    tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union == 0, 1.0, tp / union)


def class_areas(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mmseg's four per-class totals (intersect, union, pred, label) for [background, pneumothorax]."""
    tp, fp, fn, tn = np.atleast_2d(counts).astype(np.int64).sum(axis=0)
    intersect = np.array([tn, tp])
    union = np.array([tn + fp + fn, tp + fp + fn])
    pred = np.array([tn + fn, tp + fp])
    label = np.array([tn + fp, tp + fn])
    return intersect, union, pred, label


def pooled_metrics(counts: np.ndarray) -> dict[str, float]:
    """mmseg's IoUMetric summary (aAcc, mIoU, mDice, in %, 2 decimals) plus per-class and foreground values.

    Uses ``IoUMetric.total_area_to_metrics`` itself, so the formula and rounding are mmseg's.
    """
    import torch
    from mmseg.evaluation.metrics import IoUMetric

    intersect, union, pred, label = (torch.from_numpy(a.astype(np.float64)) for a in class_areas(counts))
    per_class = IoUMetric.total_area_to_metrics(
        intersect, union, pred, label, metrics=["mIoU", "mDice"], nan_to_num=None, beta=1
    )
    summary = {"aAcc": float(np.round(np.nanmean(np.asarray(per_class["aAcc"])) * 100, 2))}
    for key, name in (("IoU", "mIoU"), ("Dice", "mDice")):
        values = np.asarray(per_class[key], dtype=np.float64)
        summary[name] = float(np.round(np.nanmean(values) * 100, 2))
        summary[f"{key}.background"] = float(np.round(values[0] * 100, 2))
        summary[f"{key}.pneumothorax"] = float(np.round(values[1] * 100, 2))
    return summary


def foreground_pooled(counts: np.ndarray) -> dict[str, float]:
    """Pneumothorax-only pooled IoU and Dice as fractions (NaN when neither truth nor prediction has any)."""
    tp, fp, fn, _ = np.atleast_2d(counts).astype(np.float64).sum(axis=0)
    iou = tp / (tp + fp + fn) if tp + fp + fn else float("nan")
    dice = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {"fg_iou": float(iou), "fg_dice": float(dice)}


@dataclass
class Detection:
    """Image-level detection at a minimum predicted area."""

    tp: int
    fp: int
    fn: int
    tn: int
    auc: float

    @property
    def sensitivity(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def specificity(self) -> float:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else float("nan")

    def as_dict(self) -> dict[str, float]:
        return {
            "det_tp": self.tp,
            "det_fp": self.fp,
            "det_fn": self.fn,
            "det_tn": self.tn,
            "det_auc": self.auc,
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
        }


def detection(counts: np.ndarray, scores: np.ndarray, min_area: int = 1) -> Detection:
    """Image-level detection: truth positive when its mask is not empty, called positive when the predicted
    area reaches ``min_area``; ROC AUC of ``scores`` (e.g. the maximum pneumothorax probability)."""
    counts = np.atleast_2d(counts)
    truth = (counts[:, 0] + counts[:, 2]) > 0
    called = (counts[:, 0] + counts[:, 1]) >= max(1, min_area)
    from sklearn.metrics import roc_auc_score  # here: scikit-learn takes ~2 s to import, the CLI's --help none

    auc = float(roc_auc_score(truth, scores)) if 0 < truth.sum() < len(truth) else float("nan")
    return Detection(
        tp=int((called & truth).sum()),
        fp=int((called & ~truth).sum()),
        fn=int((~called & truth).sum()),
        tn=int((~called & ~truth).sum()),
        auc=auc,
    )


def summary_metrics(counts: np.ndarray, scores: np.ndarray | None = None, min_area: int = 1) -> dict[str, float]:
    """Every headline number for one split: pooled (mmseg), foreground pooled, per-image Dice, detection."""
    counts = np.atleast_2d(counts)
    dice = per_image_dice(counts)
    positive = (counts[:, 0] + counts[:, 2]) > 0
    result = {"images": int(len(counts)), "positive_images": int(positive.sum())}
    result.update(pooled_metrics(counts))
    result.update(foreground_pooled(counts))
    result["image_dice"] = float(dice.mean()) if len(dice) else float("nan")
    result["image_dice_positive"] = float(dice[positive].mean()) if positive.any() else float("nan")
    result["empty_baseline_image_dice"] = float((~positive).mean()) if len(dice) else float("nan")
    if scores is not None:
        result.update(detection(counts, scores, min_area).as_dict())
    return result


# The headline metrics: bootstrapped here, and the columns of 04's comparison table.
HEADLINE = ("mIoU", "mDice", "fg_dice", "fg_iou", "image_dice", "image_dice_positive")


def bootstrap_ci(
    counts: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95, keys: tuple[str, ...] = HEADLINE
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence intervals over images for the headline metrics: the cluster bootstrap
    of :func:`cluster_bootstrap_ci` with every image its own cluster."""
    counts = np.atleast_2d(counts)
    return cluster_bootstrap_ci(counts, np.arange(len(counts)), n_boot=n_boot, seed=seed, level=level, keys=keys)


def cluster_bootstrap_ci(
    counts: np.ndarray,
    clusters: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    keys: tuple[str, ...] = HEADLINE,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals that resample clusters (patients) instead of images.

    Images of one patient are correlated, so resampling images gives intervals that are too narrow. Each
    resample draws as many clusters as there are, with replacement, and takes every image of each drawn
    cluster as often as the cluster was drawn; ``clusters`` gives each image's cluster. All resamples at
    once: each metric is computed from the resampled images' summed counts with the same formulas as
    :func:`summary_metrics` (mmseg's rounding for mIoU / mDice). ``n_boot <= 0``: no intervals, {}.
    """
    if n_boot <= 0:
        return {}
    counts = np.atleast_2d(counts).astype(np.int64)
    weights = cluster_resample_weights(clusters, n_boot, seed)
    tp, fp, fn, tn = (weights @ counts).astype(np.float64).T
    dice = per_image_dice(counts)
    positive = ((counts[:, 0] + counts[:, 2]) > 0).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of classes absent from a resample
        iou = np.stack([tn / (tn + fp + fn), tp / (tp + fp + fn)])
        class_dice = np.stack([2 * tn / (2 * tn + fp + fn), 2 * tp / (2 * tp + fp + fn)])
        samples = {
            "mIoU": np.round(np.nanmean(iou, axis=0) * 100, 2),
            "mDice": np.round(np.nanmean(class_dice, axis=0) * 100, 2),
            "fg_iou": iou[1],
            "fg_dice": class_dice[1],
            "image_dice": (weights @ dice) / weights.sum(axis=1),
            "image_dice_positive": (weights @ (dice * positive)) / (weights @ positive),
        }
        alpha = (1 - level) / 2
        return {
            k: (float(np.nanquantile(samples[k], alpha)), float(np.nanquantile(samples[k], 1 - alpha))) for k in keys
        }


def cluster_resample_weights(clusters: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, images): how often each image is in each cluster-bootstrap resample. Each resample draws as
    many clusters as there are, with replacement, and takes every image of a drawn cluster as often as the
    cluster was drawn; ``clusters`` gives each image's cluster."""
    _, cluster_of = np.unique(np.asarray(clusters), return_inverse=True)
    n_clusters = int(cluster_of.max()) + 1
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, n_clusters, (n_boot, n_clusters))
    offsets = (chosen + n_clusters * np.arange(n_boot)[:, None]).ravel()
    drawn = np.bincount(offsets, minlength=n_boot * n_clusters).reshape(n_boot, n_clusters)
    return drawn[:, cluster_of]


def paired_bootstrap_difference(
    values: np.ndarray,
    reference: np.ndarray,
    clusters: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(mean difference, low, high): the mean over images of ``values - reference`` (two models' per-image
    scores on the same images) and its percentile interval from a paired cluster bootstrap.

    Each resample draws as many clusters (patients) as there are, with replacement, and takes every image of
    each drawn cluster as often as it was drawn, for both models at once (the same resampled patients), so
    the interval is that of the difference, not of two separate means. ``n_boot <= 0``: NaN bounds.
    """
    diff = np.asarray(values, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    mean = float(diff.mean())
    if n_boot <= 0:
        return mean, math.nan, math.nan
    weights = cluster_resample_weights(clusters, n_boot, seed)
    samples = (weights @ diff) / weights.sum(axis=1)
    alpha = (1 - level) / 2
    return mean, float(np.quantile(samples, alpha)), float(np.quantile(samples, 1 - alpha))
