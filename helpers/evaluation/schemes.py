"""The post-processing schemes side by side: each tuned on val (helpers.postprocessing), scored here on the
evaluated split with bootstrap intervals; the winner on val is the one predict and export apply."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from helpers.core.metrics import bootstrap_ci, summary_metrics
from helpers.core.run_folders import run_label
from helpers.postprocessing import DualThreshold, Predictions, Scheme, scheme_counts, val_winner


def compare_schemes(
    tuned: dict[str, tuple[Scheme, pd.DataFrame]], val_images: int, preds: Predictions, n_boot: int
) -> dict:
    """The report for ``metrics.json["dual_threshold"]``: the dual threshold's tuned values, every scheme's best
    val image Dice, the winner on val, and the dual threshold's metrics on ``preds`` (the evaluated split) with
    bootstrap intervals. ``tuned``: helpers.postprocessing.tune_schemes of the val predictions."""
    dual, _ = tuned[DualThreshold.name]
    counts = scheme_counts(preds, dual)
    val_dice = {name: float(grid["image_dice"].max()) for name, (_, grid) in tuned.items()}
    return {
        **dual.as_dict(),
        "tuned_on": "val",
        "val_images": val_images,
        "val_image_dice": val_dice,
        "winner_on_val": val_winner(val_dice),
        "metrics": summary_metrics(counts, preds.max_prob, min_area=max(1, dual.min_area)),
        "ci": bootstrap_ci(counts, n_boot=n_boot),
    }


def schemes_table(results: Sequence) -> pd.DataFrame:
    """One row per evaluation (helpers.evaluation.EvalResult) with both post-processing schemes: their tuned
    values, best val image Dice, the winner on val, and the evaluated split's image Dice (%) with its CI."""
    rows = []
    for result in results:
        dual = result.metrics.get("dual_threshold")
        if not dual:
            continue
        triplet = result.metrics["postprocess"]
        config, lr = run_label(result.run_dir)
        row = {"config": config, "lr": lr, "split": result.split, "winner_on_val": dual["winner_on_val"]}
        for scheme, summary, ci, values in (
            (
                "triplet",
                result.metrics["postprocessed"],
                result.metrics["ci"].get("postprocessed", {}),
                f"{triplet['threshold']:g}, {triplet['min_component_area']}, {triplet['min_total_area']}",
            ),
            (
                "dual_threshold",
                dual["metrics"],
                dual["ci"],
                f"{dual['top_threshold']:g}, {dual['min_area']}, {dual['bottom_threshold']:g}",
            ),
        ):
            low, high = ci.get("image_dice", (None, None))
            row.update(
                {
                    f"{scheme}": values,
                    f"{scheme}_val_image_dice": 100 * dual["val_image_dice"][scheme],
                    f"{scheme}_image_dice": 100 * summary["image_dice"],
                    f"{scheme}_image_dice_lo": np.nan if low is None else 100 * low,
                    f"{scheme}_image_dice_hi": np.nan if high is None else 100 * high,
                }
            )
        rows.append(row)
    return pd.DataFrame(rows)
