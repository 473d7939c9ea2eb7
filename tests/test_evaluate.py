"""helpers.evaluate: post-processing by hand, tuning on val only, parity with mmseg's Runner.test(), reload."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from helpers import evaluate
from helpers.evaluate import (SEED_RESULTS, PostProcess, Predictions, apply_postprocess, comparison_table, evaluate_run,
                              load_eval, predict_split, predicted_mask, tune_postprocess, write_comparison)
from helpers.metrics import pixel_counts, pooled_metrics


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
    return Predictions(names=[f"img{i}" for i in range(4)], probs=probs, truth=truth,
                       default_counts=np.array([pixel_counts(p > 127, t) for p, t in zip(probs, truth)]),
                       max_prob=probs.reshape(4, -1).max(1) / 255, default_pred=probs > 127)


def test_tune_postprocess_finds_the_triplet_and_its_grid_matches_apply_postprocess():
    val = _toy_predictions()
    pixels = 16 * 16
    pp, grid = tune_postprocess(val, thresholds=(0.3, 0.5, 0.7), component_areas=(0, 3 / pixels),
                                total_areas=(0, 20 / pixels))
    # threshold > 0.43 drops the fringe, components >= 3 pixels drop the false blobs: every image scores 1
    assert pp == PostProcess(threshold=0.5, min_component_area=3, min_total_area=0)
    assert len(grid) == 3 * 2 * 2
    best = grid[(grid.threshold == 0.5) & (grid.min_component_area == 3) & (grid.min_total_area == 0)]
    assert best["image_dice"].item() == 1.0
    for row in grid.itertuples():
        triplet = PostProcess(row.threshold, int(row.min_component_area), int(row.min_total_area))
        dice = [1.0 if not (m := apply_postprocess(p, triplet)).any() and not t.any()
                else 2 * np.count_nonzero(m & t) / (np.count_nonzero(m) + np.count_nonzero(t))
                for p, t in zip(val.probs, val.truth)]
        assert row.image_dice == pytest.approx(np.mean(dice)), row
        assert row.image_dice_positive == pytest.approx(np.mean(dice[:2])), row
    # 0.3 keeps the fringe: 2 * 16 / (20 + 16) on each positive, negatives cleaned by the component filter
    low = grid[(grid.threshold == 0.3) & (grid.min_component_area == 3) & (grid.min_total_area == 0)]
    assert low["image_dice"].item() == pytest.approx((2 * 32 / 36 + 2) / 4)
    # a 20-pixel total minimum also empties the true lesions (16 pixels)
    assert grid[(grid.threshold == 0.5) & (grid.min_total_area == 20)]["image_dice_positive"].eq(0).all()


# ----- with a trained model (slow) -----

slow = pytest.mark.slow


@pytest.fixture(scope="module")
def tuned_eval(trained_demo_run, tmp_path_factory):
    """evaluate_run on test with tuning, recording the splits predict_split and tune_postprocess saw."""
    calls: list[str] = []
    tuned_on: list[list[str]] = []
    real_predict, real_tune = evaluate.predict_split, evaluate.tune_postprocess

    def spy_predict(model, cfg, data_root, split, *args, **kwargs):
        calls.append(split)
        return real_predict(model, cfg, data_root, split, *args, **kwargs)

    def spy_tune(val, *args, **kwargs):
        tuned_on.append(list(val.names))
        return real_tune(val, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate, "predict_split", spy_predict)
        patch.setattr(evaluate, "tune_postprocess", spy_tune)
        result = evaluate_run(trained_demo_run.work_dir, split="test", n_boot=20, device="cpu",
                              out_dir=tmp_path_factory.mktemp("eval") / "test")
    return result, calls, tuned_on


def _names(data_root: Path, split: str) -> list[str]:
    return [Path(line).name for line in (Path(data_root) / f"{split}.txt").read_text().split()]


def _runner_test(run_dir: Path, checkpoint: Path, split: str, work_dir: Path) -> dict:
    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = Config.fromfile(str(run_dir / "config.py"))
    cfg.work_dir = str(work_dir)
    cfg.load_from = str(checkpoint)
    cfg.test_dataloader.dataset.ann_file = f"{split}.txt"
    return Runner.from_cfg(cfg).test()


@slow
@pytest.mark.parametrize("split", ["val", "test"])
def test_pooled_metrics_equal_mmseg_runner_test(trained_demo_run, tmp_path, split):
    result = evaluate_run(trained_demo_run.work_dir, split=split, postprocess="none", n_boot=0, device="cpu",
                          out_dir=tmp_path / "eval")
    theirs = _runner_test(trained_demo_run.work_dir, result.checkpoint, split, tmp_path / "runner")
    ours = result.metrics["mmseg"]
    assert ours["images"] == len(_names(result.data_root, split))
    for key in ("aAcc", "mIoU", "mDice", "IoU.pneumothorax", "Dice.pneumothorax"):
        assert np.float32(ours[key]) == np.float32(theirs[key]), (key, ours[key], theirs[key])
    assert result.metrics["postprocess"]["tuned_on"] == "given"


@slow
def test_tuning_reads_the_val_split_only(tuned_eval, demo_prepared):
    result, calls, tuned_on = tuned_eval
    assert calls == ["test", "val"]
    assert tuned_on == [_names(demo_prepared.out_dir, "val")]
    assert result.metrics["postprocess"]["tuned_on"] == "val"
    assert result.metrics["postprocess"]["val_images"] == len(tuned_on[0])
    assert result.per_image["name"].tolist() == _names(demo_prepared.out_dir, "test")


@slow
def test_changing_test_masks_does_not_change_the_tuned_postprocess(tuned_eval, demo_prepared, tmp_path):
    result, _, _ = tuned_eval
    root = Path(shutil.copytree(demo_prepared.out_dir, tmp_path / "data"))
    for mask_path in (root / "masks" / "test").glob("*.png"):
        mask = np.zeros_like(cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE))
        mask[:8, :8] = 1
        cv2.imwrite(str(mask_path), mask)
    changed = evaluate_run(result.run_dir, split="test", data_root=root, n_boot=0, device="cpu", out_dir=tmp_path / "eval")
    assert changed.postprocess == result.postprocess
    pd.testing.assert_frame_equal(pd.read_csv(changed.out_dir / "postprocess_grid.csv"),
                                  pd.read_csv(result.out_dir / "postprocess_grid.csv"))
    assert changed.per_image["true_area"].eq(64).all()  # the edit did reach the evaluated split
    assert not changed.per_image["true_area"].equals(result.per_image["true_area"])


@slow
def test_load_eval_round_trip_and_predicted_masks(tuned_eval):
    result, _, _ = tuned_eval
    loaded = load_eval(result.out_dir)
    assert loaded.postprocess == result.postprocess
    assert loaded.metrics == result.metrics
    assert (loaded.split, loaded.checkpoint, loaded.data_root) == (result.split, result.checkpoint, result.data_root)
    pd.testing.assert_frame_equal(loaded.per_image, result.per_image)
    probs = np.load(loaded.probs_path)
    assert probs.dtype == np.uint8 and probs.shape == (len(loaded.per_image), 64, 64)
    for index, row in loaded.per_image.iterrows():
        assert np.count_nonzero(predicted_mask(loaded, index, postprocessed=False)) == row.pred_area
        assert np.count_nonzero(predicted_mask(loaded, index)) == row.pp_area
    assert set(result.per_image.columns) == {"name", "patient", "seen", "positive", "true_area", "pred_area", "dice",
                                             "pp_area", "pp_dice", "max_prob"}


@slow
def test_seen_unseen_breakdown_of_an_evaluation_adds_up(tuned_eval, demo_prepared):
    """The demo's official split shares patients between train and test: both groups are there."""
    result, _, _ = tuned_eval
    labels = pd.read_csv(demo_prepared.out_dir / "labels.csv", dtype={"name": str, "patient": str})
    train_patients = set(labels.loc[labels["split"] == "train", "patient"])
    per_image = result.per_image
    assert per_image["seen"].tolist() == [p in train_patients for p in per_image["patient"]]
    assert 0 < per_image["seen"].sum() < len(per_image)
    height, width = result.metrics["image_shape"]
    for decision, pred_area in (("mmseg", "pred_area"), ("postprocessed", "pp_area")):
        seen, unseen = (result.metrics["by_patient_seen"][decision][g] for g in ("seen", "unseen"))
        assert (seen["images"], unseen["images"]) == (per_image["seen"].sum(), (~per_image["seen"]).sum())
        tp, fp, fn, tn = np.add(seen["counts"], unseen["counts"])
        assert tp + fn == per_image["true_area"].sum() and tp + fp == per_image[pred_area].sum()
        assert tp + fp + fn + tn == len(per_image) * height * width
        assert 2 * tp / (2 * tp + fp + fn) == pytest.approx(result.metrics[decision]["fg_dice"])
        for group in (seen, unseen):
            low, high = group["ci"]["image_dice"]
            assert low <= group["metrics"]["image_dice"] <= high
    seen_dice = per_image.loc[per_image["seen"], "dice"].mean()
    assert result.metrics["by_patient_seen"]["mmseg"]["seen"]["metrics"]["image_dice"] == pytest.approx(seen_dice)
    assert result.metrics["split_mode"] == "official"


@slow
def test_comparison_table_has_seed_rows_and_the_empty_baseline(tuned_eval, tmp_path):
    result, _, _ = tuned_eval
    table = comparison_table([result, load_eval(result.out_dir)])
    seed = table[table["config"] == "seed (reported)"].set_index("lr")
    assert sorted(seed.index) == sorted(SEED_RESULTS)
    assert seed.loc[0.01, "mIoU"] == 76.48 and seed.loc[0.01, "mDice"] == 84.68
    assert seed["fg_dice"].isna().all()
    baseline = table[table["config"] == "all-empty baseline"]
    assert len(baseline) == 1  # one per split and data root
    negative_fraction = (~result.per_image["positive"]).mean()
    assert baseline["image_dice"].item() == pytest.approx(100 * negative_fraction)
    assert baseline["fg_dice"].item() == 0.0
    runs = table[table["config"] == "demo_unet-s5-d16-c16_ce-dice_128x128"]
    assert len(runs) == 2 and runs["lr"].eq(0.003).all()
    assert runs["mDice"].eq(result.metrics["mmseg"]["mDice"]).all()
    assert (runs["image_dice_lo"] <= runs["image_dice"]).all() and (runs["image_dice"] <= runs["image_dice_hi"]).all()
    assert runs["split_mode"].eq("official").all() and seed["split_mode"].eq("seed").all()
    assert runs["images_seen"].eq(result.per_image["seen"].sum()).all()
    json_path, csv_path = write_comparison(table, tmp_path)
    assert pd.read_json(json_path)["config"].tolist() == table["config"].tolist()
    assert len(pd.read_csv(csv_path)) == len(table)


@slow
def test_tta_is_flip_equivariant_and_keeps_the_mmseg_decision(trained_demo_run, demo_prepared, tmp_path):
    model, cfg, _ = evaluate.load_model(trained_demo_run.work_dir, device="cpu")
    plain = predict_split(model, cfg, demo_prepared.out_dir, "val", batch_size=4)
    tta = predict_split(model, cfg, demo_prepared.out_dir, "val", batch_size=4, tta=True)
    np.testing.assert_array_equal(tta.default_counts, plain.default_counts)
    assert np.any(tta.probs != plain.probs)
    root = Path(shutil.copytree(demo_prepared.out_dir, tmp_path / "flipped"))
    for folder in ("images", "masks"):
        for path in (root / folder / "val").glob("*.png"):
            cv2.imwrite(str(path), cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[:, ::-1])
    mirrored = predict_split(model, cfg, root, "val", batch_size=4, tta=True)
    difference = np.abs(mirrored.probs.astype(int) - tta.probs[:, :, ::-1].astype(int))
    assert difference.max() <= 1  # the same average, up to float rounding


@slow
def test_sigmoid_model_uses_the_sigmoid_and_the_head_threshold(demo_prepared):
    from mmengine.config import Config
    from mmseg.apis import init_model

    import helpers.dataset  # noqa: F401
    import helpers.modeling  # noqa: F401
    from helpers import paths
    from helpers.modeling.mmseg_metric import PneumothoraxMetric

    cfg = Config.fromfile(str(paths.config_path("fcn-unet-s5-d16_unet-sigmoid_1xb16-0.01-20k_pneumothorax-512x512")))
    cfg.model.backbone.base_channels = 8
    cfg.model.decode_head.update(in_channels=8, channels=8)
    cfg.model.data_preprocessor.size = (64, 64)
    cfg.test_dataloader.update(num_workers=0, persistent_workers=False)
    for transform in cfg.test_dataloader.dataset.pipeline:
        if transform["type"] == "Resize":
            transform["scale"] = (64, 64)
    torch.manual_seed(0)
    model = init_model(cfg, None, device="cpu")
    # an untrained head puts every probability near one value: move its threshold to their median
    median = np.median(predict_split(model, cfg, demo_prepared.out_dir, "val", batch_size=4).probs)
    model.decode_head.threshold = threshold = (median + 0.5) / 255
    preds = predict_split(model, cfg, demo_prepared.out_dir, "val", batch_size=4)
    metric = PneumothoraxMetric()
    metric.dataset_meta = {"classes": ("background", "pneumothorax")}
    loader = evaluate.build_split_loader(cfg, demo_prepared.out_dir, "val", 4)
    with torch.no_grad():
        for batch in loader:
            metric.process(batch, [sample.to_dict() for sample in model.test_step(batch)])
    theirs = metric.compute_metrics(metric.results)
    ours = pooled_metrics(preds.default_counts)
    for key in ("aAcc", "mIoU", "mDice"):
        assert np.float32(ours[key]) == np.float32(theirs[key]), key
    # the stored probability is the sigmoid: the head's threshold on it gives mmseg's decision
    assert 0.2 < preds.default_pred.mean() < 0.8
    np.testing.assert_array_equal(preds.probs > threshold * 255, preds.default_pred)


@slow
def test_parity_with_runner_test_holds_when_pneumothorax_is_predicted(demo_prepared, tmp_path):
    """A model two iterations old predicts pneumothorax on many pixels: the parity is not 0 against 0."""
    from helpers.modeling.train import TrainParams, run_training

    run = run_training(TrainParams(config="demo_unet-s5-d16-c16_ce-dice_128x128", data_root=str(demo_prepared.out_dir),
                                   img_size=64, max_iters=2, val_interval=2, work_dir=str(tmp_path / "run")))
    result = evaluate_run(run.work_dir, split="test", postprocess="none", n_boot=0, device="cpu", out_dir=tmp_path / "eval")
    ours = result.metrics["mmseg"]
    assert 0 < ours["IoU.pneumothorax"] < 100 and result.per_image["pred_area"].sum() > 0
    theirs = _runner_test(run.work_dir, result.checkpoint, "test", tmp_path / "runner")
    for key in ("aAcc", "mIoU", "mDice", "IoU.pneumothorax", "Dice.pneumothorax"):
        assert np.float32(ours[key]) == np.float32(theirs[key]), (key, ours[key], theirs[key])


def test_comparison_label_keeps_dotted_config_names(tmp_path):
    """Config names hold dots (``...-0.01-20k...``): the label must not be cut at the first one."""
    from helpers.evaluate import _run_label

    name = "fcn-unet-s5-d16_unet_1xb16-0.01-20k_pneumothorax-512x512"
    (tmp_path / "manifest.json").write_text(json.dumps({"parameters": {"config": name}, "lr": 0.01}))
    assert _run_label(tmp_path) == (name, 0.01)
