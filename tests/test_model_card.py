"""The model card: evaluate_predictions writes MODEL_CARD.md beside the evaluation, from what the evaluation and the
prepared folder hold (split counts, metrics with their intervals, seen / unseen, the post-processing, the data
profile, intended use and limits), and the index links it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from helpers.core import run_folders
from helpers.core.metrics import pixel_counts
from helpers.data.prepared_folder import read_labels
from helpers.evaluation import PredictionSource, evaluate_predictions, model_cards, write_model_card
from helpers.evaluation.paired import PAIRED_FILE
from helpers.postprocessing import Predictions
from helpers.workflow.index import write_index

SIZE = 16


def _predictions(rows: pd.DataFrame, rng: np.random.Generator) -> Predictions:
    """A model that finds each positive image's square, misses a fifth of them and adds a blob to a tenth of the
    negatives."""
    n = len(rows)
    truth = np.zeros((n, SIZE, SIZE), bool)
    probs = np.zeros((n, SIZE, SIZE), np.uint8)
    for i, positive in enumerate(rows["has_pneumo"].to_numpy(bool)):
        if positive:
            truth[i, 4:9, 4:9] = True
            if rng.random() > 0.2:
                probs[i, 4:9, 5:9] = 220
        elif rng.random() < 0.1:
            probs[i, 12:14, 12:14] = 200
    pred = probs > 127
    return Predictions(
        names=rows["name"].tolist(),
        probs=probs,
        truth=truth,
        default_counts=np.array([pixel_counts(p, t) for p, t in zip(pred, truth, strict=True)]),
        max_prob=probs.reshape(n, -1).max(1) / 255,
        default_pred=pred,
    )


def test_the_model_card_says_the_data_split_metrics_postprocessing_and_limits(demo_prepared, tmp_path):
    root = demo_prepared.out_dir
    labels = read_labels(root)
    train_patients = set(labels.loc[labels["split"] == "train", "patient"])
    test, val = labels[labels["split"] == "test"], labels[labels["split"] == "val"]
    groups = pd.DataFrame({"patient": test["patient"].to_numpy(), "seen": test["patient"].isin(train_patients)})
    rng = np.random.default_rng(0)
    run_dir = tmp_path / "outputs" / "runs" / "demo_cfg" / "lr0.003"
    run_dir.mkdir(parents=True)
    out_dir = run_folders.eval_dir(run_dir, "test", tmp_path / "outputs")
    result = evaluate_predictions(
        _predictions(test, rng),
        "test",
        out_dir,
        source=PredictionSource(
            run_dir=run_dir,
            checkpoint=run_dir / "best_mDice_iter_10.pth",
            members=[run_dir / "best_mDice_iter_10.pth"],
            decision={"kind": "argmax"},
            model_input=(SIZE, SIZE),
        ),
        data_root=root,
        split_mode="official",
        groups=groups,
        val=_predictions(val, rng),
        n_boot=50,
    )
    card_path = out_dir / run_folders.MODEL_CARD_FILE
    card = card_path.read_text()
    assert json.loads((out_dir / run_folders.EVAL_INFO_FILE).read_text())["files"]["model_card"] == card_path.name

    assert card.startswith("# Model card: demo_cfg, lr 0.003 (test)")
    assert "**Demo data**" in card  # the prepared folder was made from the generated demo dataset
    for split, part in labels.groupby("split"):  # images, patients, positives of every split
        assert f"| {split} | {len(part)} | {part['patient'].nunique()} | {int(part['has_pneumo'].sum())} |" in card
    mmseg, ci = result.metrics["mmseg"], result.metrics["ci"]["mmseg"]
    low, high = ci["image_dice"]
    row = f"| per-image Dice (SIIM-ACR metric) | {100 * mmseg['image_dice']:.2f} ({100 * low:.2f}–{100 * high:.2f}) |"
    assert row in card
    seen = int(groups["seen"].sum())
    assert seen > 0  # the official split leaks patients: the card says how many test images were seen
    assert f"{seen} belong to a patient who also has images in the train split" in card
    assert f"tuned on the val predictions ({len(val)} images)" in card
    assert result.postprocess.describe() in card
    assert "Not a medical device and not for clinical decisions" in card
    assert "stage-2 test labels" in card and "NIH ChestX-ray14" in card

    cards = model_cards(tmp_path / "outputs")
    assert cards["card"].tolist() == [card_path]
    index = write_index(tmp_path / "outputs").read_text()
    assert f'href="eval/demo_cfg_lr0.003/test/{run_folders.MODEL_CARD_FILE}"' in index

    assert "## Compared with the best run" not in card  # 04 writes paired.csv after every run is scored
    paired = pd.DataFrame(
        [
            {
                "config": "demo_cfg",
                "lr": 0.003,
                "split": "test",
                "reference": "other lr 0.001",
                "images": len(test),
                "patients": test["patient"].nunique(),
                "image_dice": 80.0,
                "diff": -1.5,
                "diff_lo": -3.25,
                "diff_hi": 0.25,
                "detectable": 1.75,
                "verdict": "no detectable difference",
            }
        ]
    )
    paired.to_csv(tmp_path / "outputs" / "eval" / PAIRED_FILE, index=False)
    card = write_model_card(out_dir).read_text()
    assert "## Compared with the best run" in card and "(other lr 0.001)" in card
    assert "-1.50 points [-3.25, +0.25]" in card and "**no detectable difference**" in card
    assert "detects a difference of 1.75 points or more" in card
