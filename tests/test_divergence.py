"""A diverging training stops and says so (helpers.modeling.divergence): a demo-sized run with a huge learning
rate fails within a few iterations, is marked failed, leaves no checkpoint of a non-finite model, its notebook
fails; 04 over it and a healthy run evaluates the healthy one and marks the other failed."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from helpers.core import paths, run_folders
from helpers.modeling.checkpoint import NonFiniteModelError, load_checkpoint_safely, non_finite_tensors

HUGE_LR = 1e30


@pytest.fixture(scope="module")
def diverged_run(demo_prepared, tmp_path_factory):
    """(work_dir, the TrainingDiverged raised) of the demo config at lr 1e30, 64x64, 8 iterations."""
    from helpers.modeling.divergence import TrainingDiverged
    from helpers.modeling.train import TrainParams, run_training

    work_dir = tmp_path_factory.mktemp("runs") / "demo" / f"lr{HUGE_LR:g}"
    with pytest.raises(TrainingDiverged) as raised:
        run_training(
            TrainParams(
                config=paths.DEMO_CONFIG,
                prepared_root=str(demo_prepared.out_dir),
                img_size=64,
                lr=HUGE_LR,
                max_iters=8,
                val_interval=4,
                work_dir=str(work_dir),
            )
        )
    return work_dir, raised.value


def test_a_huge_learning_rate_stops_the_run_with_the_iteration_and_the_lr(diverged_run):
    work_dir, error = diverged_run
    message = str(error)
    assert "training diverged at iteration" in message and f"lr {HUGE_LR:g}" in message
    assert "learning rate" in message
    iteration = int(message.split("iteration ")[1].split(":")[0])
    assert 1 <= iteration < 8  # within a few iterations, not at the end
    train_rows, _ = run_folders.read_scalars(work_dir)
    assert len(train_rows) < 8


def test_the_diverged_run_is_marked_failed_and_keeps_no_checkpoint_of_a_nonfinite_model(diverged_run):
    work_dir, error = diverged_run
    metrics = json.loads((work_dir / run_folders.METRICS_FILE).read_text())  # strict JSON: no NaN in it
    assert metrics["status"] == "failed" and metrics["error"] == str(error)
    best, _ = run_folders.find_checkpoints(work_dir)
    assert best is None
    for checkpoint in work_dir.glob("*.pth"):
        assert non_finite_tensors(load_checkpoint_safely(checkpoint)["state_dict"]) == []


def test_the_hook_refuses_to_save_or_validate_a_nonfinite_model():
    from helpers.modeling.divergence import DivergenceHook, TrainingDiverged

    logged = []
    runner = SimpleNamespace(
        iter=41,
        cfg=SimpleNamespace(optim_wrapper=SimpleNamespace(optimizer=SimpleNamespace(lr=0.5))),
        logger=SimpleNamespace(error=logged.append),
        model=torch.nn.Linear(2, 1),
    )
    hook = DivergenceHook()
    with pytest.raises(TrainingDiverged, match=r"iteration 42: 1 weight tensors hold NaN .*nothing saved"):
        hook.before_save_checkpoint(runner, {"state_dict": {"w": torch.tensor([1.0, math.nan]), "b": torch.zeros(1)}})
    hook.before_save_checkpoint(runner, {"state_dict": {"w": torch.ones(2)}})  # finite: saved as usual
    with torch.no_grad():
        runner.model.weight[0, 0] = math.inf
    with pytest.raises(TrainingDiverged, match="no best checkpoint saved"):
        hook.before_val_epoch(runner)
    assert logged and "lr 0.5" in logged[0]


def test_evaluation_goes_on_past_the_diverged_run_and_reports_it_failed(diverged_run, trained_demo_run, tmp_path):
    from helpers.evaluation import STATUS_FAILED, STATUS_OK, comparison_table
    from helpers.workflow.evaluate_runs import evaluate_run_folders

    work_dir, error = diverged_run
    results, failures = evaluate_run_folders(
        [work_dir, trained_demo_run.work_dir], split="test", outputs=tmp_path, postprocess="none", n_boot=10
    )
    assert [r.run_dir for r in results] == [trained_demo_run.work_dir.resolve()]
    assert [f.run_dir for f in failures] == [work_dir.resolve()]
    assert "its training failed" in failures[0].error and str(error) in failures[0].error
    table = comparison_table(results, failures)
    ours = table[table["status"].isin([STATUS_OK, STATUS_FAILED])]
    assert list(ours["status"]) == [STATUS_OK, STATUS_FAILED]
    failed = ours.iloc[1]
    assert failed["lr"] == HUGE_LR and pd.isna(failed["mDice"]) and "diverged" in failed["error"]
    assert ours.iloc[0]["mDice"] > 0
    assert not run_folders.eval_dir(work_dir, "test", tmp_path).exists()


def test_a_nonfinite_checkpoint_is_refused_by_evaluation_predict_and_export(trained_demo_run, demo_prepared, tmp_path):
    from helpers.modeling.export import export_onnx
    from helpers.predict import predict_images
    from helpers.workflow.evaluate_runs import evaluate_run_folders

    checkpoint = load_checkpoint_safely(trained_demo_run.best_checkpoint)
    name = next(k for k, v in checkpoint["state_dict"].items() if v.is_floating_point())
    checkpoint["state_dict"][name][...] = math.nan
    bad = tmp_path / "run" / "nan.pth"
    bad.parent.mkdir()
    torch.save(checkpoint, bad)
    config = trained_demo_run.work_dir / run_folders.CONFIG_FILE
    image = next((demo_prepared.out_dir / "images" / "test").glob("*.png"))
    with pytest.raises(NonFiniteModelError, match=rf"{bad}: the model holds NaN or infinite weights \(1 of .*{name}"):
        predict_images(bad, [image], tmp_path / "predictions", config=config)
    assert not (tmp_path / "predictions").exists()
    with pytest.raises(NonFiniteModelError, match=str(bad)):
        export_onnx(bad, tmp_path / "model.onnx", config=config)
    assert not (tmp_path / "model.onnx").exists()
    (bad.parent / run_folders.CONFIG_FILE).write_text(config.read_text())
    results, failures = evaluate_run_folders(
        [bad], split="test", outputs=tmp_path / "outputs", postprocess="none", n_boot=10
    )
    assert results == [] and "NonFiniteModelError" in failures[0].error and str(bad) in failures[0].error


def test_the_sweep_marks_the_diverged_run_failed_and_its_notebook_fails(demo_prepared, tmp_path):
    from helpers.workflow.sweep import sweep

    parameters = {
        "config": paths.DEMO_CONFIG,
        "prepared_root": str(demo_prepared.out_dir),
        "img_size": 64,
        "max_iters": 4,
        "val_interval": 4,
    }
    table = sweep([HUGE_LR], parameters, tmp_path)
    row = table.iloc[0]
    assert not row["ok"] and row["error"].startswith("training diverged at iteration")
    work_dir = run_folders.run_dir(paths.DEMO_CONFIG, HUGE_LR, tmp_path)
    assert json.loads((work_dir / run_folders.METRICS_FILE).read_text())["status"] == "failed"
    assert "TrainingDiverged" in (work_dir / "03_train.html").read_text()


def test_the_04_notebook_reports_the_diverged_run_failed_beside_the_healthy_one(
    diverged_run, trained_demo_run, demo_prepared, tmp_path
):
    from helpers.workflow.notebook_runner import run_notebook

    work_dir, error = diverged_run
    outputs = tmp_path / "outputs"
    report = run_notebook(
        "04_evaluate",
        {
            "runs": [str(work_dir), str(trained_demo_run.work_dir)],
            "outputs_dir": str(outputs),
            "prepared_root": str(demo_prepared.out_dir),
            "n_boot": 10,
        },
        outputs / "reports",
    )
    assert report.ok, report.error
    comparison = json.loads((outputs / "eval" / "comparison.json").read_text())
    statuses = {row["lr"]: (row["status"], row["error"]) for row in comparison if row["status"] != "reference"}
    assert statuses[0.003] == ("ok", "")
    assert statuses[HUGE_LR][0] == "failed" and str(error) in statuses[HUGE_LR][1]
    assert "failed" in report.html.read_text()
