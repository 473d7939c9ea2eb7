"""03_train: the parameters reach the runner (lr, max_iters, AMP), runs resume and repeat exactly, and the
checkpoints they write load with ``weights_only=True``; the demo config learns on the demo data."""

from __future__ import annotations

import itertools
import json
import logging
import os
import pickle
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from helpers.core import paths
from helpers.core.paths import DEMO_CONFIG, SEED_CONFIG
from helpers.core.run_folders import CONFIG_FILE, MANIFEST_FILE, METRICS_FILE, read_scalars
from helpers.data.prepared_folder import PreparedDataError, prepare_command
from helpers.modeling.train import TrainParams, build_config, run_training

CONFIGS = sorted(p.stem for p in paths.CONFIGS_DIR.glob("*.py"))


def tiny_params(demo_prepared, work_dir: Path, **overrides) -> TrainParams:
    """The demo config at 64x64, batch 4, on the prepared demo data."""
    settings = dict(
        config=DEMO_CONFIG,
        prepared_root=str(demo_prepared.out_dir),
        img_size=64,
        batch_size=4,
        workers=0,
        work_dir=str(work_dir),
    )
    settings.update(overrides)
    return TrainParams(**settings)


def build_runner(cfg: Config):
    from mmengine.runner import Runner

    import helpers.data.mmseg_dataset  # noqa: F401
    import helpers.modeling  # noqa: F401

    return Runner.from_cfg(cfg)


def session_dirs(work_dir: Path) -> list[Path]:
    """mmengine's per-session log folders (timestamps, so sorted = chronological)."""
    return sorted(p.parent.parent for p in Path(work_dir).glob("*/vis_data/scalars.json"))


def session_train_steps(session: Path) -> list[int]:
    rows = [json.loads(line) for line in (session / "vis_data" / "scalars.json").read_text().splitlines()]
    return [row["step"] for row in rows if "loss" in row]


@pytest.mark.parametrize("config", [DEMO_CONFIG, SEED_CONFIG])
def test_lr_reaches_the_optimizer(config, demo_prepared, tmp_path):
    cfg = build_config(tiny_params(demo_prepared, tmp_path, config=config, lr=0.0123))
    assert cfg.optim_wrapper.optimizer.lr == 0.0123
    runner = build_runner(cfg)
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    groups = runner.optim_wrapper.optimizer.param_groups
    assert [g["lr"] for g in groups] == [0.0123] * len(groups)
    runner.param_schedulers = runner.build_param_scheduler(runner.param_schedulers)
    assert [g["initial_lr"] for g in groups] == [0.0123] * len(groups)
    warmup = cfg.param_scheduler[0]
    start = 0.0123 * warmup["start_factor"] if warmup["type"] == "LinearLR" else 0.0123
    assert groups[0]["lr"] == pytest.approx(start)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("max_iters", [10, 1000])
def test_max_iters_scales_the_schedule_and_intervals(max_iters, config):
    original = Config.fromfile(str(paths.config_path(config)))
    cfg = build_config(TrainParams(config=config, max_iters=max_iters, work_dir="unused"))
    factor = max_iters / original.train_cfg.max_iters
    assert cfg.train_cfg.max_iters == max_iters
    schedulers = cfg.param_scheduler
    assert len(schedulers) == len(original.param_scheduler)
    for scheduler in schedulers:
        assert 0 <= scheduler["begin"] < scheduler["end"] <= max_iters
    assert schedulers[0]["begin"] == 0 and schedulers[-1]["end"] == max_iters
    for before, after in itertools.pairwise(schedulers):
        assert after["begin"] == before["end"], "the schedulers must hand over without gap or overlap"
    for old, new in zip(original.param_scheduler, schedulers, strict=True):
        assert abs(new["end"] - old["end"] * factor) <= 1
    assert 1 <= cfg.train_cfg.val_interval <= max_iters
    assert cfg.train_cfg.val_interval == max(1, round(original.train_cfg.val_interval * factor))
    assert cfg.default_hooks.checkpoint.interval == cfg.train_cfg.val_interval
    assert 1 <= cfg.default_hooks.logger.interval <= max_iters


def test_a_killed_run_resumes_from_its_checkpoint_without_losing_steps(demo_prepared, tmp_path):
    work_dir = tmp_path / "run"
    params = tiny_params(demo_prepared, work_dir, max_iters=20, val_interval=5)
    cfg = build_config(params)
    assert cfg.default_hooks.logger.interval == 1
    work_dir.mkdir()
    cfg.dump(str(work_dir / "config.py"))

    process = subprocess.Popen(
        [sys.executable, "-m", "helpers.modeling.train", str(work_dir / "config.py")],
        cwd=paths.REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not (work_dir / "last_checkpoint").exists() and process.poll() is None:
            time.sleep(0.05)
        assert process.poll() is None, "the first session ended before it could be killed"
    finally:
        process.kill()  # SIGKILL: no clean-up, as a crash or a preempted job
        process.wait()
    checkpoint = work_dir / "iter_5.pth"
    assert Path((work_dir / "last_checkpoint").read_text().strip()) == checkpoint
    killed_session = session_dirs(work_dir)[0]
    assert 5 in session_train_steps(killed_session) and max(session_train_steps(killed_session)) < 20

    result = run_training(replace(params, resume=True))

    sessions = session_dirs(work_dir)
    assert len(sessions) == 2
    log_text = next(sessions[1].glob("*.log")).read_text()
    assert f"Auto resumed from the latest checkpoint {checkpoint}" in log_text
    assert "resumed epoch: 0, iter: 5" in log_text
    assert session_train_steps(sessions[1]) == list(range(6, 21))
    train_rows, val_rows = read_scalars(work_dir)
    assert [row["step"] for row in train_rows] == list(range(1, 21))
    assert all(row["loss"] == row["loss"] for row in train_rows)  # no NaN
    assert 20 in {row["step"] for row in val_rows}
    assert result.metrics["iterations"] == 20
    assert result.last_checkpoint == work_dir / "iter_20.pth"


def test_checkpoints_load_with_weights_only_thanks_to_the_allowlist(trained_demo_run):
    from mmengine.logging import HistoryBuffer
    from mmseg.registry import MODELS

    import helpers.modeling  # noqa: F401  (registers the allowlist)

    checkpoint = trained_demo_run.last_checkpoint
    allowlist = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        with pytest.raises(pickle.UnpicklingError, match="HistoryBuffer"):
            torch.load(checkpoint, map_location="cpu", weights_only=True)
    finally:
        torch.serialization.add_safe_globals(allowlist)
    loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert loaded["meta"]["iter"] == 60
    loss_history = loaded["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(loss_history, HistoryBuffer)
    logs, counts = loss_history.data
    assert len(logs) > 0 and loss_history.current() == pytest.approx(logs[-1])
    assert loss_history.mean(2) == pytest.approx(logs[-2:].mean())  # statistics work after the reducer

    cfg = Config.fromfile(str(trained_demo_run.work_dir / "config.py"))
    model = MODELS.build(cfg.model)
    missing, unexpected = model.load_state_dict(loaded["state_dict"], strict=True)
    assert not missing and not unexpected
    weight = model.decode_head.conv_seg.weight
    assert torch.equal(weight, loaded["state_dict"]["decode_head.conv_seg.weight"])


@pytest.fixture
def restore_determinism():
    """mmengine's ``deterministic=True`` switches torch's global flag on: switch it back afterwards."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def test_a_fixed_seed_repeats_the_loss_curve_and_another_seed_differs(demo_prepared, tmp_path, restore_determinism):
    def losses(name: str, seed: int) -> list[float]:
        result = run_training(
            tiny_params(demo_prepared, tmp_path / name, seed=seed, deterministic=True, max_iters=6, val_interval=6)
        )
        rows, _ = read_scalars(result.work_dir)
        assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6]
        return [row["loss"] for row in rows]

    first = losses("a", seed=0)
    assert losses("b", seed=0) == first
    assert losses("c", seed=1) != first


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback; the CUDA case is tested below")
def test_amp_on_the_cpu_warns_and_trains_in_float32(demo_prepared, tmp_path, caplog):
    from mmengine.optim import AmpOptimWrapper, OptimWrapper

    with caplog.at_level(logging.WARNING, logger="helpers.modeling.train"):
        cfg = build_config(tiny_params(demo_prepared, tmp_path, amp=True, max_iters=2, val_interval=2))
    assert "amp=True ignored" in caplog.text
    assert cfg.optim_wrapper.type == "OptimWrapper" and "dtype" not in cfg.optim_wrapper
    runner = build_runner(cfg)
    runner.train()
    assert isinstance(runner.optim_wrapper, OptimWrapper) and not isinstance(runner.optim_wrapper, AmpOptimWrapper)
    assert all(p.dtype == torch.float32 for p in runner.model.parameters())
    rows, _ = read_scalars(tmp_path)
    assert rows[-1]["step"] == 2 and rows[-1]["loss"] == rows[-1]["loss"]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="helpers.modeling.train"):
        assert build_config(tiny_params(demo_prepared, tmp_path, amp="auto")).optim_wrapper.type == "OptimWrapper"
    assert "amp" not in caplog.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_on_cuda_trains_with_bfloat16(demo_prepared, tmp_path):
    from mmengine.optim import AmpOptimWrapper

    for amp in (True, "auto"):
        cfg = build_config(tiny_params(demo_prepared, tmp_path / str(amp), amp=amp, max_iters=2, val_interval=2))
        assert cfg.optim_wrapper.type == "AmpOptimWrapper"
        assert cfg.optim_wrapper.dtype == ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    runner = build_runner(cfg)
    runner.train()
    assert isinstance(runner.optim_wrapper, AmpOptimWrapper)
    assert runner.optim_wrapper.cast_dtype == getattr(torch, cfg.optim_wrapper.dtype)
    assert next(runner.model.parameters()).is_cuda
    rows, _ = read_scalars(tmp_path / "auto")
    assert rows[-1]["step"] == 2 and rows[-1]["loss"] == rows[-1]["loss"]


@pytest.mark.slow
def test_the_demo_config_learns_on_the_demo_data(tmp_path):
    """The demo config unchanged (128x128, 150 iterations) on the default demo dataset, on the CPU."""
    from helpers.data.demo_dataset import DemoSpec, generate_demo_dataset
    from helpers.data.prepare import prepare_dataset

    generate_demo_dataset(tmp_path / "demo", DemoSpec(), workers=1)
    prepared = prepare_dataset(tmp_path / "demo", tmp_path / "prepared", img_size=128, workers=1)
    result = run_training(
        TrainParams(config=DEMO_CONFIG, prepared_root=str(prepared.out_dir), work_dir=str(tmp_path / "run"))
    )

    train_rows, val_rows = read_scalars(result.work_dir)
    assert train_rows[-1]["step"] == 150
    assert train_rows[-1]["loss"] < 0.5 * train_rows[0]["loss"]
    best = max(row["Dice.pneumothorax"] for row in val_rows)
    assert best > 50.0, f"foreground Dice {best} (val) after 150 iterations"
    assert result.metrics["best_val"]["Dice.pneumothorax"] > 50.0
    assert (result.work_dir / MANIFEST_FILE).is_file() and (result.work_dir / METRICS_FILE).is_file()
    manifest = json.loads((result.work_dir / MANIFEST_FILE).read_text())
    assert manifest["lr"] == 0.003 and manifest["amp"] is False
    assert result.best_checkpoint is not None and result.best_checkpoint.name.startswith("best_mDice_iter_")
    assert result.last_checkpoint == result.work_dir / "iter_150.pth"


def test_several_gpus_launch_torchrun_in_a_subprocess(demo_prepared, tmp_path, monkeypatch):
    """gpus > 1: the dumped config is trained by torchrun with mmengine's pytorch launcher, never in-process."""
    import helpers.modeling.train as train

    launched = []
    real_run = subprocess.run

    def record_torchrun(command, **kwargs):
        if "torchrun" not in command[0]:
            return real_run(command, **kwargs)  # git, for the manifest
        launched.append((command, kwargs))

    monkeypatch.setattr(train.subprocess, "run", record_torchrun)
    monkeypatch.setattr(train.shutil, "which", lambda name, path=None: f"/opt/bin/{name}")
    monkeypatch.setattr("mmengine.runner.Runner.from_cfg", lambda cfg: pytest.fail("trained inside the process"))
    result = train.run_training(
        TrainParams(
            config=DEMO_CONFIG,
            prepared_root=str(demo_prepared.out_dir),
            img_size=64,
            max_iters=4,
            gpus=2,
            work_dir=str(tmp_path / "run"),
        )
    )
    ((command, kwargs),) = launched
    dumped = tmp_path / "run" / CONFIG_FILE
    assert command[:2] == ["/opt/bin/torchrun", "--nproc_per_node=2"]
    assert command[-5:] == ["-m", "helpers.modeling.train", str(dumped), "--launcher", "pytorch"]
    assert kwargs["check"] is True
    assert Config.fromfile(str(dumped)).launcher == "pytorch"
    assert result.work_dir == tmp_path / "run"


def test_the_torchrun_entry_trains_a_dumped_config(demo_prepared, tmp_path):
    """What every torchrun process runs, ``python -m helpers.modeling.train <dumped config.py>``, run for real
    from another folder. One process with ``--launcher none``: mmengine's pytorch launcher needs CUDA."""
    cfg = build_config(tiny_params(demo_prepared, tmp_path / "run", max_iters=4, val_interval=4, gpus=2))
    assert cfg.launcher == "pytorch"
    dumped = tmp_path / "config.py"
    cfg.dump(str(dumped))
    done = subprocess.run(
        [sys.executable, "-m", "helpers.modeling.train", str(dumped), "--launcher", "none"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    train_rows, val_rows = read_scalars(tmp_path / "run")
    assert [row["step"] for row in train_rows] == [1, 2, 3, 4]
    assert len(val_rows) == 1 and "mDice" in val_rows[0]
    assert (tmp_path / "run" / "iter_4.pth").is_file()


def test_training_without_prepared_data_stops_at_once_naming_the_02_command(tmp_path, monkeypatch):
    """No manifest.json in the prepared folder: one sentence with the folder and the exact papermill command."""
    monkeypatch.setattr("mmengine.runner.Runner.from_cfg", lambda cfg: pytest.fail("training started"))
    missing = tmp_path / "prepared" / "official-64"
    with pytest.raises(PreparedDataError) as raised:
        run_training(
            TrainParams(config=DEMO_CONFIG, prepared_root=str(missing), img_size=64, work_dir=str(tmp_path / "run"))
        )
    message = str(raised.value)
    assert str(missing) in message and "02_prepare" in message
    assert prepare_command(missing, 64, "official") in message
    assert "-p img_size 64" in message and f"-p prepared_root {missing}" in message
    assert not (tmp_path / "run").exists()


def test_training_on_data_of_another_size_stops_naming_both_sizes(demo_prepared, tmp_path, monkeypatch):
    """The demo data is prepared at 64x64 (its manifest says so); the config asks for 96x96."""
    monkeypatch.setattr("mmengine.runner.Runner.from_cfg", lambda cfg: pytest.fail("training started"))
    with pytest.raises(PreparedDataError) as raised:
        run_training(
            TrainParams(
                config=DEMO_CONFIG,
                prepared_root=str(demo_prepared.out_dir),
                img_size=96,
                work_dir=str(tmp_path / "run"),
            )
        )
    message = str(raised.value)
    assert "96x96" in message and "64x64" in message and "img_size=64" in message
    assert "-p img_size 96" in message


def test_relative_prepared_root_and_work_dir_are_from_the_repository_root(demo_prepared, tmp_path, monkeypatch):
    """The notebooks pass paths as typed; the package resolves them against the repository, not the cwd."""
    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(demo_prepared.out_dir, paths.REPO_ROOT)
    cfg = build_config(TrainParams(config=DEMO_CONFIG, prepared_root=relative, img_size=64, work_dir="outputs/x/lr1"))
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        assert Path(cfg[loader].dataset.data_root).resolve() == demo_prepared.out_dir.resolve()
    assert cfg.work_dir == str(paths.REPO_ROOT / "outputs" / "x" / "lr1")


def test_03_defaults_fall_back_on_the_demo_when_only_the_demo_is_prepared(tmp_path, monkeypatch):
    """Opened in JupyterLab after `make demo` with no real data: the demo config on the demo data, said once."""
    from helpers.modeling.train import choose_config

    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)  # the configs' relative data_roots now point under tmp_path
    seed_root = paths.resolve(Config.fromfile(str(paths.config_path(SEED_CONFIG))).train_dataloader.dataset.data_root)
    demo_root = paths.resolve(Config.fromfile(str(paths.config_path(DEMO_CONFIG))).train_dataloader.dataset.data_root)
    assert choose_config() == (
        SEED_CONFIG,
        None,
        None,
    )  # nothing prepared: the seed's, whose check names the 02 command
    demo_root.mkdir(parents=True)
    (demo_root / "manifest.json").write_text(json.dumps({"parameters": {"img_size": 128}}))
    config, prepared_root, note = choose_config()
    assert (config, prepared_root) == (DEMO_CONFIG, None)
    assert str(demo_root) in note and str(seed_root) in note
    assert choose_config("mine", None) == ("mine", None, None)  # asked for explicitly: never replaced
    seed_root.mkdir(parents=True)
    (seed_root / "manifest.json").write_text(json.dumps({"parameters": {"img_size": 512}}))
    assert choose_config() == (SEED_CONFIG, None, None)
