"""helpers.plots: overlay colours, example selection, and every figure on small hand-made inputs."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import cv2
import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.container import BarContainer, ErrorbarContainer

from helpers import plots
from helpers.core import run_folders
from helpers.data.explore import class_pixel_table, components_table
from helpers.data.images import OVERLAY_ALPHA, OVERLAY_COLOURS, overlay, read_gray8

SIZE = 16
SEABORN_FUNCTIONS = ("barplot", "histplot", "heatmap")


@pytest.fixture
def seaborn_calls(monkeypatch) -> list[tuple[str, object]]:
    """Every (seaborn function, axes it drew on) while the test runs; the functions still draw."""
    calls: list[tuple[str, object]] = []
    for name in SEABORN_FUNCTIONS:
        real = getattr(sns, name)

        def spy(*args, _name=name, _real=real, **kwargs):
            calls.append((_name, kwargs.get("ax")))
            return _real(*args, **kwargs)

        monkeypatch.setattr(sns, name, spy)
    return calls


def _bar_heights(ax) -> list[list[float]]:
    return [[p.get_height() for p in c] for c in ax.containers if isinstance(c, BarContainer)]


def _blend(gray: int, colour: tuple[int, int, int]) -> list[int]:
    return [int(np.round((1 - OVERLAY_ALPHA) * gray + OVERLAY_ALPHA * c)) for c in colour]


def test_overlay_colours_are_exact():
    image = np.full((2, 3), 100, np.uint8)
    truth = np.array([[1, 1, 0], [0, 0, 0]], bool)
    pred = np.array([[1, 0, 1], [0, 0, 0]], bool)
    out = overlay(image, truth, pred)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == _blend(100, OVERLAY_COLOURS["true positive"])
    assert out[0, 1].tolist() == _blend(100, OVERLAY_COLOURS["false negative"])
    assert out[0, 2].tolist() == _blend(100, OVERLAY_COLOURS["false positive"])
    assert out[1].tolist() == [[100, 100, 100]] * 3
    assert overlay(image, truth)[0, 0].tolist() == _blend(100, OVERLAY_COLOURS["truth"])
    assert overlay(image, None, pred)[0, 2].tolist() == _blend(100, OVERLAY_COLOURS["prediction"])
    assert len({tuple(c) for c in OVERLAY_COLOURS.values()}) == len(OVERLAY_COLOURS)
    with pytest.raises(ValueError, match="shape"):
        overlay(image, np.zeros((3, 3), bool))


# --- 01_explore ---------------------------------------------------------------------------------------


def _write(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), array)
    return str(path)


@pytest.fixture
def pairs(tmp_path) -> pd.DataFrame:
    """10 pairs of 16x16 images, positives front-loaded like the Kaggle CSVs."""
    rows = []
    for i in range(10):
        positive = i < 5
        mask = np.zeros((SIZE, SIZE), np.uint8)
        if positive:
            mask[2 : 2 + i + 1, 3:6] = 255
            if i >= 3:
                mask[12:14, 12:14] = 255  # a second region
        name = f"{i}_train_{int(positive)}_.png"
        rows.append(
            {
                "name": name,
                "has_pneumo": int(positive),
                "stage": "train" if i % 2 else "test",
                "image_path": _write(tmp_path / "png_images" / name, np.full((SIZE, SIZE), 10 * i, np.uint8)),
                "mask_path": _write(tmp_path / "png_masks" / name, mask),
                "width": SIZE,
                "height": SIZE,
                "fg_pixels": int((mask > 0).sum()),
                "components": (2 if i >= 3 else 1) if positive else 0,
            }
        )
    return pd.DataFrame(rows)


def test_example_grid_mixes_positives_and_negatives(pairs):
    fig = plots.plot_example_grid(pairs, n=4, seed=0)
    assert len(fig.axes) == 4
    titles = [ax.get_title() for ax in fig.axes]
    assert sum("positive" in t for t in titles) == 2 and sum("negative" in t for t in titles) == 2
    chosen = plots.sample_examples(pairs, n=4, seed=0)
    assert set(chosen["name"]) != set(pairs["name"].head(4))
    for title, row in zip(titles, chosen.itertuples(), strict=True):
        assert title.startswith(row.name)
        if row.has_pneumo:
            assert f"{row.fg_pixels} px" in title
    assert len(plots.sample_examples(pairs.head(5), n=4)) == 4  # only positives: still n images


def test_area_distribution_is_a_seaborn_histogram_per_split(pairs, seaborn_calls):
    fig = plots.plot_area_distribution(pairs)
    ax = fig.axes[0]
    assert seaborn_calls == [("histplot", ax)]
    heights = _bar_heights(ax)
    assert len(heights) == 2 and sorted(sum(h) for h in heights) == [2, 3]  # train: 2 masks, test: 3
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["test (3 masks)", "train (2 masks)"]
    assert ax.get_legend().get_title().get_text() == "split"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("mask area / image area (log scale)", "positive images")
    left = min(p.get_x() for c in ax.containers for p in c)
    right = max(p.get_x() + p.get_width() for c in ax.containers for p in c)
    fractions = pairs.loc[pairs["has_pneumo"] == 1, "fg_pixels"] / SIZE**2
    assert left <= fractions.min() and right >= fractions.max()

    empty = plots.plot_area_distribution(pairs[pairs["has_pneumo"] == 0])
    assert "no positive masks" in [t.get_text() for t in empty.axes[0].texts]


def test_components_and_images_per_patient_are_seaborn_bars(pairs, seaborn_calls):
    fig = plots.plot_components(pairs)
    ax = fig.axes[0]
    assert seaborn_calls == [("barplot", ax)]
    assert _bar_heights(ax) == [components_table(pairs)["masks"].tolist()] == [[3, 2]]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2"]
    assert [t.get_text() for t in ax.texts] == ["3", "2"]  # the bar labels
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["positive masks"]
    assert len(plots.plot_components(pairs[pairs["has_pneumo"] == 0]).axes[0].patches) == 0

    seaborn_calls.clear()
    per_patient = pd.DataFrame({"images": [1, 2, 5], "patients": [7, 3, 1]})
    fig = plots.plot_images_per_patient(per_patient)
    ax = fig.axes[0]
    assert seaborn_calls == [("barplot", ax)]
    assert [p.get_height() for p in ax.patches] == [7, 3, 1]
    assert [p.get_x() + p.get_width() / 2 for p in ax.patches] == pytest.approx([1, 2, 5])  # numeric x kept
    assert ax.get_yscale() == "log" and ax.get_title() == "Images per patient (11 patients)"


def test_class_balance_is_seaborn_bars_of_the_table(pairs, seaborn_calls):
    table = class_pixel_table(pairs)
    fig = plots.plot_class_balance(table)
    pixels_ax, images_ax = fig.axes
    assert seaborn_calls == [("barplot", pixels_ax), ("barplot", images_ax)]
    pixel_bars = [p for c in pixels_ax.containers for p in c]
    image_bars = [p for c in images_ax.containers for p in c]
    assert [p.get_height() for p in pixel_bars] == pytest.approx(table["pixel percentage"].tolist())
    assert [p.get_height() for p in image_bars] == [10, 5]
    assert [p.get_facecolor() for p in image_bars] == [to_rgba(c) for c in plots.CLASS_COLOURS]
    assert [t.get_text() for t in images_ax.get_xticklabels()] == ["background", "pneumothorax"]
    assert [t.get_text() for t in pixels_ax.texts] == [f"{v:.2f} %" for v in table["pixel percentage"]]
    assert pixels_ax.get_yscale() == "log" and fig.get_suptitle() == "Class balance"


def test_theme_is_set_once_at_import(monkeypatch, pairs, result):
    calls = []
    monkeypatch.setattr(sns, "set_theme", lambda **kwargs: calls.append(kwargs))
    importlib.reload(plots)
    assert calls == [plots.THEME]
    from helpers.evaluation import comparison_table

    plots.plot_area_distribution(pairs)
    plots.plot_components(pairs)
    plots.plot_images_per_patient(pd.DataFrame({"images": [1, 2], "patients": [3, 1]}))
    plots.plot_class_balance(class_pixel_table(pairs))
    plots.plot_lr_comparison(comparison_table([result]))
    plots.plot_confusion(result)
    plots.plot_examples(result, "best", n=1)
    assert calls == [plots.THEME]  # no figure sets it again
    assert plt.get_fignums() == []  # seaborn drew on the figures' own axes: no pyplot figure left open
    with sns.axes_style(plots.THEME["style"]), sns.plotting_context(plots.THEME["context"]):
        themed = {key: mpl.rcParams[key] for key in ("axes.grid", "axes.facecolor", "font.size", "grid.color")}
    assert {key: mpl.rcParams[key] for key in themed} == themed  # the import's theme is in force
    assert mpl.rcParams["font.size"] != mpl.rcParamsDefault["font.size"]


# --- 03_train -----------------------------------------------------------------------------------------


def _fake_run(root: Path, lr: float, losses: list[float], dice: list[float]) -> Path:
    work_dir = root / "demo" / f"lr{lr:g}"
    (work_dir / "20260101_000000" / "vis_data").mkdir(parents=True)
    (work_dir / "manifest.json").write_text(json.dumps({"lr": lr}))
    lines = [{"step": 10 * (i + 1), "loss": loss, "lr": lr, "time": 0.1} for i, loss in enumerate(losses)]
    lines += [
        {
            "step": 20 * (i + 1),
            "mIoU": 50.0,
            "mDice": 60.0 + d,
            "aAcc": 99.0,
            "IoU.pneumothorax": d / 2,
            "Dice.pneumothorax": d,
        }
        for i, d in enumerate(dice)
    ]
    text = "\n".join(json.dumps(line) for line in lines)
    (work_dir / "20260101_000000" / "vis_data" / "scalars.json").write_text(text)
    return work_dir


def test_learning_curves_one_line_per_run(tmp_path):
    a = _fake_run(tmp_path, 0.01, [1.0, 0.8, 0.5, 0.4], [10.0, 20.0])
    b = _fake_run(tmp_path, 0.001, [1.0, 0.9, 0.85, 0.8], [5.0, 7.0])
    fig = plots.plot_learning_curves([a, b])
    loss_ax, val_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["lr 0.01", "lr 0.001"]
    assert loss_ax.lines[0].get_xdata().tolist() == [10, 20, 30, 40]
    assert loss_ax.lines[1].get_ydata().tolist() == [1.0, 0.9, 0.85, 0.8]
    assert len(val_ax.lines) == 4
    dashed = [line for line in val_ax.lines if line.get_label() == "lr 0.01: Dice.pneumothorax"]
    assert dashed[0].get_ydata().tolist() == [10.0, 20.0]

    single = plots.plot_learning_curves({"mine": a})
    assert [line.get_label() for line in single.axes[0].lines] == ["mine"]


@pytest.mark.slow
def test_learning_curves_of_a_real_run(trained_demo_run):
    fig = plots.plot_learning_curves(trained_demo_run.work_dir)
    loss_ax, val_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["lr 0.003"]
    assert len(loss_ax.lines[0].get_xdata()) > 1
    assert {line.get_label() for line in val_ax.lines} == {"lr 0.003: mDice", "lr 0.003: Dice.pneumothorax"}
    assert val_ax.lines[0].get_xdata().tolist() == [30, 60]


# --- 05_visualize -------------------------------------------------------------------------------------

NAMES = ["a", "b", "c", "d", "e", "f"]


def _square(mask: np.ndarray, row: int, col: int, value=True) -> np.ndarray:
    mask[row : row + 4, col : col + 4] = value
    return mask


def _hand_result(root: Path, run_name: str = "lr0.003"):
    """An EvalResult of 6 images: Dice a=1, b=0.5, c=0 (missed), d=2/3, e=false positive, f=true negative."""
    from helpers.core.metrics import bootstrap_ci, per_image_dice, pixel_counts, summary_metrics
    from helpers.evaluation import EvalResult
    from helpers.postprocessing import PostProcess, apply_postprocess

    zeros = lambda: np.zeros((SIZE, SIZE), bool)  # noqa: E731
    truths = [_square(zeros(), 2, 2) for _ in range(4)] + [zeros(), zeros()]
    preds = [
        _square(zeros(), 2, 2),
        _square(zeros(), 2, 4),
        zeros(),
        _square(_square(zeros(), 2, 2), 10, 10),
        _square(zeros(), 5, 5),
        zeros(),
    ]
    probs = np.full((6, SIZE, SIZE), 20, np.uint8)
    for prob, pred in zip(probs, preds, strict=True):
        prob[pred] = 230
    probs[2, 3, 3] = 100  # c: some signal below the threshold
    run_dir = root / "runs" / "demo" / run_name
    run_dir.mkdir(parents=True)
    (run_dir / run_folders.MANIFEST_FILE).write_text(json.dumps({"lr": 0.003, "parameters": {"config": "demo"}}))
    data_root = root / "prepared"
    for i, (name, truth) in enumerate(zip(NAMES, truths, strict=True)):
        _write(data_root / "images" / "test" / f"{name}.png", np.full((SIZE, SIZE), 40 * i, np.uint8))
        _write(data_root / "masks" / "test" / f"{name}.png", truth.astype(np.uint8))
    out_dir = root / "eval" / run_name
    out_dir.mkdir(parents=True)
    np.save(out_dir / "probs.npy", probs)
    pp = PostProcess()
    masks = [apply_postprocess(p, pp) for p in probs]
    counts = np.array([pixel_counts(m, t) for m, t in zip(masks, truths, strict=True)])
    max_prob = probs.reshape(6, -1).max(1) / 255
    summary = summary_metrics(counts, max_prob)
    ci = bootstrap_ci(counts, n_boot=20)
    per_image = pd.DataFrame(
        {
            "name": NAMES,
            "positive": [t.any() for t in truths],
            "true_area": [int(t.sum()) for t in truths],
            "pred_area": [int(m.sum()) for m in masks],
            "dice": per_image_dice(counts),
            "pp_area": [int(m.sum()) for m in masks],
            "pp_dice": per_image_dice(counts),
            "max_prob": max_prob,
        }
    )
    metrics = {
        "mmseg": summary,
        "postprocessed": summary,
        "ci": {"mmseg": ci, "postprocessed": ci, "n_boot": 20},
        "postprocess": pp.as_dict(),
        "image_shape": [SIZE, SIZE],
    }
    return EvalResult(
        run_dir=run_dir,
        checkpoint=run_dir / "best.pth",
        split="test",
        out_dir=out_dir,
        data_root=data_root,
        per_image=per_image,
        metrics=metrics,
        postprocess=pp,
        probs_path=out_dir / "probs.npy",
    )


@pytest.fixture
def result(tmp_path):
    return _hand_result(tmp_path)


def test_select_examples(result):
    table = result.per_image
    assert np.allclose(table["pp_dice"], [1.0, 0.5, 0.0, 2 / 3, 0.0, 1.0])
    pick = lambda which, n=2: [NAMES[i] for i in plots.select_examples(table, which, n)]  # noqa: E731
    assert pick("worst") == ["c", "b"]
    assert pick("best") == ["a", "d"]
    assert pick("median") == ["b", "d"]
    assert pick("false_positive") == ["e"]
    assert pick("missed") == ["c"]
    assert pick("worst", 10) == ["c", "b", "d", "a"]  # negatives never among best / worst / median
    with pytest.raises(ValueError, match="which"):
        plots.select_examples(table, "random")


def test_plot_examples_worst_shows_the_minimum_dice(result):
    from helpers.evaluation import predicted_mask

    fig = plots.plot_examples(result, "worst", n=2)
    assert len(fig.axes) == 6  # 2 rows of image | truth | overlay
    first_overlay = fig.axes[2]
    assert f"Dice {result.per_image['pp_dice'].min():.3f}" in first_overlay.get_title()
    assert fig.axes[0].get_title().startswith("c")
    image = cv2.imread(str(result.data_root / "images" / "test" / "c.png"), cv2.IMREAD_GRAYSCALE)
    truth = cv2.imread(str(result.data_root / "masks" / "test" / "c.png"), cv2.IMREAD_GRAYSCALE) > 0
    expected = overlay(image, truth, predicted_mask(result, 2))
    np.testing.assert_array_equal(np.asarray(first_overlay.images[0].get_array()), expected)
    assert fig.legends and "false negative" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_plot_examples_empty_selection_says_none(result):
    result.per_image.loc[result.per_image["name"] == "e", "pp_area"] = 0
    fig = plots.plot_examples(result, "false_positive")
    assert len(fig.axes) == 1
    assert fig.axes[0].texts[0].get_text().startswith("none")


def _bars_by_metric(ax, metrics) -> list[dict[str, float]]:
    """Per bar container (one per table row), metric -> bar height, from where each bar stands."""
    return [
        {metrics[round(p.get_x() + p.get_width() / 2)]: p.get_height() for p in c}
        for c in ax.containers
        if isinstance(c, BarContainer)
    ]


def test_lr_comparison_is_seaborn_grouped_bars_with_the_intervals(result, seaborn_calls):
    from helpers.evaluation import comparison_table

    table = comparison_table([result])
    fig = plots.plot_lr_comparison(table)
    ax = fig.axes[0]
    assert seaborn_calls == [("barplot", ax)]
    metrics = list(plots.LR_COMPARISON_METRICS)
    bars = _bars_by_metric(ax, metrics)
    assert len(bars) == len(table) == 5  # our run, the all-empty baseline, 3 seed rows
    for heights, (_, row) in zip(bars, table.iterrows(), strict=True):
        assert heights == pytest.approx({m: row[m] for m in metrics if not np.isnan(row[m])})
    assert bars[2] == {"mIoU": 76.48, "mDice": 84.68}  # the seed reported two metrics
    intervals = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(intervals) == 1  # only our run has bootstrap intervals
    segments = intervals[0].lines[2][0].get_segments()
    run = table.iloc[0]
    assert np.array([segment[:, 1] for segment in segments]) == pytest.approx(
        np.array([(run[f"{m}_lo"], run[f"{m}_hi"]) for m in metrics])
    )
    seed_bars = [c for c in ax.containers if isinstance(c, BarContainer)][2]
    assert {p.get_hatch() for p in seed_bars} == {"//"}
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "lr 0.003" and "seed (reported), lr 0.01" in labels and "all-empty baseline" in labels
    assert [t.get_text() for t in ax.get_xticklabels()] == metrics


def test_dice_vs_area_roc_and_confusion(result, tmp_path):
    fig = plots.plot_dice_vs_area(result)
    detected, missed = fig.axes[0].collections
    assert len(detected.get_offsets()) == 3 and len(missed.get_offsets()) == 1

    other = _hand_result(tmp_path / "other", run_name="lr0.01")
    fig = plots.plot_roc([result, other])
    lines = fig.axes[0].lines
    assert len(lines) == 3  # two results and the chance diagonal
    assert lines[0].get_label() == f"demo/lr0.003 [test]: AUC {result.metrics['mmseg']['det_auc']:.3f}"
    assert plots.plot_roc({"mine": result}).axes[0].lines[0].get_label().startswith("mine: AUC")


def test_confusion_is_a_seaborn_heatmap_of_the_counts(result, seaborn_calls):
    fig = plots.plot_confusion(result)
    ax = fig.axes[0]
    assert seaborn_calls == [("heatmap", ax)] and len(fig.axes) == 1  # no colour bar
    detection = result.metrics["postprocessed"]
    expected = [[detection["det_tn"], detection["det_fp"]], [detection["det_fn"], detection["det_tp"]]]
    assert np.asarray(ax.collections[0].get_array()).reshape(2, 2).tolist() == expected == [[1, 1], [1, 3]]
    assert [t.get_text() for t in ax.texts] == ["1", "1", "1", "3"]  # tn, fp / fn, tp
    assert [t.get_text() for t in ax.get_xticklabels()] == ["empty", "pneumothorax"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["negative", "positive"]
    assert {t.get_rotation() for t in ax.get_yticklabels()} == {0}
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "truth")


def test_theme_leaves_the_rendered_overlay_colours_exact(result):
    """Drawn through Agg, the overlay's true-positive square shows the overlay colour itself."""
    fig = plots.plot_examples(result, "best", n=1)  # image a: prediction == truth, the square at rows 2-5
    FigureCanvasAgg(fig).draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())
    overlay_ax = fig.axes[2]
    assert not overlay_ax.axison  # no themed grid or face over the picture
    x, y = overlay_ax.transData.transform((3.5, 3.5))
    expected = _blend(40 * NAMES.index("a"), OVERLAY_COLOURS["true positive"])
    assert pixels[pixels.shape[0] - int(y), int(x), :3].tolist() == expected


@pytest.mark.slow
def test_visualize_a_real_evaluation(trained_demo_run, demo_prepared, tmp_path):
    """Every figure of 05 on a real evaluation shows what the evaluation wrote: the selected images with
    their own overlays, the table's bar heights, the metrics' detection counts."""
    from helpers.evaluation import comparison_table, load_eval, predicted_mask
    from helpers.workflow.evaluate_runs import evaluate_run

    evaluate_run(
        trained_demo_run.work_dir,
        split="test",
        prepared_root=demo_prepared.out_dir,
        postprocess="none",
        n_boot=10,
        out_dir=tmp_path / "eval",
        device="cpu",
    )
    real = load_eval(tmp_path / "eval")
    for which in plots.EXAMPLE_KINDS:
        for postprocessed in (True, False):
            chosen = plots.select_examples(real.per_image, which, 2, postprocessed)
            fig = plots.plot_examples(real, which, n=2, postprocessed=postprocessed)
            if not chosen:
                assert len(fig.axes) == 1 and fig.axes[0].texts[0].get_text().startswith("none")
                continue
            assert len(fig.axes) == 3 * len(chosen)
            for row, index in enumerate(chosen):
                name = real.per_image["name"].iloc[index]
                assert fig.axes[3 * row].get_title().startswith(name)
                image = read_gray8(real.data_root / "images" / "test" / f"{name}.png")
                truth = read_gray8(real.data_root / "masks" / "test" / f"{name}.png") > 0
                expected = overlay(image, truth, predicted_mask(real, index, postprocessed))
                np.testing.assert_array_equal(np.asarray(fig.axes[3 * row + 2].images[0].get_array()), expected)
    positive = real.per_image[real.per_image["positive"]]
    detected, missed = plots.plot_dice_vs_area(real).axes[0].collections
    assert len(detected.get_offsets()) + len(missed.get_offsets()) == len(positive)
    assert len(missed.get_offsets()) == int((positive["pp_area"] == 0).sum())
    assert plots.plot_roc(real).axes[0].lines[0].get_label().endswith(f"AUC {real.metrics['mmseg']['det_auc']:.3f}")
    table = comparison_table([real])
    metrics = list(plots.LR_COMPARISON_METRICS)
    bars = _bars_by_metric(plots.plot_lr_comparison(table).axes[0], metrics)
    assert bars[0] == pytest.approx({m: table.iloc[0][m] for m in metrics if not np.isnan(table.iloc[0][m])})
    detection = real.metrics["postprocessed"]
    texts = [t.get_text() for t in plots.plot_confusion(real).axes[0].texts]
    assert texts == [str(detection[k]) for k in ("det_tn", "det_fp", "det_fn", "det_tp")]
