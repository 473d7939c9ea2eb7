"""Folds and ensembles: a 2-fold demo sweep trains one run per fold, the ensemble's probability is the mean
of its members' (on one image, and over a split), checkpoint averaging gives the mean of the weights, and
an ensemble is evaluated beside single models in the comparison table."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from helpers.core import run_folders
from helpers.core.paths import DEMO_CONFIG
from helpers.core.run_folders import read_scalars
from helpers.evaluation import comparison_table
from helpers.modeling.checkpoint import load_checkpoint_safely
from helpers.modeling.ensemble import (
    average_state_dicts,
    fold_groups,
    load_ensemble,
    top_k_checkpoints,
    write_averaged_checkpoint,
)
from helpers.modeling.inference import build_split_loader, foreground_probability, load_model, predict_split
from helpers.workflow.evaluate_runs import evaluate_ensemble, evaluate_run


def test_average_state_dicts_is_the_mean_and_keeps_integer_buffers():
    generator = torch.Generator().manual_seed(0)
    states = [
        {
            "w": torch.randn(3, 4, generator=generator),
            "b": torch.randn(4, generator=generator).half(),
            "bn.num_batches_tracked": torch.tensor(10 * (i + 1)),
        }
        for i in range(3)
    ]
    averaged = average_state_dicts(states)
    assert torch.allclose(averaged["w"], (states[0]["w"] + states[1]["w"] + states[2]["w"]) / 3, atol=1e-6)
    assert averaged["b"].dtype == torch.float16
    assert torch.allclose(averaged["b"].float(), torch.stack([s["b"].float() for s in states]).mean(0), atol=1e-3)
    assert averaged["bn.num_batches_tracked"].item() == 10
    with pytest.raises(ValueError, match="other keys"):
        average_state_dicts([states[0], {"w": states[1]["w"]}])


@pytest.fixture(scope="module")
def fold_sweep(demo_raw_dir, tmp_path_factory):
    """The demo data prepared with 2 folds at 64x64 and `sweep(..., folds=2)` through 03_train's notebook."""
    from helpers.data.prepare import prepare_dataset
    from helpers.workflow.sweep import sweep

    prepared = prepare_dataset(demo_raw_dir, tmp_path_factory.mktemp("prepared"), img_size=64, folds=2, workers=1)
    outputs = tmp_path_factory.mktemp("outputs")
    parameters = {
        "config": DEMO_CONFIG,
        "prepared_root": str(prepared.out_dir),
        "img_size": 64,
        "batch_size": 4,
        "max_iters": 4,
        "val_interval": 2,
        "workers": 0,
        "keep_checkpoints": -1,
    }
    table = sweep([0.003], parameters, outputs, folds=2)
    return prepared, outputs, table


@pytest.mark.slow
def test_two_fold_sweep_trains_one_run_per_fold(fold_sweep):
    prepared, outputs, table = fold_sweep
    assert table["ok"].all(), table["error"].tolist()
    assert table["fold"].tolist() == [0, 1]
    runs = run_folders.trained_runs(outputs)
    assert [r.name for r in runs] == ["lr0.003_fold0", "lr0.003_fold1"]
    for fold, run in enumerate(runs):
        assert run_folders.read_manifest(run)["parameters"]["fold"] == fold
        config = (run / run_folders.CONFIG_FILE).read_text()
        assert f"fold{fold}_train.txt" in config and f"fold{fold}_val.txt" in config
        _, val_rows = read_scalars(run)
        assert [row["step"] for row in val_rows] == [2, 4]
        assert (run / "iter_2.pth").is_file() and (run / "iter_4.pth").is_file()  # keep_checkpoints=-1
    assert list(fold_groups(runs).values()) == [runs]


def _probability(model, batch) -> torch.Tensor:
    """One segmentor's pneumothorax probability for a loader batch, as helpers.modeling.inference computes it."""
    from mmseg.structures import SegDataSample

    data = model.data_preprocessor(batch, False)
    samples = [SegDataSample(metainfo=s.metainfo) for s in data["data_samples"]]
    samples = model.postprocess_result(model.inference(data["inputs"], [s.metainfo for s in samples]), samples)
    return foreground_probability(torch.stack([s.seg_logits.data for s in samples]))


@pytest.mark.slow
def test_ensemble_probability_is_the_mean_of_the_members(fold_sweep):
    prepared, outputs, _ = fold_sweep
    runs = run_folders.trained_runs(outputs)
    ensemble, _ = load_ensemble(runs, "cpu")
    batch = next(iter(build_split_loader(ensemble.cfg, prepared.out_dir, "test", 1)))
    with torch.no_grad():
        members = [_probability(load_model(run, "cpu").net, batch) for run in runs]  # loaded on their own
        combined = _probability(ensemble.net, batch)
    assert not torch.allclose(members[0], members[1])  # two different models, so the mean says something
    assert torch.allclose(combined, (members[0] + members[1]) / 2, atol=1e-6)

    together = predict_split(ensemble, prepared.out_dir, "test", batch_size=4)
    alone = [predict_split(load_model(run, "cpu"), prepared.out_dir, "test", batch_size=4) for run in runs]
    mean = (alone[0].probs.astype(float) + alone[1].probs.astype(float)) / 2  # each quantized to 1/255
    assert np.abs(together.probs.astype(float) - mean).max() <= 1.0
    # the ensemble's own decision is mean p > 0.5; probs hold round(255 p)
    assert (together.probs[together.default_pred] >= 128).all()
    assert together.default_pred[together.probs >= 129].all()


@pytest.mark.slow
def test_checkpoint_averaging_of_the_top_k(fold_sweep):
    _, outputs, _ = fold_sweep
    run = run_folders.trained_runs(outputs)[0]
    _, val_rows = read_scalars(run)
    order = [row["step"] for row in sorted(val_rows, key=lambda r: r["mDice"], reverse=True)]
    chosen = top_k_checkpoints(run, 2)
    assert [int(p.stem.rsplit("_", 1)[-1]) for p in chosen] == order
    averaged_path = write_averaged_checkpoint(run, 2)
    averaged = load_checkpoint_safely(averaged_path)
    assert averaged["meta"]["averaged_from"] == [p.name for p in chosen]
    states = [load_checkpoint_safely(p)["state_dict"] for p in chosen]
    for key, value in averaged["state_dict"].items():
        if value.is_floating_point():
            assert torch.allclose(value, (states[0][key] + states[1][key]) / 2, atol=1e-6), key
    mtime = averaged_path.stat().st_mtime_ns
    assert write_averaged_checkpoint(run, 2) == averaged_path and averaged_path.stat().st_mtime_ns == mtime  # skipped
    assert load_model(averaged_path, "cpu").checkpoint == averaged_path


@pytest.mark.slow
def test_evaluate_ensemble_joins_the_comparison_table(fold_sweep):
    prepared, outputs, _ = fold_sweep
    runs = run_folders.trained_runs(outputs)
    singles = [
        evaluate_run(run, split="test", n_boot=20, device="cpu", out_dir=run_folders.eval_dir(run, "test", outputs))
        for run in runs
    ]
    ((name, members),) = fold_groups(runs).items()
    result = evaluate_ensemble(members, name, split="test", tta=True, top_k=2, n_boot=20, device="cpu", outputs=outputs)
    assert result.metrics["postprocess"]["tuned_on"].startswith("out-of-fold")
    assert result.metrics["dual_threshold"]["val_images"] == sum(
        len((prepared.out_dir / f"fold{k}_val.txt").read_text().split()) for k in (0, 1)
    )
    assert [c.endswith("averaged_top2.pth") for c in result.metrics["members"]] == [True, True]
    assert result.metrics["tta"] is True
    table = comparison_table([*singles, result])
    rows = table[table["split"] == "test"].set_index("config")
    assert {f"{DEMO_CONFIG} (fold 0)", f"{DEMO_CONFIG} (fold 1)", name} <= set(rows.index)
    for label in (name, f"{DEMO_CONFIG} (fold 0)"):
        row = rows.loc[label]
        assert row["images"] == len(result.per_image)
        assert (
            not math.isnan(row["image_dice_lo"]) and row["image_dice_lo"] <= row["image_dice"] <= row["image_dice_hi"]
        )
    # a single run's evaluation folder and the ensemble's: the same files, the same keys with the same types
    single, ensemble = singles[0].out_dir, result.out_dir
    assert sorted(p.name for p in single.iterdir()) == sorted(p.name for p in ensemble.iterdir())
    for file in (run_folders.EVAL_METRICS_FILE, run_folders.EVAL_INFO_FILE):
        assert _shape(json.loads((single / file).read_text())) == _shape(json.loads((ensemble / file).read_text())), (
            file
        )
    single_rows, ensemble_rows = (pd.read_csv(d / run_folders.PER_IMAGE_FILE) for d in (single, ensemble))
    assert dict(single_rows.dtypes) == dict(ensemble_rows.dtypes)


def _shape(value, key: str = ""):
    """A JSON value's keys and leaf types, recursively (a number is a number, null stands for a number that
    was NaN); the model's own decision rule is compared as a mapping with a type."""
    if key == "decision":
        return ("decision", "type" in value)
    if isinstance(value, dict):
        return {k: _shape(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return ["list", *sorted({repr(_shape(v)) for v in value})]
    if isinstance(value, bool) or isinstance(value, str):
        return type(value).__name__
    return "number"  # int, float, or None (NaN written as null)


@pytest.mark.parametrize("task", range(6))
def test_sbatch_with_folds_has_one_job_per_lr_and_fold(tmp_path, task):
    import subprocess

    from helpers.workflow.slurm import write_sbatch

    outputs = tmp_path / "outputs"
    script = write_sbatch(
        [0.01, 0.001], {"config": DEMO_CONFIG, "max_iters": 100}, tmp_path / "sweep.sbatch", outputs=outputs, folds=3
    )
    text = script.read_text()
    assert "#SBATCH --array=0-5" in text and '--lrs "$LR" --folds 3 --fold "$FOLD"' in text
    subprocess.run(["bash", "-n", str(script)], check=True)
    # the lines that pick the job's lr and fold, run for one array index (the sweep puts that run in
    # runs.fold_run_dir's folder)
    lines = text.splitlines()
    select = "\n".join(
        lines[
            next(i for i, line in enumerate(lines) if line.startswith("LRS=")) : next(
                i for i, line in enumerate(lines) if "-m helpers sweep --no-yaml" in line
            )
        ]
    )
    out = subprocess.run(
        ["bash", "-c", f'{select}\necho "$LR $FOLD"'],
        check=True,
        capture_output=True,
        text=True,
        env={"SLURM_ARRAY_TASK_ID": str(task)},
    ).stdout.split()
    lr, fold = [0.01, 0.001][task // 3], task % 3
    assert out == [f"{lr:g}", str(fold)]


def test_cli_sweep_folds_writes_the_fold_array(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "folds.sbatch"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "helpers",
            "sweep",
            "--config",
            DEMO_CONFIG,
            "--lrs",
            "0.003",
            "--folds",
            "5",
            "--sbatch",
            str(script),
            "--outputs",
            str(tmp_path / "outputs"),
        ],
        check=True,
        capture_output=True,
    )
    text = script.read_text()
    assert "#SBATCH --array=0-4" in text and "FOLD=$((SLURM_ARRAY_TASK_ID % 5))" in text
