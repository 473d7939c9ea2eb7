"""helpers.core.metrics on hand-computed cases, and its pooled numbers against mmseg's own IoUMetric."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mmseg.evaluation.metrics import IoUMetric

from helpers.core.metrics import (
    bootstrap_ci,
    detection,
    foreground_pooled,
    per_image_dice,
    per_image_iou,
    pixel_counts,
    pooled_metrics,
    summary_metrics,
)
from tests.conftest import random_pixel_counts


def _mask(shape: tuple[int, int], *cells: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for row, col in cells:
        mask[row, col] = True
    return mask


def _mmseg_metrics(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """What mmseg's IoUMetric reports for these (prediction, truth) pairs."""
    metric = IoUMetric(iou_metrics=["mIoU", "mDice"])
    metric.dataset_meta = {"classes": ("background", "pneumothorax")}
    results = [
        IoUMetric.intersect_and_union(
            torch.from_numpy(p.astype(np.int64)), torch.from_numpy(t.astype(np.int64)), 2, 255
        )
        for p, t in pairs
    ]
    return metric.compute_metrics(results)


def _same(ours: float, theirs: float) -> bool:
    """Equal, NaN included; mmseg's sums and results are float32, ours float64 rounded the same way."""
    return (math.isnan(ours) and math.isnan(theirs)) or np.float32(ours) == np.float32(theirs)


# Partial overlap on a 4x4 image: prediction 4 pixels, truth 6 pixels, 2 shared.
PRED = _mask((4, 4), (0, 0), (0, 1), (1, 0), (1, 1))
TRUTH = _mask((4, 4), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1))


def test_empty_truth_and_empty_prediction():
    counts = pixel_counts(np.zeros((4, 4)), np.zeros((4, 4)))
    assert counts.tolist() == [0, 0, 0, 16]
    assert per_image_dice(counts).tolist() == [1.0]
    assert per_image_iou(counts).tolist() == [1.0]
    fg = foreground_pooled(counts)
    assert math.isnan(fg["fg_dice"]) and math.isnan(fg["fg_iou"])
    pooled = pooled_metrics(counts)
    assert math.isnan(pooled["IoU.pneumothorax"]) and math.isnan(pooled["Dice.pneumothorax"])
    assert pooled["mIoU"] == 100.0 and pooled["mDice"] == 100.0 and pooled["aAcc"] == 100.0  # background alone


def test_empty_truth_with_a_prediction_scores_zero():
    counts = pixel_counts(_mask((4, 4), (0, 0), (3, 3)), np.zeros((4, 4)))
    assert counts.tolist() == [0, 2, 0, 14]
    assert per_image_dice(counts).tolist() == [0.0]
    assert foreground_pooled(counts) == {"fg_iou": 0.0, "fg_dice": 0.0}


def test_partial_overlap_by_hand():
    counts = pixel_counts(PRED, TRUTH)
    assert counts.tolist() == [2, 2, 4, 8]
    assert per_image_dice(counts)[0] == pytest.approx(2 * 2 / (4 + 6))
    assert per_image_iou(counts)[0] == pytest.approx(2 / 8)
    pooled = pooled_metrics(counts)
    # background: I = tn = 8, U = 8 + 2 + 4 = 14, P = 8 + 4 = 12, L = 8 + 2 = 10
    assert pooled["IoU.background"] == 57.14 and pooled["IoU.pneumothorax"] == 25.0
    assert pooled["Dice.background"] == 72.73 and pooled["Dice.pneumothorax"] == 40.0
    assert pooled["mIoU"] == 41.07  # (8/14 + 2/8) / 2
    assert pooled["mDice"] == 56.36  # (16/22 + 4/10) / 2
    assert pooled["aAcc"] == 62.5  # 10 of 16 pixels right


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape"):
        pixel_counts(np.zeros((2, 2)), np.zeros((2, 3)))


@pytest.mark.parametrize("case", ["no_foreground", "mixed", "empty_prediction"])
def test_pooled_metrics_match_mmseg_iou_metric(case):
    empty = np.zeros((4, 4), dtype=bool)
    pairs = {
        "no_foreground": [(empty, empty), (empty, empty)],
        "mixed": [(PRED, TRUTH), (empty, empty), (_mask((4, 4), (3, 3)), empty), (empty, _mask((4, 4), (0, 3)))],
        "empty_prediction": [(empty, TRUTH), (empty, empty)],
    }[case]
    counts = np.array([pixel_counts(p, t) for p, t in pairs])
    ours, theirs = pooled_metrics(counts), _mmseg_metrics(pairs)
    for key in ("aAcc", "mIoU", "mDice"):
        assert _same(ours[key], theirs[key]), (key, ours[key], theirs[key])


def test_detection_counts_sensitivity_specificity_and_auc():
    # tp, fp, fn, tn per image: positive found (area 5), positive missed, negative with 3 false pixels, clean negative
    counts = np.array([[4, 1, 2, 93], [0, 0, 7, 93], [0, 3, 0, 97], [0, 0, 0, 100]])
    scores = np.array([0.9, 0.4, 0.6, 0.1])
    result = detection(counts, scores)
    assert (result.tp, result.fp, result.fn, result.tn) == (1, 1, 1, 1)
    assert result.sensitivity == 0.5 and result.specificity == 0.5
    assert result.auc == pytest.approx(0.75)  # positive > negative in 3 of 4 pairs
    strict = detection(counts, scores, min_area=4)  # the 3-pixel false positive no longer counts
    assert (strict.tp, strict.fp, strict.fn, strict.tn) == (1, 0, 1, 2)
    assert strict.specificity == 1.0


def test_summary_metrics_per_image_dice_and_empty_baseline():
    counts = np.array([pixel_counts(PRED, TRUTH), [0, 0, 0, 16], [0, 2, 0, 14], [0, 0, 6, 10]])
    summary = summary_metrics(counts)
    assert summary["images"] == 4 and summary["positive_images"] == 2
    assert summary["image_dice"] == pytest.approx((0.4 + 1 + 0 + 0) / 4)
    assert summary["image_dice_positive"] == pytest.approx((0.4 + 0) / 2)
    assert summary["empty_baseline_image_dice"] == 0.5
    assert summary["fg_dice"] == pytest.approx(2 * 2 / (2 * 2 + 4 + 10))


def test_bootstrap_ci_contains_the_point_estimate():
    rng = np.random.default_rng(1)
    counts = []
    for _ in range(30):
        truth = rng.random((8, 8)) < rng.choice([0.0, 0.2])
        pred = truth ^ (rng.random((8, 8)) < 0.1)
        counts.append(pixel_counts(pred, truth))
    counts = np.array(counts)
    point = summary_metrics(counts)
    ci = bootstrap_ci(counts, n_boot=200, seed=0)
    for key in ("mIoU", "mDice", "fg_dice", "image_dice"):
        low, high = ci[key]
        assert low <= point[key] <= high, key
        assert low < high, key


def test_bootstrap_of_identical_images_is_a_point():
    counts = np.tile(pixel_counts(PRED, TRUTH), (5, 1))
    low, high = bootstrap_ci(counts, n_boot=20)["image_dice"]
    assert low == high == pytest.approx(0.4)


def test_vectorized_bootstrap_equals_resampling_with_summary_metrics():
    """bootstrap_ci computes all resamples at once; it must equal summary_metrics on each resample."""
    from helpers.core.metrics import HEADLINE, summary_metrics

    n = 60
    counts = random_pixel_counts(np.random.default_rng(1), n)
    ci = bootstrap_ci(counts, n_boot=50, seed=3)
    chosen = np.random.default_rng(3).integers(0, n, (50, n))
    for key in HEADLINE:
        values = [summary_metrics(counts[row])[key] for row in chosen]
        assert np.allclose(ci[key], (np.nanquantile(values, 0.025), np.nanquantile(values, 0.975))), key


def test_cluster_bootstrap_of_two_patients_spans_them_and_is_wider_than_the_image_bootstrap():
    """Patient A: ten identical images of Dice 0.4; patient B: one image of Dice 1 (empty on empty).

    Resampling two patients gives AA (Dice 0.4), AB or BA (10 x 0.4 + 1) / 11, or BB (Dice 1), with
    probabilities 1/4, 1/2, 1/4: the 2.5 % and 97.5 % quantiles are exactly 0.4 and 1. Resampling the eleven
    images draws B four times or more in only 1.3 % of resamples (binomial, 11 draws, p = 1/11).
    """
    from helpers.core.metrics import cluster_bootstrap_ci

    counts = np.vstack([np.tile(pixel_counts(PRED, TRUTH), (10, 1)), pixel_counts(np.zeros((4, 4)), np.zeros((4, 4)))])
    clusters = np.array(["A"] * 10 + ["B"])
    cluster_low, cluster_high = cluster_bootstrap_ci(counts, clusters, n_boot=1000, seed=0)["image_dice"]
    assert (cluster_low, cluster_high) == (pytest.approx(0.4), pytest.approx(1.0))
    image_low, image_high = bootstrap_ci(counts, n_boot=1000, seed=0)["image_dice"]
    assert cluster_high - cluster_low > image_high - image_low
    assert image_high < (0.4 * 7 + 4) / 11  # four or more of eleven draws on B: 1.3 % of resamples


def test_cluster_bootstrap_equals_resampling_patients_directly():
    """Each resample: draw as many patients as there are with replacement, take all their images, score with
    summary_metrics; the interval is the quantiles of those scores (the same random draws)."""
    from helpers.core.metrics import HEADLINE, cluster_bootstrap_ci

    rng = np.random.default_rng(2)
    n = 45
    counts = random_pixel_counts(rng, n)
    clusters = rng.integers(0, 12, n)  # 12 patients of varying size
    labels = np.unique(clusters)
    ci = cluster_bootstrap_ci(counts, clusters, n_boot=60, seed=5)
    chosen = np.random.default_rng(5).integers(0, len(labels), (60, len(labels)))
    for key in HEADLINE:
        values = []
        for row in chosen:
            images = np.concatenate([np.flatnonzero(clusters == labels[c]) for c in row])
            values.append(summary_metrics(counts[images])[key])
        assert np.allclose(ci[key], (np.nanquantile(values, 0.025), np.nanquantile(values, 0.975))), key


def test_cluster_bootstrap_with_one_image_per_patient_is_the_image_bootstrap():
    from helpers.core.metrics import cluster_bootstrap_ci

    rng = np.random.default_rng(4)
    truth = rng.integers(0, 40, 30) * (rng.random(30) < 0.5)
    counts = np.stack([truth // 2, truth // 3, truth - truth // 2, 900 - truth - truth // 3], axis=1)
    assert cluster_bootstrap_ci(counts, 7 * np.arange(30), n_boot=40, seed=1) == bootstrap_ci(counts, n_boot=40, seed=1)
