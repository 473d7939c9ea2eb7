"""04_evaluate: a trained run -> predictions on one split -> every metric, post-processing, comparison.

Conventions (written into each ``metrics.json`` under ``definitions``):

- **mmseg decision**: the segmentor's own output, exactly what ``Runner.test()`` scores: argmax of the
  softmax classes, or sigmoid > ``decode_head.threshold`` for one-channel models, computed from the logits
  resized to the image's original shape. Its pooled aAcc / mIoU / mDice equal mmseg's ``IoUMetric``.
- **probability**: the pneumothorax probability (``helpers.modeling.inference``, with or without TTA), stored
  as ``uint8 = round(255 p)`` in ``probs.npy``. TTA never changes the mmseg decision.
- **post-processing**: the triplet of ``helpers.postprocess``, tuned on the val split only.

The folder's file names are ``helpers.runs``'s.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mmengine.config import Config
from pandas.io.formats.style import Styler

from helpers import paths, patients, runs
from helpers.dual_threshold import compare_schemes
from helpers.fileio import atomic_write_json, atomic_write_text, json_safe
from helpers.metrics import HEADLINE, cluster_bootstrap_ci, per_image_dice, summary_metrics
from helpers.modeling.inference import LoadedModel, Predictions, default_device, load_model, predict_split
from helpers.postprocess import PostProcess, apply_postprocess, postprocess_counts, tune_postprocess
from helpers.prepared import check_prepared, prepared_pairs
from helpers.provenance import code_version
from helpers.stacks import save_stack

SEED_RESULTS: dict[float, dict[str, float]] = {
    0.01: {"mIoU": 76.48, "mDice": 84.68},
    0.001: {"mIoU": 61.06, "mDice": 63.69},
    0.0001: {"mIoU": 58.87, "mDice": 62.42},
}

DEFINITIONS = {
    "aAcc": "mmseg's pixel accuracy: correctly classified pixels over all pixels of the split, in %.",
    "mIoU": "mmseg's IoUMetric: IoU = I/U per class from pixels pooled over the split, averaged over background and pneumothorax, in %.",
    "mDice": "mmseg's IoUMetric: Dice = 2I/(P+L) per class from pooled pixels, averaged over background and pneumothorax, in %.",
    "IoU.pneumothorax": "The pneumothorax class's pooled IoU alone, in % (NaN when neither truth nor prediction has any).",
    "Dice.pneumothorax": "The pneumothorax class's pooled Dice alone, in %.",
    "fg_iou": "The pneumothorax class's pooled IoU as a fraction.",
    "fg_dice": "The pneumothorax class's pooled Dice as a fraction.",
    "image_dice": "SIIM-ACR competition metric: mean over images of 2|P∩T|/(|P|+|T|), 1 for an empty prediction on an empty truth.",
    "image_dice_positive": "The per-image Dice averaged over images with pneumothorax only.",
    "empty_baseline_image_dice": "The per-image Dice of predicting every mask empty: the fraction of negative images.",
    "sensitivity": "Images with pneumothorax whose predicted area reaches min_area, over all images with pneumothorax.",
    "specificity": "Images without pneumothorax whose predicted area stays below min_area, over all such images.",
    "det_auc": "ROC AUC of the image's maximum pneumothorax probability for telling positive from negative images.",
    "ci": "95 % percentile bootstrap intervals resampling patients with replacement (cluster bootstrap: all images of a drawn patient).",
    "by_patient_seen": patients.SEEN_DEFINITION,
    "mmseg": "Metrics of the segmentor's own decision (argmax, or sigmoid > threshold), identical to Runner.test().",
    "postprocessed": "Metrics after the probability threshold and the minimum component and total areas.",
}


@dataclass
class EvalResult:
    """One run evaluated on one split: where, per-image rows, metrics, and the post-processing used."""

    run_dir: Path
    checkpoint: Path
    split: str
    out_dir: Path
    data_root: Path
    per_image: pd.DataFrame
    metrics: dict
    postprocess: PostProcess
    probs_path: Path


def _config_data_root(cfg: Config) -> Path:
    return paths.resolve(cfg.test_dataloader.dataset.data_root)


def _tune_on_val(model: LoadedModel, data_root: Path, batch_size: int, tta: bool, val: Predictions | None,
                 preds: Predictions, n_boot: int, store: Path | None = None) -> tuple[PostProcess, pd.DataFrame, int, dict]:
    """Tune on the val split (predicted here unless given, into ``store`` when given); its predictions are freed
    on return. The dual threshold is tuned on the same val predictions and scored on ``preds`` (helpers.dual_threshold)."""
    val = val if val is not None else predict_split(model, data_root, "val", batch_size, tta, store=store)
    pp, grid = tune_postprocess(val)
    dual, _ = compare_schemes(val, grid, preds, n_boot)
    return pp, grid, len(val.names), dual


def evaluate_run(run: str | Path, *, split: str = "test", prepared_root: str | Path | None = None, batch_size: int = 8,
                 tta: bool = False, postprocess: str | dict | PostProcess = "tune", out_dir: str | Path | None = None,
                 n_boot: int = 1000, device: str | None = None) -> EvalResult:
    """Predict ``split``, score it (mmseg decision and post-processed), write the results to ``out_dir``.

    ``postprocess``: 'tune' tunes on the val split only (never the evaluated one), 'none' is
    ``PostProcess(0.5, 0, 0)``, a dict or :class:`PostProcess` is used as given; with 'tune' the 1st place's
    dual threshold is tuned and scored beside it. ``prepared_root``: the prepared folder (default: the run's
    config's); its size must be the model's, or larger to score against finer masks (as the seed scored 512
    models on the 1024 masks; ``resolution`` in metrics.json says which). Relative paths are from the
    repository root.
    """
    model = load_model(run, device)
    run_dir, checkpoint = model.run_dir.resolve(), model.checkpoint.resolve()
    data_root = paths.resolve(prepared_root) if prepared_root is not None else _config_data_root(model.cfg)
    width, height = model.size
    if width != height:
        raise ValueError(f"{model.checkpoint}: a {width}x{height} model; 02_prepare writes square images only")
    prepared = check_prepared(data_root, width, larger_ok=True)
    out_dir = paths.resolve(out_dir) if out_dir is not None else runs.eval_dir(run_dir, split)
    # the per-pixel predictions go to disk batch by batch (helpers.stacks), in a scratch folder beside the results:
    # write_evaluation moves the evaluated split's probs.npy and mmseg_pred.npy out of it, the rest is removed
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".predicting-", dir=out_dir) as scratch_name:
        scratch = Path(scratch_name)
        preds = predict_split(model, data_root, split, batch_size, tta, store=scratch / split)
        groups = patients.evaluation_patients(prepared_pairs(data_root), split, preds.names)

        grid = pd.DataFrame()
        dual = None  # the dual-threshold scheme, tuned beside the triplet when postprocess='tune'
        pp_info: dict[str, Any]
        if isinstance(postprocess, str) and postprocess == "tune":
            pp, grid, val_images, dual = _tune_on_val(model, data_root, batch_size, tta, preds if split == "val" else None,
                                                      preds, n_boot, store=scratch / "val")
            pp_info = {"tuned_on": "val", "evaluated_on": split, "val_images": val_images}
            if split == "val":
                pp_info["warning"] = "tuned and evaluated on val: the post-processed metrics are optimistic"
        elif isinstance(postprocess, str) and postprocess == "none":
            pp, pp_info = PostProcess(), {"tuned_on": "given", "evaluated_on": split}
        elif isinstance(postprocess, (dict, PostProcess)):
            pp = postprocess if isinstance(postprocess, PostProcess) else PostProcess(**postprocess)
            pp_info = {"tuned_on": "given", "evaluated_on": split}
        else:
            raise ValueError(f"postprocess must be 'tune', 'none', a dict or a PostProcess, not {postprocess!r}")

        described = {
            "split_mode": prepared.split_mode,
            "postprocess": {**pp.as_dict(), **pp_info},
            "tta": bool(tta),
            "decision": model.decision,
            # the model sees its training size; its probabilities are resized to the masks' size and scored there
            # (the prepared size of data_root: the model's own, or 1024 for the original masks, as the seed did)
            "resolution": {"model_input": [height, width], "evaluated_at": list(preds.probs.shape[1:]),
                           "masks": str(data_root)},
            "library_warnings": model.library_warnings,
        }
        if dual is not None:
            described["dual_threshold"] = dual
        return write_evaluation(preds, pp, out_dir, run_dir=run_dir, checkpoint=checkpoint, split=split,
                                data_root=data_root, n_boot=n_boot, described=described, grid=grid, groups=groups,
                                settings={"batch_size": batch_size, "tta": bool(tta), "device": device or default_device()})


def write_evaluation(preds: Predictions, pp: PostProcess, out_dir: Path, *, run_dir: Path, checkpoint: Path,
                     split: str, data_root: Path, n_boot: int, described: dict, settings: dict,
                     grid: pd.DataFrame, groups: pd.DataFrame) -> EvalResult:
    """Score ``preds`` (the mmseg decision, and post-processed with ``pp``, with bootstrap intervals) and write
    an evaluation folder (helpers.runs' files) to ``out_dir``. ``described`` joins metrics.json (how the
    predictions were made and post-processed), ``settings`` joins eval.json; ``grid`` is the tuning grid;
    ``groups`` (helpers.patients.evaluation_patients) gives each image's patient, for the patient (cluster)
    bootstrap, and whether that patient was seen in training, for the seen/unseen breakdown."""
    pp_counts, pp_area = postprocess_counts(preds, pp)
    counts = preds.default_counts
    min_area = max(1, pp.min_total_area)
    patient_of = groups["patient"].to_numpy()
    metrics = {
        "mmseg": summary_metrics(counts, preds.max_prob),
        "postprocessed": summary_metrics(pp_counts, preds.max_prob, min_area=min_area),
        "ci": {"mmseg": cluster_bootstrap_ci(counts, patient_of, n_boot=n_boot),
               "postprocessed": cluster_bootstrap_ci(pp_counts, patient_of, n_boot=n_boot), "n_boot": n_boot},
        "by_patient_seen": {"mmseg": patients.seen_unseen_metrics(counts, preds.max_prob, groups, n_boot),
                            "postprocessed": patients.seen_unseen_metrics(pp_counts, preds.max_prob, groups, n_boot, min_area=min_area)},
        "split": split,
        "checkpoint": str(checkpoint),
        "image_shape": list(preds.probs.shape[1:]),
        **described,
        "definitions": DEFINITIONS,
    }
    metrics = json_safe(metrics)  # as load_eval reads it back: NaN -> None, tuples -> lists
    per_image = pd.DataFrame({
        "name": preds.names,
        "patient": groups["patient"],
        "seen": groups["seen"],
        "positive": (counts[:, 0] + counts[:, 2]) > 0,
        "true_area": counts[:, 0] + counts[:, 2],
        "pred_area": counts[:, 0] + counts[:, 1],
        "dice": per_image_dice(counts),
        "pp_area": pp_area,
        "pp_dice": per_image_dice(pp_counts),
        "max_prob": preds.max_prob,
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    save_stack(out_dir / runs.PROBS_FILE, preds.probs)  # moved there when already on disk, else written image by image
    save_stack(out_dir / runs.MMSEG_PRED_FILE, preds.default_pred, packed=True)
    atomic_write_text(out_dir / runs.PER_IMAGE_FILE, per_image.to_csv(index=False))
    atomic_write_text(out_dir / runs.GRID_FILE, grid.to_csv(index=False))
    atomic_write_json(out_dir / runs.EVAL_METRICS_FILE, metrics)
    atomic_write_json(out_dir / runs.EVAL_INFO_FILE, {
        "run_dir": str(run_dir), "checkpoint": str(checkpoint), "split": split, "data_root": str(data_root),
        "n_boot": n_boot, "postprocess": pp.as_dict(), **settings, "code_version": code_version(),
        "files": {"metrics": runs.EVAL_METRICS_FILE, "per_image": runs.PER_IMAGE_FILE, "probs": runs.PROBS_FILE,
                  "mmseg_pred": runs.MMSEG_PRED_FILE, "postprocess_grid": runs.GRID_FILE},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return EvalResult(run_dir=run_dir, checkpoint=checkpoint, split=split, out_dir=out_dir, data_root=data_root,
                      per_image=per_image, metrics=metrics, postprocess=pp, probs_path=out_dir / runs.PROBS_FILE)


def load_eval(out_dir: str | Path) -> EvalResult:
    """An :class:`EvalResult` read back from the folder ``evaluate_run`` wrote."""
    out_dir = paths.resolve(out_dir)
    info = json.loads((out_dir / runs.EVAL_INFO_FILE).read_text())
    metrics = json.loads((out_dir / runs.EVAL_METRICS_FILE).read_text())
    per_image = pd.read_csv(out_dir / runs.PER_IMAGE_FILE, dtype={"name": str, "patient": str})
    pp = PostProcess(**info["postprocess"])
    return EvalResult(run_dir=Path(info["run_dir"]), checkpoint=Path(info["checkpoint"]), split=info["split"],
                      out_dir=out_dir, data_root=Path(info["data_root"]), per_image=per_image, metrics=metrics,
                      postprocess=pp, probs_path=out_dir / runs.PROBS_FILE)


def predicted_mask(result: EvalResult, index: int, postprocessed: bool = True) -> np.ndarray:
    """Image ``index``'s predicted mask: post-processed, or mmseg's own decision."""
    if postprocessed:
        probs = np.load(result.probs_path, mmap_mode="r")
        return apply_postprocess(np.asarray(probs[index]), result.postprocess)
    packed = np.load(result.out_dir / runs.MMSEG_PRED_FILE, mmap_mode="r")
    width = int(result.metrics["image_shape"][1])
    return np.unpackbits(np.asarray(packed[index]), axis=-1, count=width).astype(bool)


PERCENT_ALREADY = ("aAcc", "mIoU", "mDice", "IoU.pneumothorax", "Dice.pneumothorax")  # mmseg's, in %
# 04's per-run table: counts as integers, every rate in % (fg_iou / fg_dice are IoU / Dice.pneumothorax as
# fractions, so they are left out), the AUC as a fraction, as it is usually quoted.
TABLE_COUNTS = ("images", "positive_images", "det_tp", "det_fp", "det_fn", "det_tn")
TABLE_PERCENTS = ("aAcc", "mIoU", "mDice", "IoU.pneumothorax", "Dice.pneumothorax", "image_dice",
                  "image_dice_positive", "empty_baseline_image_dice", "sensitivity", "specificity")
TABLE_FRACTIONS = ("det_auc",)


def _pct(key: str, value: float | None) -> float:
    if value is None:
        return np.nan
    return float(value) if key in PERCENT_ALREADY else 100 * float(value)


def _empty_baseline(result: EvalResult) -> dict[str, float]:
    """summary_metrics of predicting every mask empty, from the per-image true areas."""
    height, width = result.metrics["image_shape"]
    true_area = result.per_image["true_area"].to_numpy(np.int64)
    counts = np.stack([np.zeros_like(true_area), np.zeros_like(true_area), true_area, height * width - true_area], 1)
    return summary_metrics(counts)


def comparison_table(results: list[EvalResult]) -> pd.DataFrame:
    """One row per evaluated run, the seed's reported numbers, and the all-empty baseline per split.

    Every value is in % (mmseg's mIoU and mDice as they are, the fractions times 100); ``*_lo`` / ``*_hi``
    are the bootstrap interval of the mmseg decision's metric, ``pp_image_dice`` is after post-processing.
    ``split_mode`` is the prepared data's split (02_prepare); ``*_seen`` / ``*_unseen``: see
    :func:`helpers.patients.seen_unseen_columns`.
    """
    rows = []
    baselines: dict[tuple[str, str], dict] = {}
    for result in results:
        config, lr = runs.run_label(result.run_dir)
        mmseg, ci = result.metrics["mmseg"], result.metrics["ci"]
        row = {"config": config, "lr": lr, "split": result.split, "split_mode": result.metrics.get("split_mode", "unknown"),
               "images": mmseg["images"]}
        for key in HEADLINE:
            row[key] = _pct(key, mmseg[key])
            low, high = ci.get("mmseg", {}).get(key, (None, None))
            row[f"{key}_lo"], row[f"{key}_hi"] = _pct(key, low), _pct(key, high)
        row["pp_image_dice"] = _pct("image_dice", result.metrics["postprocessed"]["image_dice"])
        low, high = ci.get("postprocessed", {}).get("image_dice", (None, None))
        row["pp_image_dice_lo"], row["pp_image_dice_hi"] = _pct("image_dice", low), _pct("image_dice", high)
        row.update(patients.seen_unseen_columns(result.metrics))
        row["checkpoint"] = str(result.checkpoint)
        rows.append(row)
        key = (result.split, str(result.data_root))
        if key not in baselines:
            summary = _empty_baseline(result)
            baselines[key] = {"config": "all-empty baseline", "lr": np.nan, "split": result.split, "split_mode": row["split_mode"],
                              "images": summary["images"], **{k: _pct(k, summary[k]) for k in HEADLINE},
                              "pp_image_dice": _pct("image_dice", summary["image_dice"])}
    seed_rows = [{"config": "seed (reported)", "lr": lr, "split": "seed's val (random 80/20)", "split_mode": "seed", **values}
                 for lr, values in SEED_RESULTS.items()]
    return pd.DataFrame(rows + list(baselines.values()) + seed_rows).reset_index(drop=True)


def metrics_table(result: EvalResult) -> Styler:
    """One run's metrics for reading: the mmseg decision beside the post-processed masks, counts as
    integers, rates in % with 2 decimals, the AUC with 3."""
    columns = {"mmseg decision": result.metrics["mmseg"], "post-processed": result.metrics["postprocessed"]}
    rows = {}
    for key in TABLE_COUNTS + TABLE_PERCENTS + TABLE_FRACTIONS:
        label = f"{key} (%)" if key in TABLE_PERCENTS else key
        rows[label] = {name: (_pct(key, values.get(key)) if key in TABLE_PERCENTS else values.get(key))
                       for name, values in columns.items()}
    table = pd.DataFrame(rows).T.astype(float)
    percents = [f"{key} (%)" for key in TABLE_PERCENTS]
    return (table.style.format("{:.0f}", subset=pd.IndexSlice[list(TABLE_COUNTS), :], na_rep="–")
            .format("{:.2f}", subset=pd.IndexSlice[percents, :], na_rep="–")
            .format("{:.3f}", subset=pd.IndexSlice[list(TABLE_FRACTIONS), :], na_rep="–"))


def seen_unseen_style(result: EvalResult) -> Styler:
    """One run's metrics of the images whose patient was seen in training and of the unseen ones
    (:func:`helpers.patients.seen_unseen_table`) for reading: counts as integers, metrics in % with 2 decimals."""
    table = patients.seen_unseen_table(result.metrics["by_patient_seen"])
    metric_columns = [c for c in table.columns if c not in ("decision", "group", "images", "patients")]
    for column in metric_columns:
        key = column.removesuffix("_lo").removesuffix("_hi")
        table[column] = [_pct(key, value) for value in table[column]]
    return (table.style.format("{:.0f}", subset=["images", "patients"])
            .format("{:.2f}", subset=metric_columns, na_rep="–").hide(axis="index"))


def comparison_style(table: pd.DataFrame) -> Styler:
    """:func:`comparison_table` for reading: image counts as integers, every metric in % with 2 decimals."""
    counts = {column: "{:.0f}" for column in ("images", "images_seen") if column in table}
    return table.style.format(precision=2, na_rep="–").format({**counts, "lr": "{:g}"}, na_rep="–").hide(axis="index")


def write_comparison(table: pd.DataFrame, out_dir: str | Path) -> tuple[Path, Path]:
    """``comparison.json`` (records, NaN as null) and ``comparison.csv`` in ``out_dir``, atomically."""
    out_dir = Path(out_dir)
    json_path, csv_path = out_dir / "comparison.json", out_dir / "comparison.csv"
    atomic_write_json(json_path, json_safe(table.to_dict(orient="records")))
    atomic_write_text(csv_path, table.to_csv(index=False))
    return json_path, csv_path
