"""Figures for the notebooks: overlays, data exploration, learning curves, evaluation results.

Every ``plot_*`` function returns a matplotlib ``Figure`` built without pyplot (no global figure state:
nothing to close; a notebook shows it with ``display(fig)`` or as a cell's last expression) and computes
no metric itself: the numbers come from ``helpers.data.explore``, ``helpers.evaluation`` or a run's logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from helpers.core.run_folders import read_scalars, run_label
from helpers.data.explore import components_table, positive_area_fractions
from helpers.data.images import OVERLAY_COLOURS, overlay, read_gray8

EXAMPLE_KINDS = ("best", "worst", "median", "false_positive", "missed")


def _legend_handles(names: Sequence[str]) -> list[Patch]:
    return [Patch(color=np.array(OVERLAY_COLOURS[name]) / 255, label=name) for name in names]


def _show(ax, picture: np.ndarray, title: str) -> None:
    ax.imshow(picture, cmap="gray", vmin=0, vmax=255, interpolation="antialiased")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


# --- 01_explore -------------------------------------------------------------------------------------


def sample_examples(pairs: pd.DataFrame, n: int = 8, seed: int = 0) -> pd.DataFrame:
    """Up to ``n`` random rows, half positive where there are enough, in random order (never the first N)."""
    positive = pairs[pairs["has_pneumo"].astype(bool)]
    negative = pairs[~pairs["has_pneumo"].astype(bool)]
    n_pos = min(len(positive), max(n - len(negative), (n + 1) // 2))
    n_neg = min(len(negative), n - n_pos)
    chosen = pd.concat([positive.sample(n=n_pos, random_state=seed), negative.sample(n=n_neg, random_state=seed)])
    return chosen.sample(frac=1, random_state=seed)


def plot_example_grid(scans_or_pairs: pd.DataFrame, n: int = 8, seed: int = 0, columns: int = 4) -> Figure:
    """Random radiographs, positives and negatives mixed, with the pneumothorax mask filled and outlined."""
    chosen = sample_examples(scans_or_pairs, n, seed)
    columns = max(1, min(columns, len(chosen)))
    rows = max(1, -(-len(chosen) // columns))
    fig = Figure(figsize=(3.2 * columns, 3.4 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, row in zip(axes[: len(chosen)], chosen.itertuples(), strict=True):
        image = read_gray8(row.image_path)
        mask = read_gray8(row.mask_path) > 0
        label = f"positive, {int(mask.sum())} px" if mask.any() else "negative"
        _show(ax, overlay(image, mask), f"{row.name}\n{label}")
        if mask.any():
            ax.contour(mask, levels=[0.5], colors=[np.array(OVERLAY_COLOURS["truth"]) / 255], linewidths=0.8)
    for ax in axes[len(chosen) :]:
        fig.delaxes(ax)
    fig.suptitle(f"{len(chosen)} random radiographs with the pneumothorax mask (seed {seed})")
    fig.legend(handles=_legend_handles(["truth"]), loc="outside lower center", ncols=1)
    return fig


def plot_area_distribution(scans: pd.DataFrame) -> Figure:
    """Histogram (log x) of the positive masks' area as a fraction of the image, one series per split."""
    fractions = positive_area_fractions(scans)
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    if fractions.empty:
        ax.text(0.5, 0.5, "no positive masks", ha="center", va="center", transform=ax.transAxes)
    else:
        low, high = fractions.min(), fractions.max()
        bins = np.logspace(np.log10(low), np.log10(high * 1.0001) if high > low else np.log10(low) + 0.1, 30)
        stages = scans.loc[fractions.index, "stage"]
        for stage in sorted(stages.unique()):
            ax.hist(
                fractions[stages == stage],
                bins=bins,
                alpha=0.6,
                label=f"{stage} ({int((stages == stage).sum())} masks)",
            )
        ax.set_xscale("log")
        ax.legend(title="split")
    ax.set_xlabel("mask area / image area (log scale)")
    ax.set_ylabel("positive images")
    ax.set_title("Size of the pneumothorax masks")
    return fig


def plot_components(scans: pd.DataFrame) -> Figure:
    """Bar chart: how many positive masks have 1, 2, ... connected regions."""
    table = components_table(scans)
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    bars = ax.bar(table["components"].astype(str), table["masks"], color="tab:blue", label="positive masks")
    ax.bar_label(bars)
    ax.set_xlabel("connected regions in the mask (8-connectivity)")
    ax.set_ylabel("positive masks")
    ax.set_title("Connected regions per pneumothorax mask")
    ax.legend()
    return fig


def plot_images_per_patient(images_per_patient: pd.DataFrame) -> Figure:
    """Histogram: how many patients have 1, 2, ... images (``helpers.data.patients.images_per_patient``), log y."""
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    ax.bar(images_per_patient["images"], images_per_patient["patients"], width=0.8, color="tab:blue", label="patients")
    ax.set_yscale("log")
    ax.set_xlabel("images of the patient")
    ax.set_ylabel("patients (log scale)")
    ax.set_title(f"Images per patient ({int(images_per_patient['patients'].sum())} patients)")
    ax.legend()
    return fig


def plot_class_balance(class_table: pd.DataFrame) -> Figure:
    """The class table as two bar charts: share of all pixels (log y) and images containing each class."""
    fig = Figure(figsize=(9, 4), layout="constrained")
    pixels_ax, images_ax = fig.subplots(1, 2)
    colours = ["0.5", "tab:red"]
    names = class_table["class name"]
    bars = pixels_ax.bar(names, class_table["pixel percentage"], color=colours)
    pixels_ax.bar_label(bars, fmt="%.2f %%")
    pixels_ax.set_yscale("log")
    pixels_ax.set_ylabel("% of all pixels (log scale)")
    pixels_ax.set_title("Pixels per class")
    bars = images_ax.bar(names, class_table["num. images in this category"], color=colours)
    images_ax.bar_label(bars)
    images_ax.set_ylabel("images containing the class")
    images_ax.set_title("Images per class")
    for ax in (pixels_ax, images_ax):
        ax.set_xlabel("class")
    fig.suptitle("Class balance")
    return fig


# --- 03_train ---------------------------------------------------------------------------------------


def _run_labels(runs: Mapping[str, Path | str] | Sequence[Path | str]) -> dict[str, Path]:
    """Label each run by its dict key, else 'lr X' from its manifest (with the config folder when repeated)."""
    if isinstance(runs, Mapping):
        return {str(label): Path(path) for label, path in runs.items()}
    labels = []
    for path in map(Path, runs):
        lr = run_label(path)[1]
        labels.append((f"lr {lr:g}" if not np.isnan(lr) else path.name, path))
    names = [label for label, _ in labels]
    return {(f"{path.parent.name} {label}" if names.count(label) > 1 else label): path for label, path in labels}


def plot_learning_curves(runs: Mapping[str, Path | str] | Sequence[Path | str]) -> Figure:
    """Train loss and val mDice / Dice.pneumothorax against the iteration, one colour per run."""
    labelled = _run_labels([runs] if isinstance(runs, (str, Path)) else runs)
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    loss_ax, val_ax = fig.subplots(1, 2)
    for i, (label, work_dir) in enumerate(labelled.items()):
        colour = f"C{i}"
        train_rows, val_rows = read_scalars(work_dir)
        steps = [row["step"] for row in train_rows if "loss" in row]
        loss_ax.plot(steps, [row["loss"] for row in train_rows if "loss" in row], color=colour, label=label)
        for key, style in (("mDice", "-"), ("Dice.pneumothorax", "--")):
            points = [(row["step"], row[key]) for row in val_rows if key in row]
            if points:
                x, y = zip(*points, strict=True)
                val_ax.plot(x, y, style, marker="o", markersize=3, color=colour, label=f"{label}: {key}")
    loss_ax.set_xlabel("iteration")
    loss_ax.set_ylabel("training loss")
    loss_ax.set_title("Training loss")
    val_ax.set_xlabel("iteration")
    val_ax.set_ylabel("validation score (%)")
    val_ax.set_title("Validation: mDice (solid) and pneumothorax Dice (dashed)")
    for ax in (loss_ax, val_ax):
        if ax.lines:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return fig


# --- 05_visualize -----------------------------------------------------------------------------------


def _columns(postprocessed: bool) -> tuple[str, str]:
    """(dice, predicted area) columns of ``per_image`` for the post-processed or the mmseg masks."""
    return ("pp_dice", "pp_area") if postprocessed else ("dice", "pred_area")


def select_examples(per_image: pd.DataFrame, which: str, n: int = 4, postprocessed: bool = True) -> list[int]:
    """Row positions of ``per_image`` to show.

    'best' / 'worst' / 'median': positive images by per-image Dice (highest first, lowest first, the n
    around the median); 'false_positive': negative images with a predicted area (largest first);
    'missed': positive images with an empty prediction (largest true area first).
    """
    if which not in EXAMPLE_KINDS:
        raise ValueError(f"which must be one of {EXAMPLE_KINDS}, not {which!r}")
    dice, area = _columns(postprocessed)
    table = per_image.reset_index(drop=True)
    positive = table["positive"].astype(bool)
    if which in ("best", "worst", "median"):
        ranked = table[positive].sort_values(dice, ascending=which != "best", kind="stable")
        if which == "median":
            start = max(0, (len(ranked) - n) // 2)
            ranked = ranked.iloc[start:]
    elif which == "false_positive":
        ranked = table[~positive & (table[area] > 0)].sort_values(area, ascending=False, kind="stable")
    else:
        ranked = table[positive & (table[area] == 0)].sort_values("true_area", ascending=False, kind="stable")
    return list(ranked.index[:n])


EXAMPLE_TITLES = {
    "best": "Best segmented positive images",
    "worst": "Worst segmented positive images",
    "median": "Positive images around the median Dice",
    "false_positive": "Negative images with a predicted pneumothorax (false positives)",
    "missed": "Positive images with nothing predicted (missed)",
}


def plot_examples(result, which: str = "worst", n: int = 4, postprocessed: bool = True) -> Figure:
    """Rows of image | truth | overlay (TP / FP / FN) for examples chosen by :func:`select_examples`."""
    from helpers.evaluation import predicted_mask

    chosen = select_examples(result.per_image, which, n, postprocessed)
    decision = "post-processed" if postprocessed else "mmseg decision"
    title = f"{EXAMPLE_TITLES[which]} ({result.split}, {decision})"
    if not chosen:
        fig = Figure(figsize=(8, 1.6), layout="constrained")
        ax = fig.subplots()
        ax.text(0.5, 0.5, f"none: no image of the {result.split} split is in this category", ha="center", va="center")
        ax.set_axis_off()
        fig.suptitle(title)
        return fig
    dice_column, area_column = _columns(postprocessed)
    fig = Figure(figsize=(10, 3.3 * len(chosen) + 0.6), layout="constrained")
    axes = fig.subplots(len(chosen), 3, squeeze=False)
    for (image_ax, truth_ax, overlay_ax), index in zip(axes, chosen, strict=True):
        row = result.per_image.iloc[index]
        image = read_gray8(Path(result.data_root) / "images" / result.split / f"{row['name']}.png")
        truth = read_gray8(Path(result.data_root) / "masks" / result.split / f"{row['name']}.png") > 0
        pred = predicted_mask(result, index, postprocessed)
        _show(image_ax, image, f"{row['name']}\nmax prob {row['max_prob']:.2f}")
        _show(truth_ax, overlay(image, truth), f"truth: {int(row['true_area'])} px")
        _show(
            overlay_ax,
            overlay(image, truth, pred),
            f"Dice {row[dice_column]:.3f}, predicted {int(row[area_column])} px",
        )
    fig.suptitle(title)
    fig.legend(
        handles=_legend_handles(["truth", "true positive", "false positive", "false negative"]),
        loc="outside lower center",
        ncols=4,
    )
    return fig


LR_COMPARISON_METRICS = ("mIoU", "mDice", "fg_dice", "image_dice", "image_dice_positive", "pp_image_dice")


def _comparison_labels(table: pd.DataFrame) -> list[str]:
    runs = ~table["config"].isin(["seed (reported)", "all-empty baseline"])
    several_configs = table.loc[runs, "config"].nunique() > 1
    several_splits = table.loc[table["config"] != "seed (reported)", "split"].nunique() > 1
    labels = []
    for row, is_run in zip(table.itertuples(), runs, strict=True):
        if not is_run:
            label = row.config if pd.isna(row.lr) else f"{row.config}, lr {row.lr:g}"
        else:
            label = f"lr {row.lr:g}" if not pd.isna(row.lr) else "lr ?"
            label = f"{row.config}, {label}" if several_configs else label
        label = f"{label} [{row.split}]" if several_splits and row.config != "seed (reported)" else label
        labels.append(f"{label} (failed)" if getattr(row, "status", None) == "failed" else label)
    return labels


def plot_lr_comparison(table: pd.DataFrame, metrics: Sequence[str] = LR_COMPARISON_METRICS) -> Figure:
    """Grouped bars of ``helpers.evaluation.comparison_table``: one bar per row and metric, in %.

    Evaluated runs carry their bootstrap interval (``*_lo`` / ``*_hi``) as error bars; the seed's reported
    numbers (hatched, coloured like our run with the same lr) and the all-empty baseline (grey) sit beside them.
    """
    metrics = [m for m in metrics if m in table.columns]
    labels = _comparison_labels(table)
    run_colours: dict[float, str] = {}
    fig = Figure(figsize=(min(18, 4 + len(metrics) * (0.5 + 0.22 * len(table))), 5), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(metrics))
    width = 0.8 / max(1, len(table))
    for i, (row, label) in enumerate(zip(table.itertuples(index=False), labels, strict=True)):
        values = np.array([getattr(row, m, np.nan) for m in metrics], dtype=float)
        style: dict = {}
        if row.config == "all-empty baseline":
            style = {"color": "0.6"}
        elif row.config == "seed (reported)":
            style = {"color": run_colours.get(row.lr, f"C{i}"), "hatch": "//", "alpha": 0.55, "edgecolor": "k"}
        else:
            colour = f"C{len(run_colours) % 10}"
            run_colours.setdefault(row.lr, colour)
            style = {"color": colour}
        low = np.array([getattr(row, f"{m}_lo", np.nan) for m in metrics], dtype=float)
        high = np.array([getattr(row, f"{m}_hi", np.nan) for m in metrics], dtype=float)
        has_ci = ~(np.isnan(low) | np.isnan(high) | np.isnan(values))
        yerr = np.where(has_ci, [values - low, high - values], 0.0) if has_ci.any() else None
        ax.bar(x + (i - (len(table) - 1) / 2) * width, values, width, yerr=yerr, capsize=3, label=label, **style)
    ax.set_xticks(x, metrics)
    ax.set_xlabel("metric (mIoU, mDice: mmseg, both classes; fg_*: pneumothorax pooled; image_*: per-image Dice)")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.set_title("Runs compared (error bars: 95 % bootstrap interval; hatched: the seed's reported numbers)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_dice_vs_area(result, postprocessed: bool = True) -> Figure:
    """Per-image Dice of the positive images against their true mask area (log x); missed ones marked."""
    dice_column, area_column = _columns(postprocessed)
    positive = result.per_image[result.per_image["positive"].astype(bool)]
    missed = positive[area_column] == 0
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.scatter(
        positive.loc[~missed, "true_area"],
        positive.loc[~missed, dice_column],
        s=14,
        alpha=0.7,
        color="tab:blue",
        label=f"something predicted ({int((~missed).sum())})",
    )
    ax.scatter(
        positive.loc[missed, "true_area"],
        positive.loc[missed, dice_column],
        s=18,
        marker="x",
        color="tab:red",
        label=f"nothing predicted ({int(missed.sum())})",
    )
    if len(positive):
        ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("true pneumothorax area (pixels, log scale)")
    ax.set_ylabel("per-image Dice")
    ax.set_title(
        f"Dice against lesion size, positive images of {result.split} "
        f"({'post-processed' if postprocessed else 'mmseg decision'})"
    )
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def _result_label(result) -> str:
    run_dir = Path(result.run_dir)
    return f"{run_dir.parent.name}/{run_dir.name} [{result.split}]"


def plot_roc(results) -> Figure:
    """ROC of the image-level score ``max_prob`` (positive vs negative images), one line per result.

    ``results``: one EvalResult, a list of them, or a dict label -> EvalResult. The legend's AUC is the
    ``det_auc`` that ``helpers.evaluation`` computed.
    """
    from sklearn.metrics import roc_curve

    if isinstance(results, Mapping):
        labelled = dict(results)
    else:
        results = [results] if hasattr(results, "per_image") else list(results)
        labelled = {_result_label(result): result for result in results}
    fig = Figure(figsize=(6, 5.5), layout="constrained")
    ax = fig.subplots()
    for label, result in labelled.items():
        truth = result.per_image["positive"].astype(bool)
        if truth.nunique() < 2:
            continue
        fpr, tpr, _ = roc_curve(truth, result.per_image["max_prob"])
        auc = result.metrics["mmseg"].get("det_auc")
        ax.plot(fpr, tpr, label=f"{label}: AUC {auc:.3f}" if auc is not None else label)
    ax.plot([0, 1], [0, 1], ":", color="0.5", label="chance")
    ax.set_xlabel("false positive rate (negative images with max prob above the cut)")
    ax.set_ylabel("true positive rate (positive images detected)")
    ax.set_title("Image-level detection by the maximum pneumothorax probability")
    ax.set_aspect("equal")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_confusion(result, postprocessed: bool = True) -> Figure:
    """The image-level detection confusion matrix (an image is called positive when its mask is not empty)."""
    values = result.metrics["postprocessed" if postprocessed else "mmseg"]
    matrix = np.array([[values["det_tn"], values["det_fp"]], [values["det_fn"], values["det_tp"]]], dtype=int)
    fig = Figure(figsize=(5, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    ax.set_xticks([0, 1], ["empty", "pneumothorax"])
    ax.set_yticks([0, 1], ["negative", "positive"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    ax.set_title(
        f"Image-level detection (images)\n{result.split}, {'post-processed' if postprocessed else 'mmseg decision'}"
    )
    return fig


def plot_image_dice_intervals(table: pd.DataFrame) -> Figure:
    """Per-image Dice (%) with its 95 % interval for every row of 04's comparison table that has one (each
    run, the all-empty baseline; a point without a bar where there is no interval), one panel row per split."""
    rows = table[table["image_dice"].notna()].reset_index(drop=True)
    labels = [row.config if pd.isna(row.lr) else f"{row.config} lr {row.lr:g}" for row in rows.itertuples()]
    labels = [f"{label} [{split}]" for label, split in zip(labels, rows["split"], strict=True)]
    fig = Figure(figsize=(8, 0.45 * max(2, len(rows)) + 1.2), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    low = (rows["image_dice"] - rows.get("image_dice_lo", rows["image_dice"])).clip(lower=0).fillna(0)
    high = (rows.get("image_dice_hi", rows["image_dice"]) - rows["image_dice"]).clip(lower=0).fillna(0)
    baseline = rows["config"].str.contains("baseline|seed", regex=True)
    for mask, colour, name in ((~baseline, "tab:blue", "run"), (baseline, "tab:grey", "baseline")):
        if mask.any():
            ax.errorbar(
                rows.loc[mask, "image_dice"],
                y[mask.to_numpy()],
                xerr=[low[mask], high[mask]],
                fmt="o",
                color=colour,
                capsize=3,
                label=name,
            )
    ax.set_yticks(y, labels)
    ax.set_xlabel("per-image Dice (%), 95 % patient bootstrap interval")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title("Per-image Dice of every run and the baselines")
    return fig
