"""helpers.postprocessing.triplet: the triplet by hand, and its tuning against apply_postprocess."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.core.metrics import pixel_counts
from helpers.modeling.inference import Predictions
from helpers.postprocessing import PostProcess, apply_postprocess, tune_postprocess


def test_apply_postprocess_threshold_components_and_total_area():
    prob = np.zeros((8, 8))
    prob[0, 0] = prob[1, 1] = 0.9  # one 2-pixel component: diagonal neighbours join under 8-connectivity
    prob[4:6, 4:7] = 0.7  # a 6-pixel component
    prob[7, 0] = 0.5  # not above the threshold 0.5
    assert np.count_nonzero(apply_postprocess(prob, PostProcess())) == 8
    kept = apply_postprocess(prob, PostProcess(min_component_area=3))
    assert kept.dtype == bool and np.count_nonzero(kept) == 6 and kept[4:6, 4:7].all()
    assert np.count_nonzero(apply_postprocess(prob, PostProcess(min_component_area=2))) == 8
    assert not apply_postprocess(prob, PostProcess(min_component_area=3, min_total_area=7)).any()
    assert np.count_nonzero(apply_postprocess(prob, PostProcess(min_component_area=3, min_total_area=6))) == 6
    assert np.count_nonzero(apply_postprocess(prob, PostProcess(threshold=0.8))) == 2


def test_apply_postprocess_reads_uint8_as_probability():
    prob = np.array([[127, 128], [255, 0]], dtype=np.uint8)  # 127/255 < 0.5 < 128/255
    assert apply_postprocess(prob, PostProcess(0.5)).tolist() == [[False, True], [True, False]]
    assert apply_postprocess(prob.astype(np.float64) / 255, PostProcess(0.5)).tolist() == [[False, True], [True, False]]


def _toy_predictions() -> Predictions:
    """Two positives predicted well (prob 0.8 on the lesion), two negatives with a 2-pixel false blob at 0.8."""
    size = 16
    probs = np.zeros((4, size, size), dtype=np.uint8)
    truth = np.zeros((4, size, size), dtype=bool)
    for i in (0, 1):
        truth[i, 4:8, 4:8] = True
        probs[i, 4:8, 4:8] = 204  # 0.8
        probs[i, 4:8, 8] = 110  # 0.43: a fringe that a threshold of 0.4 or less wrongly adds
    for i in (2, 3):
        probs[i, 10, 10:12] = 204
    return Predictions(
        names=[f"img{i}" for i in range(4)],
        probs=probs,
        truth=truth,
        default_counts=np.array([pixel_counts(p > 127, t) for p, t in zip(probs, truth, strict=True)]),
        max_prob=probs.reshape(4, -1).max(1) / 255,
        default_pred=probs > 127,
    )


def test_tune_postprocess_finds_the_triplet_and_its_grid_matches_apply_postprocess():
    val = _toy_predictions()
    pixels = 16 * 16
    pp, grid = tune_postprocess(
        val, thresholds=(0.3, 0.5, 0.7), component_areas=(0, 3 / pixels), total_areas=(0, 20 / pixels)
    )
    # threshold > 0.43 drops the fringe, components >= 3 pixels drop the false blobs: every image scores 1
    assert pp == PostProcess(threshold=0.5, min_component_area=3, min_total_area=0)
    assert len(grid) == 3 * 2 * 2
    best = grid[(grid.threshold == 0.5) & (grid.min_component_area == 3) & (grid.min_total_area == 0)]
    assert best["image_dice"].item() == 1.0
    for row in grid.itertuples():
        triplet = PostProcess(row.threshold, int(row.min_component_area), int(row.min_total_area))
        dice = [
            1.0
            if not (m := apply_postprocess(p, triplet)).any() and not t.any()
            else 2 * np.count_nonzero(m & t) / (np.count_nonzero(m) + np.count_nonzero(t))
            for p, t in zip(val.probs, val.truth, strict=True)
        ]
        assert row.image_dice == pytest.approx(np.mean(dice)), row
        assert row.image_dice_positive == pytest.approx(np.mean(dice[:2])), row
    # 0.3 keeps the fringe: 2 * 16 / (20 + 16) on each positive, negatives cleaned by the component filter
    low = grid[(grid.threshold == 0.3) & (grid.min_component_area == 3) & (grid.min_total_area == 0)]
    assert low["image_dice"].item() == pytest.approx((2 * 32 / 36 + 2) / 4)
    # a 20-pixel total minimum also empties the true lesions (16 pixels)
    assert grid[(grid.threshold == 0.5) & (grid.min_total_area == 20)]["image_dice_positive"].eq(0).all()
