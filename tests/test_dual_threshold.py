"""helpers.postprocessing.dual_threshold: the rule on a hand-built image, the tuning grid against the rule applied image
by image, and tuning that reads the val split only (inside evaluate_run)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.evaluation import schemes_table
from helpers.postprocessing import SCHEMES, DualThreshold, Predictions, apply_dual_threshold, tune_dual_threshold
from helpers.workflow.evaluate_runs import evaluate_run


def _hand_built() -> tuple[np.ndarray, np.ndarray]:
    """A 32x32 map: 10 pixels at 0.9 inside a 12x12 region at 0.5; everything else 0.1."""
    prob = np.full((32, 32), 0.1)
    prob[4:16, 4:16] = 0.5
    prob[8, 5:15] = 0.9
    return prob, prob > 0.3


@pytest.mark.parametrize("quantized", [False, True])
def test_min_area_empties_or_keeps_the_bottom_region(quantized):
    prob, bottom_region = _hand_built()
    if quantized:
        prob = np.round(prob * 255).astype(np.uint8)
    assert np.count_nonzero(prob > (0.75 * 255 if quantized else 0.75)) == 10
    empty = apply_dual_threshold(prob, DualThreshold(top_threshold=0.75, min_area=11, bottom_threshold=0.3))
    assert empty.shape == (32, 32) and not empty.any()
    kept = apply_dual_threshold(prob, DualThreshold(top_threshold=0.75, min_area=10, bottom_threshold=0.3))
    assert np.array_equal(kept, bottom_region) and np.count_nonzero(kept) == 144


def _random_predictions(n: int = 12, size: int = 24, seed: int = 0) -> Predictions:
    """Smooth random probabilities whose truth is a noisy version of the high-probability area."""
    rng = np.random.default_rng(seed)
    probs = np.zeros((n, size, size), dtype=np.uint8)
    truth = np.zeros((n, size, size), dtype=bool)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx, r = rng.integers(4, size - 4, 2).tolist() + [rng.uniform(2, 8)]
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2)) * rng.uniform(0.2, 1.0)
        probs[i] = np.clip(np.round((blob + rng.uniform(0, 0.15, blob.shape)) * 255), 0, 255).astype(np.uint8)
        if i % 3:  # two thirds positive
            truth[i] = blob > rng.uniform(0.2, 0.6)
    return Predictions(
        names=[f"img{i}" for i in range(n)],
        probs=probs,
        truth=truth,
        default_counts=np.zeros((n, 4), np.int64),
        max_prob=probs.reshape(n, -1).max(1) / 255,
        default_pred=np.zeros_like(truth),
    )


def test_tuning_grid_equals_the_rule_applied_image_by_image():
    val = _random_predictions()
    pixels = 24 * 24
    best, grid = tune_dual_threshold(
        val, top_thresholds=(0.5, 0.7, 0.9), min_areas=(0, 5 / pixels, 40 / pixels), bottom_thresholds=(0.2, 0.4, 0.7)
    )
    assert (grid["bottom_threshold"] <= grid["top_threshold"]).all()
    assert len(grid) == 3 * 3 * 3 - 3 * 1  # bottom 0.7 > top 0.5 is left out for each min_area
    positive = val.truth.reshape(len(val.names), -1).any(1)
    for row in grid.itertuples():
        dt = DualThreshold(row.top_threshold, int(row.min_area), row.bottom_threshold)
        dice = []
        for prob, truth in zip(val.probs, val.truth, strict=True):
            mask = apply_dual_threshold(prob, dt)
            total = np.count_nonzero(mask) + np.count_nonzero(truth)
            dice.append(1.0 if total == 0 else 2 * np.count_nonzero(mask & truth) / total)
        assert row.image_dice == pytest.approx(np.mean(dice)), row
        assert row.image_dice_positive == pytest.approx(np.mean(np.array(dice)[positive])), row
    top = grid.loc[grid["image_dice"].idxmax()]
    assert grid["image_dice"].max() == pytest.approx(
        grid[
            (grid.top_threshold == best.top_threshold)
            & (grid.min_area == best.min_area)
            & (grid.bottom_threshold == best.bottom_threshold)
        ]["image_dice"].item()
    )
    assert top["image_dice"] > grid["image_dice"].min()  # the grid discriminates: the toy data is not degenerate


def test_tuning_refuses_float_probabilities():
    val = _random_predictions()
    val.probs = val.probs / 255.0
    with pytest.raises(ValueError, match="uint8"):
        tune_dual_threshold(val)


@pytest.mark.slow
def test_evaluate_run_tunes_the_dual_threshold_on_val_only(trained_demo_run, demo_prepared, tmp_path):
    seen: list[list[str]] = []
    real_tune = DualThreshold.tune.__func__

    def spy_tune(val, *args, **kwargs):
        seen.append(list(val.names))
        return real_tune(DualThreshold, val, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DualThreshold, "tune", classmethod(lambda cls, val: spy_tune(val)))
        result = evaluate_run(trained_demo_run.work_dir, split="test", n_boot=10, device="cpu", out_dir=tmp_path)
    val_names = [Path(line).name for line in (demo_prepared.out_dir / "val.txt").read_text().split()]
    assert seen == [val_names]
    report = result.metrics["dual_threshold"]
    assert report["tuned_on"] == "val" and report["val_images"] == len(val_names)
    assert report["winner_on_val"] in SCHEMES
    winner_dice = max(report["val_image_dice"].values())
    assert report["val_image_dice"][report["winner_on_val"]] == winner_dice
    assert report["metrics"]["images"] == len(result.per_image)
    # the reported test metrics are the tuned rule applied to the stored test probabilities and the masks
    probs = np.load(result.probs_path)
    dt = DualThreshold(report["top_threshold"], report["min_area"], report["bottom_threshold"])
    dice = []
    for prob, name in zip(probs, result.per_image["name"], strict=True):
        truth = cv2.imread(str(demo_prepared.out_dir / "masks" / "test" / f"{name}.png"), cv2.IMREAD_UNCHANGED) > 0
        mask = apply_dual_threshold(prob, dt)
        total = np.count_nonzero(mask) + np.count_nonzero(truth)
        dice.append(1.0 if total == 0 else 2 * np.count_nonzero(mask & truth) / total)
    assert report["metrics"]["image_dice"] == pytest.approx(np.mean(dice))
    # 04's side-by-side table: one row, both schemes, the winner on val
    table = schemes_table([result])
    assert len(table) == 1
    row = table.iloc[0]
    assert row["winner_on_val"] == report["winner_on_val"]
    assert row["dual_threshold_image_dice"] == pytest.approx(100 * np.mean(dice))
    assert row["triplet_image_dice"] == pytest.approx(100 * result.metrics["postprocessed"]["image_dice"])
    assert (
        row["dual_threshold_image_dice_lo"] <= row["dual_threshold_image_dice"] <= row["dual_threshold_image_dice_hi"]
    )
