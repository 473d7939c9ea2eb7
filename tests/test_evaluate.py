"""helpers.evaluation (through helpers.workflow.evaluate_runs): tuning on val only, parity with mmseg's Runner.test(),
reload, tables, fail-fast data checks."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from helpers import evaluation
from helpers.core import run_folders
from helpers.core.metrics import pooled_metrics
from helpers.core.paths import DEMO_CONFIG
from helpers.data.prepared_folder import PreparedDataError
from helpers.evaluation import (
    SEED_RESULTS,
    comparison_table,
    load_eval,
    metrics_table,
    predicted_mask,
    write_comparison,
)
from helpers.evaluation.tables import MAX_TABLE_COLUMNS, interval_text, reading_table
from helpers.modeling.inference import LoadedModel, build_split_loader, load_model, predict_split
from helpers.postprocessing import PostProcess
from helpers.workflow import evaluate_runs
from helpers.workflow.evaluate_runs import evaluate_run

# ----- with a trained model (slow) -----

slow = pytest.mark.slow


@pytest.fixture(scope="module")
def tuned_eval(trained_demo_run, tmp_path_factory):
    """evaluate_run on test with tuning, recording the splits predict_split and tune_postprocess saw."""
    calls: list[str] = []
    tuned_on: list[list[str]] = []
    real_predict, real_tune = evaluate_runs.predict_split, PostProcess.tune.__func__

    def spy_predict(model, data_root, split, *args, **kwargs):
        calls.append(split)
        return real_predict(model, data_root, split, *args, **kwargs)

    def spy_tune(val, *args, **kwargs):
        tuned_on.append(list(val.names))
        return real_tune(PostProcess, val, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate_runs, "predict_split", spy_predict)
        patch.setattr(PostProcess, "tune", classmethod(lambda cls, val: spy_tune(val)))
        result = evaluate_run(
            trained_demo_run.work_dir,
            split="test",
            n_boot=20,
            device="cpu",
            out_dir=tmp_path_factory.mktemp("eval") / "test",
        )
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
    # as `mim test` in a fresh process: the dumped config names the training's visualizer, which mmengine keeps
    # per name in this process, and reusing it would write the test's scalars into the training's event files
    cfg.visualizer.name = f"test:{work_dir}"
    return Runner.from_cfg(cfg).test()


@slow
@pytest.mark.parametrize("split", ["val", "test"])
def test_pooled_metrics_equal_mmseg_runner_test(trained_demo_run, tmp_path, split):
    result = evaluate_run(
        trained_demo_run.work_dir, split=split, postprocess="none", n_boot=0, device="cpu", out_dir=tmp_path / "eval"
    )
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
    changed = evaluate_run(
        result.run_dir, split="test", prepared_root=root, n_boot=0, device="cpu", out_dir=tmp_path / "eval"
    )
    assert changed.postprocess == result.postprocess
    pd.testing.assert_frame_equal(
        pd.read_csv(changed.out_dir / run_folders.GRID_FILE), pd.read_csv(result.out_dir / run_folders.GRID_FILE)
    )
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
    assert set(result.per_image.columns) == {
        "name",
        "patient",
        "seen",
        "positive",
        "true_area",
        "pred_area",
        "dice",
        "pp_area",
        "pp_dice",
        "max_prob",
    }


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
    ours = table[table["config"] == DEMO_CONFIG]
    assert len(ours) == 2 and ours["lr"].eq(0.003).all()
    assert ours["mDice"].eq(result.metrics["mmseg"]["mDice"]).all()
    assert ours["det_auc"].eq(result.metrics["mmseg"]["det_auc"]).all()  # a fraction, as metrics.json holds it
    assert (ours["image_dice_lo"] <= ours["image_dice"]).all() and (ours["image_dice"] <= ours["image_dice_hi"]).all()
    assert ours["split_mode"].eq("official").all() and seed["split_mode"].eq("seed").all()
    assert ours["images_seen"].eq(result.per_image["seen"].sum()).all()
    headline, details = (style.to_html() for style in evaluation.comparison_style(table))
    seed_row = re.search(r"<tr>\s*<td[^>]*>seed \(reported\) lr 0.01</td>.*?</tr>", headline, re.S).group(0)
    assert ">76.48<" in seed_row and ">84.68<" in seed_row  # the seed's numbers, in columns that hold them
    first = ours.iloc[0]
    assert f"{first.image_dice:.2f} [{first.image_dice_lo:.2f}, {first.image_dice_hi:.2f}]" in headline
    for html in (headline, details):
        assert max(row.count("<td") + row.count("<th") for row in html.split("<tr>")[1:]) <= MAX_TABLE_COLUMNS
        assert not re.search(r">-?\d+\.\d{3,}", html.replace(">0.", ">X")), "a number with more than 2 decimals"
    json_path, csv_path = write_comparison(table, tmp_path)
    assert pd.read_json(json_path)["config"].tolist() == table["config"].tolist()
    assert len(pd.read_csv(csv_path)) == len(table)


@slow
def test_tta_is_flip_equivariant_and_keeps_the_mmseg_decision(trained_demo_run, demo_prepared, tmp_path):
    model = load_model(trained_demo_run.work_dir, device="cpu")
    plain = predict_split(model, demo_prepared.out_dir, "val", batch_size=4)
    tta = predict_split(model, demo_prepared.out_dir, "val", batch_size=4, tta=True)
    np.testing.assert_array_equal(tta.default_counts, plain.default_counts)
    assert np.any(tta.probs != plain.probs)
    root = Path(shutil.copytree(demo_prepared.out_dir, tmp_path / "flipped"))
    for folder in ("images", "masks"):
        for path in (root / folder / "val").glob("*.png"):
            cv2.imwrite(str(path), cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[:, ::-1])
    mirrored = predict_split(model, root, "val", batch_size=4, tta=True)
    difference = np.abs(mirrored.probs.astype(int) - tta.probs[:, :, ::-1].astype(int))
    assert difference.max() <= 1  # the same average, up to float rounding


@slow
def test_sigmoid_model_uses_the_sigmoid_and_the_head_threshold(demo_prepared):
    from mmengine.config import Config
    from mmseg.apis import init_model

    import helpers.data.mmseg_dataset  # noqa: F401
    import helpers.modeling  # noqa: F401
    from helpers.core import paths
    from helpers.modeling.mmseg_metric import PneumothoraxMetric

    cfg = Config.fromfile(str(paths.config_path("fcn-unet-s5-d16_unet-sigmoid_1xb16-0.01-20k_pneumothorax-512x512")))
    loaded = LoadedModel(
        net=None,
        cfg=cfg,
        checkpoint=Path("untrained"),
        run_dir=Path("untrained"),
        size=(64, 64),
        threshold=0.5,
        sigmoid=True,
    )
    cfg.model.backbone.base_channels = 8
    cfg.model.decode_head.update(in_channels=8, channels=8)
    cfg.model.data_preprocessor.size = (64, 64)
    cfg.test_dataloader.update(num_workers=0, persistent_workers=False)
    for transform in cfg.test_dataloader.dataset.pipeline:
        if transform["type"] == "Resize":
            transform["scale"] = (64, 64)
    torch.manual_seed(0)
    model = loaded.net = init_model(cfg, None, device="cpu")
    # an untrained head puts every probability near one value: move its threshold to their median
    median = np.median(predict_split(loaded, demo_prepared.out_dir, "val", batch_size=4).probs)
    model.decode_head.threshold = threshold = (median + 0.5) / 255
    preds = predict_split(loaded, demo_prepared.out_dir, "val", batch_size=4)
    metric = PneumothoraxMetric()
    metric.dataset_meta = {"classes": ("background", "pneumothorax")}
    loader = build_split_loader(cfg, demo_prepared.out_dir, "val", 4)
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

    run = run_training(
        TrainParams(
            config=DEMO_CONFIG,
            prepared_root=str(demo_prepared.out_dir),
            img_size=64,
            max_iters=2,
            val_interval=2,
            work_dir=str(tmp_path / "run"),
        )
    )
    result = evaluate_run(
        run.work_dir, split="test", postprocess="none", n_boot=0, device="cpu", out_dir=tmp_path / "eval"
    )
    ours = result.metrics["mmseg"]
    assert 0 < ours["IoU.pneumothorax"] < 100 and result.per_image["pred_area"].sum() > 0
    theirs = _runner_test(run.work_dir, result.checkpoint, "test", tmp_path / "runner")
    for key in ("aAcc", "mIoU", "mDice", "IoU.pneumothorax", "Dice.pneumothorax"):
        assert np.float32(ours[key]) == np.float32(theirs[key]), (key, ours[key], theirs[key])


@slow
def test_the_metrics_table_reads_counts_as_integers_and_rates_in_percent(tuned_eval):
    result, _, _ = tuned_eval
    styled = metrics_table(result)
    table = styled.data
    mmseg = result.metrics["mmseg"]
    assert table.loc["images", "mmseg decision"] == mmseg["images"]
    for key in ("aAcc", "mIoU", "mDice", "Dice.pneumothorax"):  # mmseg's own, already in %
        assert table.loc[f"{key} (%)", "mmseg decision"] == mmseg[key]
    assert table.loc["image_dice (%)", "post-processed"] == pytest.approx(
        100 * result.metrics["postprocessed"]["image_dice"]
    )
    assert "fg_dice" not in table.index and "fg_iou" not in table.index  # the pneumothorax Dice / IoU once, in %
    html = styled.to_html()
    assert f">{mmseg['images']}<" in html and f">{mmseg['images']}.000000<" not in html
    assert f">{mmseg['Dice.pneumothorax']:.2f}<" in html


@slow
def test_the_seen_unseen_table_reads_counts_as_integers_and_metrics_in_percent(tuned_eval):
    """Counts as integers, metrics in % with 2 decimals and their patient-bootstrap interval beside them."""
    from helpers.evaluation.tables import INTERVAL_HEADER, interval_text

    result, _, _ = tuned_eval
    styled = evaluation.seen_unseen_style(result)
    table = styled.data.set_index(["decision", "group"])
    html = styled.to_html()
    for decision in ("mmseg", "postprocessed"):
        for group in ("seen", "unseen"):
            entry = result.metrics["by_patient_seen"][decision][group]
            row = table.loc[(decision, group)]
            assert (row["images"], row["patients"]) == (f"{entry['images']}", f"{entry['patients']}")
            low, high = (np.nan if v is None else 100 * v for v in entry["ci"]["image_dice"])
            expected = interval_text(100 * entry["metrics"]["image_dice"], low, high)
            assert row["image_dice" + INTERVAL_HEADER] == expected and f">{expected}<" in html
            assert f">{entry['images']}<" in html
    assert ".000000" not in html
    assert len(styled.data.columns) <= 10


@slow
def test_known_mmseg_warnings_go_to_the_metrics_not_the_page(trained_demo_run, recwarn):
    """The 2-class demo model makes mmseg advise out_channels=1: kept in library_warnings, not shown."""
    model = load_model(trained_demo_run.work_dir, device="cpu")
    assert any("out_channels = 1" in text for text in model.library_warnings)
    assert not [w for w in recwarn if "out_channels = 1" in str(w.message)]


@slow
def test_evaluating_on_data_of_another_size_stops_naming_both(trained_demo_run, demo_raw_dir, tmp_path):
    from helpers.data.prepare import prepare_dataset

    other = prepare_dataset(demo_raw_dir, tmp_path, img_size=32, workers=1)
    with pytest.raises(PreparedDataError, match=r"64x64.*32x32"):
        evaluate_run(
            trained_demo_run.work_dir, prepared_root=other.out_dir, n_boot=0, device="cpu", out_dir=tmp_path / "eval"
        )
    assert not (tmp_path / "eval").exists()


def test_reading_tables_round_to_what_numbers_mean_and_refuse_to_grow_past_the_page():
    """Percent with 2 decimals (a float32 99.919998 reads 99.92), an interval as `value [low, high]`, counts as
    integers, the AUC with 3 decimals, '–' where a value is missing; more than MAX_TABLE_COLUMNS is refused."""
    table = pd.DataFrame(
        {
            "config": ["demo", "all-empty baseline"],
            "lr": [0.003, np.nan],
            "images": [20.0, 20.0],
            "image_dice": np.array([96.33, 65.0], dtype=np.float32),
            "image_dice_lo": [94.571, np.nan],
            "image_dice_hi": [98.089, np.nan],
            "mDice": np.array([99.91666, np.nan], dtype=np.float32),
            "det_auc": [0.71234, np.nan],
        }
    )
    html = reading_table(table, ["run", "images", "image_dice", "mDice", "det_auc"], intervals=["image_dice"]).to_html()
    assert ">demo lr 0.003<" in html and ">all-empty baseline<" in html and ">20<" in html
    assert ">96.33 [94.57, 98.09]<" in html and ">65.00<" in html and "image_dice [95 % CI]" in html
    assert ">99.92<" in html and "99.916" not in html and ">0.712<" in html and ">–<" in html
    assert interval_text(np.nan) == "–"
    with pytest.raises(ValueError, match="at most"):
        reading_table(table, ["run"] * (MAX_TABLE_COLUMNS + 1))
