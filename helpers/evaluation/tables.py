"""The tables 04_evaluate shows and writes: one run's metrics, its seen / unseen breakdown, the post-processing
schemes side by side, and the comparison of every evaluated run (and every run that could not be evaluated, as
a failed row) with the seed's reported numbers and the all-empty baseline (``comparison.csv``). Each table for
reading has at most :data:`MAX_TABLE_COLUMNS` columns (:func:`reading_table`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

from helpers.core import run_folders
from helpers.core.fileio import atomic_write_json, atomic_write_text, json_safe
from helpers.core.metrics import HEADLINE, summary_metrics
from helpers.evaluation import seen_unseen
from helpers.evaluation.report import EvalResult

SEED_RESULTS: dict[float, dict[str, float]] = {
    0.01: {"mIoU": 76.48, "mDice": 84.68},
    0.001: {"mIoU": 61.06, "mDice": 63.69},
    0.0001: {"mIoU": 58.87, "mDice": 62.42},
}

PERCENT_ALREADY = ("aAcc", "mIoU", "mDice", "IoU.pneumothorax", "Dice.pneumothorax")  # mmseg's, in %
# 04's per-run table: counts as integers, every rate in % (fg_iou / fg_dice are IoU / Dice.pneumothorax as
# fractions, so they are left out), the AUC as a fraction, as it is usually quoted.
TABLE_COUNTS = ("images", "positive_images", "det_tp", "det_fp", "det_fn", "det_tn")
TABLE_PERCENTS = (
    "aAcc",
    "mIoU",
    "mDice",
    "IoU.pneumothorax",
    "Dice.pneumothorax",
    "image_dice",
    "image_dice_positive",
    "empty_baseline_image_dice",
    "sensitivity",
    "specificity",
)
TABLE_FRACTIONS = ("det_auc",)
STATUS_OK, STATUS_FAILED, STATUS_REFERENCE = "ok", "failed", "reference"  # the comparison's ``status`` column


@dataclass
class FailedEvaluation:
    """A run (or ensemble) that could not be evaluated, and why."""

    run_dir: Path
    split: str
    error: str


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


def comparison_table(results: list[EvalResult], failures: Sequence[FailedEvaluation] = ()) -> pd.DataFrame:
    """One row per evaluated run, one per run in ``failures`` (no metrics, its ``error`` said), the seed's
    reported numbers, and the all-empty baseline per split; ``status`` says which (ok, failed, reference).

    Every value is in % (mmseg's mIoU and mDice as they are, the fractions times 100); ``*_lo`` / ``*_hi``
    are the bootstrap interval of the mmseg decision's metric, ``pp_image_dice`` is after post-processing.
    ``split_mode`` is the prepared data's split (02_prepare); ``*_seen`` / ``*_unseen``: see
    :func:`helpers.seen_unseen.seen_unseen_columns`.
    """
    rows = []
    baselines: dict[tuple[str, str], dict] = {}
    for result in results:
        config, lr = run_folders.run_label(result.run_dir)
        mmseg, ci = result.metrics["mmseg"], result.metrics["ci"]
        row = {
            "config": config,
            "lr": lr,
            "status": STATUS_OK,
            "split": result.split,
            "split_mode": result.metrics.get("split_mode", "unknown"),
            "images": mmseg["images"],
        }
        for key in HEADLINE:
            row[key] = _pct(key, mmseg[key])
            low, high = ci.get("mmseg", {}).get(key, (None, None))
            row[f"{key}_lo"], row[f"{key}_hi"] = _pct(key, low), _pct(key, high)
        row["det_auc"] = mmseg.get("det_auc")  # a fraction, as it is usually quoted
        row["pp_image_dice"] = _pct("image_dice", result.metrics["postprocessed"]["image_dice"])
        low, high = ci.get("postprocessed", {}).get("image_dice", (None, None))
        row["pp_image_dice_lo"], row["pp_image_dice_hi"] = _pct("image_dice", low), _pct("image_dice", high)
        row.update(seen_unseen.seen_unseen_columns(result.metrics))
        row["checkpoint"] = str(result.checkpoint)
        row["error"] = ""
        rows.append(row)
        key = (result.split, str(result.data_root))
        if key not in baselines:
            summary = _empty_baseline(result)
            baselines[key] = {
                "config": "all-empty baseline",
                "lr": np.nan,
                "status": STATUS_REFERENCE,
                "split": result.split,
                "split_mode": row["split_mode"],
                "images": summary["images"],
                **{k: _pct(k, summary[k]) for k in HEADLINE},
                "pp_image_dice": _pct("image_dice", summary["image_dice"]),
            }
    failed_rows = []
    for failure in failures:
        config, lr = run_folders.run_label(failure.run_dir)
        failed_rows.append(
            {
                "config": config,
                "lr": lr,
                "status": STATUS_FAILED,
                "split": failure.split,
                "checkpoint": "",
                "error": failure.error,
            }
        )
    seed_rows = [
        {
            "config": "seed (reported)",
            "lr": lr,
            "status": STATUS_REFERENCE,
            "split": "seed's val (random 80/20)",
            "split_mode": "seed",
            **values,
        }
        for lr, values in SEED_RESULTS.items()
    ]
    table = pd.DataFrame(rows + failed_rows + list(baselines.values()) + seed_rows).reset_index(drop=True)
    table["error"] = table["error"].fillna("") if "error" in table else ""
    return table


def metrics_table(result: EvalResult) -> Styler:
    """One run's metrics for reading: the mmseg decision beside the post-processed masks, counts as
    integers, rates in % with 2 decimals, the AUC with 3."""
    columns = {"mmseg decision": result.metrics["mmseg"], "post-processed": result.metrics["postprocessed"]}
    rows = {}
    for key in TABLE_COUNTS + TABLE_PERCENTS + TABLE_FRACTIONS:
        label = f"{key} (%)" if key in TABLE_PERCENTS else key
        rows[label] = {
            name: (_pct(key, values.get(key)) if key in TABLE_PERCENTS else values.get(key))
            for name, values in columns.items()
        }
    table = pd.DataFrame(rows).T.astype(float)
    percents = [f"{key} (%)" for key in TABLE_PERCENTS]
    return (
        table.style.format("{:.0f}", subset=pd.IndexSlice[list(TABLE_COUNTS), :], na_rep="–")
        .format("{:.2f}", subset=pd.IndexSlice[percents, :], na_rep="–")
        .format("{:.3f}", subset=pd.IndexSlice[list(TABLE_FRACTIONS), :], na_rep="–")
    )


def seen_unseen_style(result: EvalResult) -> Styler:
    """One run's metrics of the images whose patient was seen in training and of the unseen ones
    (:func:`helpers.seen_unseen.seen_unseen_table`) for reading: counts as integers, metrics in % with 2 decimals
    and their intervals beside them."""
    table = seen_unseen.seen_unseen_table(result.metrics["by_patient_seen"])
    metric_columns = [c for c in table.columns if c not in ("decision", "group", "images", "patients")]
    for column in metric_columns:
        key = column.removesuffix("_lo").removesuffix("_hi")
        table[column] = [_pct(key, value) for value in table[column]]
    keys = [c for c in metric_columns if not c.endswith(("_lo", "_hi"))]
    return reading_table(table, ["decision", "group", "images", "patients", *keys], intervals=keys)


# A report's table stays narrower than the page (1,400 px at 1440x900) with at most this many columns: each
# cell holds one short name or number, an interval breaks at its spaces, and every other number is in the CSV.
MAX_TABLE_COLUMNS = 10
INTERVAL_HEADER = " [95 % CI]"
COUNT_COLUMNS = ("images", "patients", "images_seen", *TABLE_COUNTS)


def interval_text(value: float, low: float = np.nan, high: float = np.nan, digits: int = 2) -> str:
    """``96.33 [94.57, 98.09]``; the value alone without an interval, '–' without a value."""
    if pd.isna(value):
        return "–"
    if pd.isna(low) or pd.isna(high):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def run_name(config: str, lr: float | None) -> str:
    """``demo lr 0.003``; the config alone for a row without a learning rate (a baseline)."""
    return str(config) if lr is None or pd.isna(lr) else f"{config} lr {lr:g}"


def _cell_text(value) -> str:
    if isinstance(value, str):
        return value or "–"
    if value is None or pd.isna(value):
        return "–"
    return f"{value:.2f}" if isinstance(value, (float, np.floating)) else str(value)


def reading_table(
    table: pd.DataFrame,
    columns: Sequence[str],
    *,
    intervals: Sequence[str] = (),
    fractions: Sequence[str] = TABLE_FRACTIONS,
    labels: dict[str, str] | None = None,
) -> Styler:
    """``columns`` of ``table`` as text for reading, at most :data:`MAX_TABLE_COLUMNS`: ``run`` is config and lr,
    each of ``intervals`` its value with ``<name>_lo`` / ``<name>_hi`` (:func:`interval_text`), counts as
    integers, ``fractions`` with 3 decimals, other numbers (%) with 2; '–' where a value is missing. ``labels``
    renames headers."""
    if len(columns) > MAX_TABLE_COLUMNS:
        raise ValueError(f"{len(columns)} columns: a report's table holds at most {MAX_TABLE_COLUMNS}")
    labels = labels or {}
    missing = pd.Series(np.nan, index=table.index)
    shown: dict[str, list[str]] = {}
    for name in columns:
        header = labels.get(name, name)
        if name == "run" and name not in table:
            lrs = table["lr"] if "lr" in table else missing
            shown[header] = [run_name(config, lr) for config, lr in zip(table["config"], lrs, strict=True)]
            continue
        values = table[name] if name in table else missing
        if name in intervals:
            low, high = (table[f"{name}_{end}"] if f"{name}_{end}" in table else missing for end in ("lo", "hi"))
            shown[header + INTERVAL_HEADER] = [interval_text(*triple) for triple in zip(values, low, high, strict=True)]
        elif name in fractions:
            shown[header] = ["–" if pd.isna(v) else f"{v:.3f}" for v in values]
        elif name in COUNT_COLUMNS:
            shown[header] = ["–" if pd.isna(v) else f"{v:.0f}" for v in values]
        else:
            shown[header] = [_cell_text(v) for v in values]
    return pd.DataFrame(shown).style.hide(axis="index").format(escape="html")


COMPARISON_HEADLINE = (
    "run",
    "split",
    "status",
    "images",
    "mIoU",
    "mDice",
    "fg_dice",
    "image_dice",
    "pp_image_dice",
    "det_auc",
)
COMPARISON_DETAILS = (
    "run",
    "split",
    "split_mode",
    "mIoU",
    "mDice",
    "fg_iou",
    "image_dice_positive",
    "image_dice_seen",
    "image_dice_unseen",
    "error",
)


def comparison_style(table: pd.DataFrame) -> tuple[Styler, Styler]:
    """:func:`comparison_table` for reading, as two tables of at most 10 columns (every column is in
    comparison.csv): the headline (the seed's reported mIoU / mDice beside ours, image Dice with its interval)
    and the details (the other intervals, seen / unseen patients, errors)."""
    headline = reading_table(table, COMPARISON_HEADLINE, intervals=("image_dice", "pp_image_dice"))
    details = reading_table(table, COMPARISON_DETAILS, intervals=("mIoU", "mDice", "fg_iou", "image_dice_positive"))
    return headline, details


def schemes_style(table: pd.DataFrame) -> Styler:
    """:func:`helpers.evaluation.schemes.schemes_table` for reading (9 columns): each scheme's tuned values, its
    best val image Dice, and the evaluated split's image Dice with its interval."""
    columns = ["run", "split"]
    labels = {}
    for scheme in ("triplet", "dual_threshold"):
        columns += [scheme, f"{scheme}_val_image_dice", f"{scheme}_image_dice"]
        labels.update({f"{scheme}_val_image_dice": "val image_dice", f"{scheme}_image_dice": "image_dice"})
    intervals = [f"{scheme}_image_dice" for scheme in ("triplet", "dual_threshold")]
    return reading_table(table, [*columns, "winner_on_val"], intervals=intervals, labels=labels)


def write_comparison(table: pd.DataFrame, out_dir: str | Path) -> tuple[Path, Path]:
    """``comparison.json`` (records, NaN as null) and ``comparison.csv`` in ``out_dir``, atomically."""
    out_dir = Path(out_dir)
    json_path, csv_path = out_dir / "comparison.json", out_dir / "comparison.csv"
    atomic_write_json(json_path, json_safe(table.to_dict(orient="records")))
    atomic_write_text(csv_path, table.to_csv(index=False))
    return json_path, csv_path
