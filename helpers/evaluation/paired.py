"""Paired comparison of evaluated runs: is a run better than the best one on the same test patients?

Every run gets its own interval in 04's comparison, but two runs' intervals overlap even when one is
better on nearly every patient. Here each run is compared with the best run of its split (highest mean
per-image Dice) on the same images: the mean difference in per-image Dice and its paired patient bootstrap
interval (:func:`helpers.core.metrics.paired_bootstrap_difference`: the same resampled patients for both runs).
The verdict is ``better`` / ``worse`` when the interval excludes 0, else ``no detectable difference``.

Beside each verdict, ``detectable``: the smallest difference (in points of per-image Dice, %) that this comparison
could detect on this split, at the same 95 %, from the paired bootstrap's spread (:func:`detectable_difference`):
the larger of the interval's two reaches from the mean difference, ``max(diff - diff_lo, diff_hi - diff)``. The
verdict is ``better`` exactly when the mean difference exceeds its lower reach (``diff_lo > 0``) and ``worse``
exactly when it falls below minus its upper reach, so a pair whose resampled differences spread the same way
around another mean would have a verdict for any mean difference larger than ``detectable`` in size:
``no detectable difference`` reads as "less than ``detectable`` points". It is a detection threshold, not a power
calculation: a true difference of exactly that size is detected about half the time (for 80 % power, about
(1.96 + 0.84) / 1.96 = 1.43 times it). It shrinks as the test split grows, about as one over the square root of
its patients.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

from helpers.core import run_folders
from helpers.core.fileio import atomic_write_text
from helpers.core.metrics import paired_bootstrap_difference
from helpers.core.run_folders import PAIRED_FILE
from helpers.evaluation.tables import reading_table

BETTER, SAME, WORSE, REFERENCE = "better", "no detectable difference", "worse", "best run (reference)"


def verdict(low: float, high: float) -> str:
    """What a 95 % interval of a difference says: better (above 0), worse (below 0), or neither."""
    if low > 0:
        return BETTER
    if high < 0:
        return WORSE
    return SAME


def detectable_difference(mean: float, low: float, high: float) -> float:
    """The smallest difference a paired interval ``(low, high)`` around ``mean`` detects at its level: the larger of
    its two reaches from the mean, ``max(mean - low, high - mean)`` (see the module's docstring); NaN without
    bounds."""
    if math.isnan(low) or math.isnan(high):
        return math.nan
    return float(max(mean - low, high - mean))


def detectable_sentence(table: pd.DataFrame) -> str:
    """One sentence per split of :func:`paired_comparison`'s table: the smallest difference its comparisons could
    detect (the range over the runs compared with the best one), for 04's report and the index."""
    sentences = []
    for split, rows in table.groupby("split", sort=False):
        values = rows.loc[rows["verdict"] != REFERENCE, "detectable"].dropna()
        if values.empty:
            continue
        images, patients = int(rows["images"].iloc[0]), int(rows["patients"].iloc[0])
        low, high = float(values.min()), float(values.max())
        size = f"{low:.2f}" if np.isclose(low, high, atol=0.005) else f"{low:.2f} to {high:.2f}"
        sentences.append(
            f"On {split} ({images} images, {patients} patients) the paired comparison detects a difference in "
            f"per-image Dice of {size} points or more (95 %); 'no detectable difference' means less than that."
        )
    return " ".join(sentences)


def _label(result) -> str:
    config, lr = run_folders.run_label(result.run_dir)
    return config if np.isnan(lr) else f"{config} lr {lr:g}"


def paired_comparison(results: list, n_boot: int = 1000, seed: int = 0, column: str = "dice") -> pd.DataFrame:
    """One row per evaluated run (04's ``EvalResult``s): against the best run on the same split and prepared
    data, the per-image Dice difference (run minus best, in %) with its paired patient bootstrap interval, and
    ``detectable``: the smallest difference this comparison could detect on the split (in %, at the same 95 %;
    :func:`detectable_difference`; NaN for the best run itself).

    ``column``: the per-image score in ``per_image.csv`` (``dice``: the mmseg decision; ``pp_dice``: after
    post-processing). Runs of one split must have scored the same images."""
    groups: dict[tuple[str, str], list] = {}
    for result in results:
        groups.setdefault((result.split, str(result.data_root)), []).append(result)
    rows = []
    for (split, _), group in groups.items():
        best = max(group, key=lambda r: float(r.per_image[column].mean()))
        reference = best.per_image.set_index("name")
        for result in group:
            scored = result.per_image.set_index("name")
            if set(scored.index) != set(reference.index):
                raise ValueError(
                    f"{result.out_dir} and {best.out_dir} scored different images of {split}; "
                    "a paired comparison needs the same ones"
                )
            names = reference.index
            mean, low, high = paired_bootstrap_difference(
                scored.loc[names, column].to_numpy(),
                reference[column].to_numpy(),
                reference["patient"].astype(str).to_numpy(),
                n_boot=n_boot,
                seed=seed,
            )
            config, lr = run_folders.run_label(result.run_dir)
            rows.append(
                {
                    "config": config,
                    "lr": lr,
                    "split": split,
                    "reference": _label(best),
                    "images": len(names),
                    "patients": reference["patient"].nunique(),
                    "image_dice": 100 * float(scored[column].mean()),
                    "diff": 100 * mean,
                    "diff_lo": 100 * low,
                    "diff_hi": 100 * high,
                    "detectable": math.nan if result is best else 100 * detectable_difference(mean, low, high),
                    "verdict": REFERENCE if result is best else verdict(low, high),
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "config",
            "lr",
            "split",
            "reference",
            "images",
            "patients",
            "image_dice",
            "diff",
            "diff_lo",
            "diff_hi",
            "detectable",
            "verdict",
        ],
    )


def paired_style(table: pd.DataFrame) -> Styler:
    """:func:`paired_comparison` for reading: Dice and differences in % with 2 decimals, the difference with its
    interval beside it (helpers.evaluation.tables.reading_table)."""
    columns = ["run", "split", "reference", "images", "patients", "image_dice", "diff", "detectable", "verdict"]
    return reading_table(table, columns, intervals=["diff"])


def write_paired(table: pd.DataFrame, out_dir: str | Path) -> Path:
    """``paired.csv`` in ``out_dir`` (04's ``outputs/eval/``), atomically."""
    path = Path(out_dir) / PAIRED_FILE
    atomic_write_text(path, table.to_csv(index=False))
    return path
