"""``outputs/index.html``: the headline table, the per-image Dice figure, and every report grouped by stage."""

from __future__ import annotations

import html
import logging
import time
from pathlib import Path

import pandas as pd

from helpers.core import paths
from helpers.core.fileio import atomic_write_text
from helpers.core.parameters import STAGES

log = logging.getLogger(__name__)


STAGE_DESCRIPTIONS = {
    "01_explore": "the raw data: images, labels, mask areas, patients, examples",
    "02_prepare": "the split (train / val / test), the leakage report, prepared examples",
    "03_train": "one training run: learning curves, best and last validation, speed",
    "04_evaluate": "every run on the test split: metrics with intervals, post-processing, paired comparison",
    "05_visualize": "predictions drawn on test images: best, worst, by lesion size",
}


HEADLINE_COLUMNS = (  # at most helpers.evaluation.tables.MAX_TABLE_COLUMNS
    "run",
    "split",
    "images",
    "mIoU",
    "mDice",
    "fg_dice",
    "image_dice [95 % CI]",
    "det_auc",
    "pp_image_dice",
    "vs best run",
)


CSV_FILES = {
    "eval/comparison.csv": "every metric of every run, its interval, seen / unseen patients",
    "eval/paired.csv": "each run against the best run of its split (paired patient bootstrap)",
    "runs/sweep.csv": "the training runs: best validation, speed",
}


def _figure_html(figure, alt: str) -> str:
    import base64
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def headline_table(comparison: pd.DataFrame, paired: pd.DataFrame | None = None) -> pd.DataFrame:
    """The index's table: one row per run and baseline, the columns of ``HEADLINE_COLUMNS`` (formatted text); the
    seed's reported rows show its mIoU and mDice, the only numbers it reported."""
    from helpers.evaluation.tables import interval_text, run_name

    def pct(value) -> str:
        return "–" if pd.isna(value) else f"{value:.2f}"

    from helpers.evaluation.paired import REFERENCE, SAME

    def column(row, name: str) -> float:
        return getattr(row, name, float("nan"))

    verdicts = {}
    if paired is not None:
        for row in paired.itertuples():
            detectable = getattr(row, "detectable", float("nan"))  # a paired.csv written before the column
            interval = interval_text(row.diff, row.diff_lo, row.diff_hi)
            if row.verdict == REFERENCE:
                text = row.verdict
            elif pd.isna(detectable):
                text = f"{row.verdict} ({interval})"
            elif row.verdict == SAME:
                text = f"{row.verdict}: less than {detectable:.2f} ({interval})"
            else:
                text = f"{row.verdict} ({interval}; detects {detectable:.2f})"
            verdicts[(row.config, "" if pd.isna(row.lr) else f"{row.lr:g}", row.split)] = text
    rows = []
    for row in comparison.itertuples():
        lr = "" if pd.isna(row.lr) else f"{row.lr:g}"
        auc = column(row, "det_auc")
        rows.append(
            {
                "run": run_name(row.config, row.lr),
                "split": row.split,
                "images": "–" if pd.isna(column(row, "images")) else f"{row.images:.0f}",
                "mIoU": pct(column(row, "mIoU")),
                "mDice": pct(column(row, "mDice")),
                "fg_dice": pct(column(row, "fg_dice")),
                "image_dice [95 % CI]": interval_text(
                    column(row, "image_dice"), column(row, "image_dice_lo"), column(row, "image_dice_hi")
                ),
                "det_auc": "–" if pd.isna(auc) else f"{auc:.3f}",
                "pp_image_dice": pct(column(row, "pp_image_dice")),
                "vs best run": verdicts.get((row.config, lr, row.split), "–"),
            }
        )
    return pd.DataFrame(rows, columns=list(HEADLINE_COLUMNS))


def write_index(outputs: Path | str = paths.OUTPUTS_DIR, title: str = "Pneumothorax segmentation: reports") -> Path:
    """``outputs/index.html``: a headline table (10 columns; every other number in the linked CSVs), a
    figure of per-image Dice with intervals for every run and baseline, and the reports grouped by stage."""
    from helpers.evaluation.model_card import model_cards
    from helpers.evaluation.paired import PAIRED_FILE, detectable_sentence
    from helpers.plots import plot_image_dice_intervals

    outputs = Path(outputs)
    reports = sorted(p for p in outputs.rglob("*.html") if p.name != "index.html" and not p.name.startswith("."))
    comparison = outputs / "eval" / "comparison.csv"
    paired_csv = outputs / "eval" / PAIRED_FILE
    table_html = "<p>No evaluation yet (run 04_evaluate).</p>"
    figure_html = ""
    if comparison.exists():
        table = pd.read_csv(comparison)
        paired = pd.read_csv(paired_csv) if paired_csv.exists() else None
        table_html = headline_table(table, paired).to_html(index=False, border=0, classes="metrics", escape=True)
        if paired is not None and "detectable" in paired:
            sentence = detectable_sentence(paired)
            table_html += f"\n<p>{html.escape(sentence)}</p>" if sentence else ""
        figure_html = _figure_html(
            plot_image_dice_intervals(table),
            "Per-image Dice in percent with 95 % patient bootstrap intervals, one row per run "
            "and baseline, grouped by split",
        )
    csv_items = "\n".join(
        f'<li><a href="{html.escape(name)}">{html.escape(name)}</a>: {html.escape(what)}</li>'
        for name, what in CSV_FILES.items()
        if (outputs / name).exists()
    )

    def link(path: Path) -> str:
        relative = html.escape(str(path.relative_to(outputs)))
        return f'<a href="{relative}">{relative}</a>'

    cards = model_cards(outputs)
    cards["label"] = [
        run if pd.isna(lr) else f"{run} lr {lr:g}" for run, lr in zip(cards["run"], cards["lr"], strict=True)
    ]
    cards_html = (
        "<h2>Model cards</h2>\n<p>Per run: the model, its data and split, the metrics with intervals, the "
        "post-processing, intended use and known limits.</p>\n<ul>\n"
        + "\n".join(
            f"<li>{html.escape(row.label)}: {link(outputs / row.card.relative_to(paths.resolve(outputs)))}</li>"
            for row in cards.itertuples()
        )
        + "\n</ul>"
        if len(cards)
        else ""
    )

    sections = []
    for stage in STAGES:
        found = [p for p in reports if p.stem == stage]
        if found:
            items = "\n".join(f"<li>{link(p)}</li>" for p in found)
            sections.append(f"<h3>{stage}</h3>\n<p>{html.escape(STAGE_DESCRIPTIONS[stage])}</p>\n<ul>\n{items}\n</ul>")
    others = [p for p in reports if p.stem not in STAGES]
    if others:
        sections.append("<h3>Other reports</h3>\n<ul>\n" + "\n".join(f"<li>{link(p)}</li>" for p in others) + "\n</ul>")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}} table.metrics{{border-collapse:collapse}}
table.metrics td,table.metrics th{{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right}}
img{{max-width:100%}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Generated {time.strftime("%Y-%m-%d %H:%M")}. All values in %: mIoU / mDice are mmseg's pooled values over
background and pneumothorax (what the seed reported); fg_dice is the pneumothorax class's pooled Dice;
image_dice the SIIM-ACR per-image Dice (empty on empty = 1) of the model's own decision, with its 95 % interval
from a bootstrap over patients; pp_image_dice the same after the post-processing tuned on val; det_auc the ROC AUC
of detecting an image with pneumothorax (a fraction). 'vs best run': the per-image Dice difference to the best run
of the same split, with a paired patient bootstrap interval and the smallest difference that comparison could
detect on this split at the same 95 % (the interval's larger reach from the difference): 'no detectable
difference: less than X' means that whatever separates the two runs is smaller than the X points this split can
tell from none. The 'seed (reported)' rows are the numbers in the seed project's README (its mIoU and mDice, on its
own random 80/20 split: not comparable image by image).</p>
<h2>Headline metrics</h2>
{table_html}
<ul>
{csv_items}
</ul>
{figure_html}
{cards_html}
<h2>Reports</h2>
{chr(10).join(sections)}
</body></html>
"""
    index = outputs / "index.html"
    atomic_write_text(index, page)
    return index
