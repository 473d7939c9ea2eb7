"""Every run writes TensorBoard event files holding the same scalars as mmengine's scalars.json; MLflow is
one parameter away (its config is checked here; MLflow itself is not installed in the project's venv)."""

from __future__ import annotations

import json

import pytest

from helpers.core import paths
from helpers.core.paths import DEMO_CONFIG
from helpers.modeling import tracking
from helpers.modeling.train import TrainParams, build_config


def test_tensorboard_event_files_hold_the_scalars_of_scalars_json(trained_demo_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sessions = sorted(trained_demo_run.work_dir.glob("*/vis_data"))
    assert sessions
    for vis_data in sessions:
        events = list(vis_data.glob("events.out.tfevents.*"))
        assert len(events) == 1, events
        accumulator = EventAccumulator(str(events[0]), size_guidance={"scalars": 0})
        accumulator.Reload()
        logged = {
            (tag, event.step): event.value
            for tag in accumulator.Tags()["scalars"]
            for event in accumulator.Scalars(tag)
        }
        rows = [json.loads(line) for line in (vis_data / "scalars.json").read_text().splitlines()]
        expected = {(key, row["step"]): value for row in rows for key, value in row.items() if key != "step"}
        assert {"loss", "lr", "mDice"} <= {tag for tag, _ in expected}
        assert logged.keys() == expected.keys()
        for key, value in expected.items():
            assert logged[key] == pytest.approx(value, rel=1e-6, abs=1e-12), key  # TensorBoard keeps float32


def test_tensorboard_is_on_by_default_and_mlflow_off(tmp_path):
    cfg = build_config(TrainParams(config=DEMO_CONFIG, work_dir=str(tmp_path / "run")))
    assert [backend["type"] for backend in cfg.visualizer.vis_backends] == ["LocalVisBackend", "TensorboardVisBackend"]


def test_mlflow_is_one_parameter_away(tmp_path, monkeypatch):
    from mmengine.registry import VISBACKENDS

    monkeypatch.setattr(tracking, "mlflow_installed", lambda: True)  # the config only; nothing is logged
    cfg = build_config(TrainParams(config=DEMO_CONFIG, lr=0.002, work_dir=str(tmp_path / "lr0.002"), mlflow=True))
    local, tensorboard, mlflow = cfg.visualizer.vis_backends
    assert (local["type"], tensorboard["type"]) == ("LocalVisBackend", "TensorboardVisBackend")
    assert mlflow == dict(
        type="MLflowVisBackend",
        exp_name=DEMO_CONFIG,
        run_name="lr0.002",
        tracking_uri=(paths.OUTPUTS_DIR / "mlruns").resolve().as_uri(),
    )
    assert VISBACKENDS.get(mlflow["type"]) is not None


def test_mlflow_without_mlflow_installed_says_how_to_install_it(tmp_path):
    if tracking.mlflow_installed():
        pytest.skip("mlflow is installed here")
    with pytest.raises(ImportError, match="pip install mlflow-skinny"):
        build_config(TrainParams(config=DEMO_CONFIG, work_dir=str(tmp_path / "run"), mlflow=True))
