"""The model card of one evaluated run: what the model is, what data it was trained and scored on, how well it does
(with patient-bootstrap intervals, seen and unseen patients apart), the post-processing applied and how it was
chosen, what it is for and what it is not. Written as ``MODEL_CARD.md`` beside the run's evaluation, from what the
evaluation folder already holds (``metrics.json``, ``eval.json``) and the prepared folder it was scored on (its
manifest and ``labels.csv``); nothing is recomputed and no model is loaded."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.core import paths, run_folders
from helpers.core.data_profile import DEMO, FULL
from helpers.core.fileio import atomic_write_text
from helpers.data.demo_dataset import PARAMS_FILE as DEMO_PARAMS_FILE
from helpers.data.prepared_folder import LABELS_FILE, MANIFEST_FILE, read_labels, read_prepared
from helpers.postprocessing import SCHEMES

# (key in metrics.json, what the card calls it): the per-image Dice first, the SIIM-ACR metric
CARD_METRICS = (
    ("image_dice", "per-image Dice (SIIM-ACR metric)"),
    ("image_dice_positive", "per-image Dice, images with pneumothorax"),
    ("fg_dice", "pneumothorax Dice, pixels pooled"),
    ("mIoU", "mmseg mIoU (background included)"),
    ("mDice", "mmseg mDice (background included)"),
    ("det_auc", "detection ROC AUC (maximum probability)"),
    ("sensitivity", "detection sensitivity"),
    ("specificity", "detection specificity"),
)
ALREADY_PERCENT = ("mIoU", "mDice")  # mmseg's, in % in metrics.json; every other rate is a fraction there
FRACTIONS = ("det_auc",)  # shown as a fraction, as an AUC is usually quoted
INTENDED_USE = (
    "Research on pneumothorax segmentation methods: comparing training recipes, post-processing and evaluation "
    "protocols on chest X-rays. **Not a medical device and not for clinical decisions**: it has not been "
    "validated on any clinical population, and no result here is a diagnosis."
)
KNOWN_LIMITS = (
    "Stage 1 of the SIIM-ACR 2019 data only: the official stage-2 test labels are not part of the dataset, so "
    "every test number is on images drawn from the same release as the training images.",
    "The source population is the NIH ChestX-ray14 collection (one US hospital's archive, many follow-up films "
    "per patient); scanners, hospitals and populations outside it are not represented.",
    "Images are 8-bit PNGs at 1024x1024 downsampled for the model; DICOMs from other pipelines (windowing, "
    "bit depth, MONOCHROME1) are mapped to the same 8-bit image but were not part of training.",
)


def _shown(key: str, value: float | None) -> str:
    """A metric as the card shows it: in % (two decimals), the AUC as a fraction; a dash when there is none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if key in FRACTIONS:
        return f"{value:.3f}"
    return f"{value if key in ALREADY_PERCENT else 100 * value:.2f}"


def _with_interval(metrics: dict | None, ci: dict, key: str) -> str:
    """``value (low–high)``, or the value alone when it has no interval."""
    shown = _shown(key, (metrics or {}).get(key))
    low, high = ci.get(key) or (None, None)
    return shown if low is None or high is None else f"{shown} ({_shown(key, low)}–{_shown(key, high)})"


def _profile(raw_root: str | None) -> str:
    """Which data a prepared folder was made from: the generated demo (its generator's parameter file beside the
    Kaggle layout) or real data."""
    if raw_root:
        root = paths.resolve(raw_root)
        if any((folder / DEMO_PARAMS_FILE).is_file() for folder in (root, root.parent)):
            return DEMO
    return FULL


def _split_rows(data_root: Path) -> tuple[list[str], str, str]:
    """(the split table's rows, the split mode, the data profile's sentence) of the prepared folder."""
    if not (data_root / MANIFEST_FILE).is_file():
        return [], "unknown", f"no {MANIFEST_FILE} in {data_root}: the split is not known."
    prepared = read_prepared(data_root)
    raw_root = prepared.manifest.get("parameters", {}).get("raw_root")
    profile = _profile(raw_root)
    sentence = (
        "**Demo data**: the generated demo dataset (radiograph-like images with larger, clearer lesions than real "
        "ones); these numbers show that the pipeline learns, not how a method does on real radiographs."
        if profile == DEMO
        else "**Real data**: in the layout of the Kaggle dataset vbookshelf/pneumothorax-chest-xray-images-and-masks "
        "(SIIM-ACR 2019, stage 1)."
    )
    sentence += f" Prepared folder `{data_root.name}` at {prepared.img_size}x{prepared.img_size}, from `{raw_root}`."
    rows = []
    if (data_root / LABELS_FILE).is_file():
        labels = read_labels(data_root, "the model card")
        for split, part in labels.groupby("split", sort=False):
            rows.append(f"| {split} | {len(part)} | {part['patient'].nunique()} | {int(part['has_pneumo'].sum())} |")
    else:
        for split, counts in prepared.manifest.get("counts", {}).items():
            rows.append(f"| {split} | {counts['images']} | – | {counts['positive']} |")
    return rows, prepared.split_mode, sentence


def _postprocessing(metrics: dict, info: dict) -> list[str]:
    """How the applied triplet was chosen, and the schemes tuned beside it."""
    applied = metrics.get("postprocess", {})
    triplet = SCHEMES["triplet"].from_dict(applied) if applied else None
    lines = [f"- Applied to the post-processed metrics: {triplet.describe() if triplet else 'none'}."]
    tuned_on = applied.get("tuned_on")
    if tuned_on == "given":
        lines.append("- Chosen: given as a parameter of 04_evaluate, not tuned.")
    elif tuned_on:
        images = applied.get("val_images")
        lines.append(
            f"- Chosen: tuned on the {tuned_on} predictions"
            + (f" ({images} images)" if images else "")
            + f", never on the evaluated {applied.get('evaluated_on', 'split')} split; the grid is in "
            f"`{run_folders.GRID_FILE}`."
        )
    if applied.get("warning"):
        lines.append(f"- Warning: {applied['warning']}.")
    for name, values in (info.get("schemes") or {}).items():
        if name in SCHEMES:
            lines.append(f"- Tuned scheme `{name}`: {SCHEMES[name].from_dict(values).describe()}.")
    if info.get("val_winner"):
        lines.append(
            f"- The scheme with the higher val per-image Dice, which `predict` and `export` apply by default: "
            f"`{info['val_winner']}`."
        )
    return lines


def _paired_lines(eval_dir: Path, label: str, lr: float, split: str) -> list[str]:
    """The run's row of the paired comparison (``outputs/eval/paired.csv``, written by 04 after every run is
    scored), as a section; none when 04 has not written it yet."""
    paired_csv = eval_dir.parents[1] / run_folders.PAIRED_FILE
    if not paired_csv.is_file():
        return []
    table = pd.read_csv(paired_csv)
    same_lr = table["lr"].isna() if math.isnan(lr) else np.isclose(table["lr"], lr)
    rows = table[(table["config"] == label) & same_lr & (table["split"] == split)]
    if rows.empty:
        return []
    row = rows.iloc[0]
    if pd.isna(row["detectable"]):  # the best run: the reference, compared with nothing
        text = f"The best run of {split} by per-image Dice: the reference of the paired comparison."
    else:
        text = (
            f"Against the best run of {split} ({row['reference']}), on the same {row['images']:.0f} images of "
            f"{row['patients']:.0f} patients: per-image Dice {row['diff']:+.2f} points "
            f"[{row['diff_lo']:+.2f}, {row['diff_hi']:+.2f}] (paired patient bootstrap, 95 %), "
            f"**{row['verdict']}**. This split detects a difference of {row['detectable']:.2f} points or more; "
            "'no detectable difference' means less than that."
        )
    return ["## Compared with the best run", "", text, ""]


def model_card(eval_dir: Path | str) -> str:
    """The model card (Markdown) of the evaluation folder ``eval_dir``."""
    eval_dir = paths.resolve(eval_dir)
    metrics = json.loads((eval_dir / run_folders.EVAL_METRICS_FILE).read_text())
    info = json.loads((eval_dir / run_folders.EVAL_INFO_FILE).read_text())
    run_dir = Path(info["run_dir"])
    label, lr = run_folders.run_label(run_dir)
    name = label if math.isnan(lr) else f"{label}, lr {lr:g}"
    split = info["split"]
    resolution = metrics.get("resolution", {})
    members = metrics.get("members", [])
    split_rows, split_mode, profile = _split_rows(Path(info["data_root"]))
    seen = metrics.get("by_patient_seen", {})

    lines = [f"# Model card: {name} ({split})", ""]
    lines += [
        "## Model",
        "",
        f"- Run folder: `{run_dir}`; config: `{run_folders.CONFIG_FILE}` there (`{label}`).",
        f"- Checkpoint: `{Path(info['checkpoint']).name}`"
        + (f"; an ensemble of {len(members)} members (mean probability)." if len(members) > 1 else "."),
        f"- Model input {tuple(resolution.get('model_input', []))}, "
        f"scored at {tuple(resolution.get('evaluated_at', []))} against the masks of "
        f"`{Path(resolution.get('masks', info['data_root'])).name}`"
        + ("; horizontal-flip TTA." if info.get("tta") else "."),
        "",
        "## Data and split",
        "",
        profile,
        "",
        f"Split mode `{split_mode}`:",
        "",
        "| split | images | patients | images with pneumothorax |",
        "| --- | ---: | ---: | ---: |",
        *split_rows,
        "",
    ]
    seen_images = (seen.get("mmseg", {}).get("seen") or {}).get("images")
    if seen_images is not None:
        lines += [
            f"Of the {metrics['mmseg']['images']} {split} images, {seen_images} belong to a patient who also has "
            "images in the train split (seen); the others are unseen.",
            "",
        ]
    lines += [
        f"## Metrics on {split}",
        "",
        f"In %, except the AUC; 95 % intervals from {metrics['ci'].get('n_boot', '–')} bootstrap resamples of "
        "patients. 'Model' is the segmentor's own decision, 'post-processed' after the scheme below; seen / "
        "unseen are the model's decision on images of patients seen / not seen in training.",
        "",
        "| metric | model | post-processed | seen | unseen |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for key, title in CARD_METRICS:
        cells = [
            _with_interval(metrics["mmseg"], metrics["ci"].get("mmseg", {}), key),
            _with_interval(metrics["postprocessed"], metrics["ci"].get("postprocessed", {}), key),
        ]
        for group in ("seen", "unseen"):
            entry = seen.get("mmseg", {}).get(group) or {}
            cells.append(_with_interval(entry.get("metrics"), entry.get("ci", {}), key))
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"All-empty baseline (every mask empty): per-image Dice "
        f"{_shown('image_dice', metrics['mmseg'].get('empty_baseline_image_dice'))}.",
        "",
        *_paired_lines(eval_dir, label, lr, split),
        "## Post-processing",
        "",
        *_postprocessing(metrics, info),
        "",
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        "## Known limits",
        "",
        *[f"- {limit}" for limit in KNOWN_LIMITS],
        "",
        f"Written by 04_evaluate from `{run_folders.EVAL_METRICS_FILE}` and `{run_folders.EVAL_INFO_FILE}` "
        f"(code version {info.get('code_version', '–')}, {info.get('created', '–')}).",
        "",
    ]
    return "\n".join(lines)


def write_model_card(eval_dir: Path | str) -> Path:
    """``MODEL_CARD.md`` in the evaluation folder ``eval_dir`` (atomically), from :func:`model_card`."""
    path = paths.resolve(eval_dir) / run_folders.MODEL_CARD_FILE
    atomic_write_text(path, model_card(eval_dir))
    return path


def model_cards(outputs: Path | str, split: str = "test") -> pd.DataFrame:
    """Every model card of ``split`` under ``outputs/eval/``: the run's label, lr and the card's path."""
    rows = []
    for folder in run_folders.evaluations(outputs, split):
        card = folder / run_folders.MODEL_CARD_FILE
        if card.is_file():
            info = json.loads((folder / run_folders.EVAL_INFO_FILE).read_text())
            label, lr = run_folders.run_label(Path(info["run_dir"]))
            rows.append({"run": label, "lr": lr, "card": card})
    return pd.DataFrame(rows, columns=["run", "lr", "card"])
