"""Seen / unseen: the metrics of the evaluated images whose patient also has images in the train split, and
of the others, each with its patient-level (cluster) bootstrap interval (helpers.data.patients.evaluation_patients
says which image is which)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.core.metrics import cluster_bootstrap_ci, summary_metrics
from helpers.data.patients import TRAINING_SPLIT

SEEN_GROUPS = ("seen", "unseen")
SEEN_METRICS = ("image_dice", "image_dice_positive", "fg_dice")  # the seen / unseen table's metrics
SEEN_DEFINITION = (
    f"seen: the image's patient also has images in the {TRAINING_SPLIT} split (the images the model "
    "was trained on); unseen: the patient has none. Intervals resample patients (cluster bootstrap)."
)


def seen_unseen_metrics(
    counts: np.ndarray,
    scores: np.ndarray | None,
    groups: pd.DataFrame,
    n_boot: int = 1000,
    seed: int = 0,
    min_area: int = 1,
) -> dict:
    """Metrics of the images whose patient was seen in training, and of the others, each with its patient-level
    bootstrap interval; ``counts`` are the pooled ``[tp, fp, fn, tn]`` of each group (they add up to the whole)."""
    counts = np.atleast_2d(counts)
    result: dict = {}
    for group, member in zip(SEEN_GROUPS, (groups["seen"].to_numpy(bool), ~groups["seen"].to_numpy(bool)), strict=True):
        patients = groups["patient"].to_numpy()[member]
        entry = {
            "images": int(member.sum()),
            "patients": int(len(set(patients))),
            "counts": counts[member].sum(axis=0).astype(int).tolist(),
            "metrics": None,
            "ci": {},
        }
        if member.any():
            entry["metrics"] = summary_metrics(
                counts[member], None if scores is None else np.asarray(scores)[member], min_area
            )
            if n_boot > 0:
                entry["ci"] = cluster_bootstrap_ci(counts[member], patients, n_boot=n_boot, seed=seed)
        result[group] = entry
    return result


def seen_unseen_table(breakdown: dict, keys: tuple[str, ...] = SEEN_METRICS) -> pd.DataFrame:
    """One row per decision (``mmseg``, ``postprocessed``) and group (seen / unseen): images, patients, and the
    metrics (as in ``metrics.json``) with their intervals (``*_lo`` / ``*_hi``)."""
    rows = []
    for decision, groups in breakdown.items():
        if decision not in ("mmseg", "postprocessed"):
            continue
        for group in SEEN_GROUPS:
            entry = groups[group]
            row = {"decision": decision, "group": group, "images": entry["images"], "patients": entry["patients"]}
            for key in keys:
                row[key] = (entry["metrics"] or {}).get(key)
                row[f"{key}_lo"], row[f"{key}_hi"] = entry["ci"].get(key, (None, None))
            rows.append(row)
    return pd.DataFrame(rows)


def seen_unseen_columns(metrics: dict) -> dict[str, float]:
    """The comparison table's columns from an evaluation's ``metrics.json``: images whose patient was seen in
    training, and the mmseg decision's per-image Dice (%) of the seen and the unseen images."""
    breakdown = metrics.get("by_patient_seen", {}).get("mmseg", {})
    columns = {"images_seen": breakdown.get("seen", {}).get("images", np.nan)}
    for group in SEEN_GROUPS:
        value = ((breakdown.get(group) or {}).get("metrics") or {}).get("image_dice")
        columns[f"image_dice_{group}"] = np.nan if value is None else 100 * float(value)
    return columns
