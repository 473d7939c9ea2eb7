"""03_train: an mmseg config plus the notebook's parameters -> ``Runner.from_cfg`` -> a run folder.

One GPU or the CPU trains inside the calling process (the notebook's kernel). ``gpus > 1`` (or ``nproc > 1``
CPU processes) dumps the config and launches ``torchrun`` in a subprocess with mmengine's ``pytorch``
launcher: DDP never runs inside a Jupyter kernel. ``python -m helpers.modeling.train CONFIG [--launcher
pytorch]`` is that entry; it joins the process group itself (helpers.modeling.distributed).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from mmengine.config import Config

from helpers.core import paths, run_folders
from helpers.core.data_profile import DEMO, choose_profile
from helpers.core.fileio import atomic_write_json, json_safe
from helpers.core.locks import folder_lock
from helpers.core.parallel import default_workers
from helpers.core.parameters import TrainParams
from helpers.core.progress import console_to_terminal, in_kernel, terminal_stream
from helpers.core.provenance import code_version, device_info, package_versions
from helpers.data.prepared_folder import PreparedData, PreparedDataError, check_prepared, read_prepared
from helpers.modeling import distributed, tracking
from helpers.modeling.checkpoint import verified_state_dict
from helpers.modeling.divergence import TrainingDiverged
from helpers.modeling.hooks import NotebookProgressHook
from helpers.modeling.inference import library_warnings_kept, model_input_size

log = logging.getLogger(__name__)

LOCK_HELD_ENV = "PNEUMO_RUN_LOCK_HELD"  # set for torchrun's processes: the launching process holds the run's lock


def choose_config(
    config: str | None = None, prepared_root: str | Path | None = None
) -> tuple[str, str | Path | None, str | None]:
    """(config, prepared_root, note) for 03's defaults: None and None mean the seed's config on its prepared
    data, or, when that data is missing but the demo's is there (``make demo``), the demo config on the demo
    data, which the note says."""
    if config is not None or prepared_root is not None:
        return config or paths.SEED_CONFIG, prepared_root, None
    seed_root, demo_root = (
        paths.resolve(Config.fromfile(str(paths.config_path(name))).train_dataloader.dataset.data_root)
        for name in (paths.SEED_CONFIG, paths.DEMO_CONFIG)
    )

    def has_prepared(root: Path) -> bool:
        try:
            read_prepared(root)
        except PreparedDataError:
            return False
        return True

    # without either, the seed's: training then stops with the 02 command for the seed's data
    chosen, note = choose_profile(
        "prepared data", seed_root, demo_root, lambda: has_prepared(seed_root), lambda: has_prepared(demo_root)
    )
    return (paths.DEMO_CONFIG, None, note) if chosen == DEMO else (paths.SEED_CONFIG, None, None)


def _scale(value: int, factor: float) -> int:
    return max(1, int(round(value * factor)))


def _img_size_overrides(cfg: Config, size: int) -> dict:
    """Every Resize (in the loaders and the top-level pipelines that mmseg.apis reads) and the data
    preprocessor at ``size`` x ``size``."""
    pipelines = {
        f"{loader}.dataset.pipeline": cfg[loader].dataset.pipeline
        for loader in ("train_dataloader", "val_dataloader", "test_dataloader")
    }
    pipelines.update({name: cfg[name] for name in ("train_pipeline", "test_pipeline") if cfg.get(name)})
    overrides: dict = {}
    for key, pipeline in pipelines.items():
        for index, transform in enumerate(pipeline):
            if transform["type"] in ("Resize", "RandomResize"):
                overrides[f"{key}.{index}.scale"] = (size, size)
    overrides["model.data_preprocessor.size"] = (size, size)
    overrides["img_scale"] = (size, size)
    return overrides


def amp_enabled(amp: bool | str) -> bool:
    """AMP is used on CUDA only ('auto' switches it on there); on the CPU it is refused with a warning."""
    if amp == "auto":
        return torch.cuda.is_available()
    if amp and not torch.cuda.is_available():
        log.warning("amp=True ignored: mmengine's AmpOptimWrapper needs a GPU; training in float32")
        return False
    return bool(amp)


def training_overrides(params: TrainParams, cfg: Config) -> dict:
    """The parameters as overrides of the loaded config: dotted keys, as mmseg's ``--cfg-options`` takes them."""
    overrides: dict = {}
    lr = float(params.lr) if params.lr is not None else cfg.optim_wrapper.optimizer.lr
    if params.lr is not None:
        overrides["optim_wrapper.optimizer.lr"] = lr
    max_iters, val_interval = cfg.train_cfg.max_iters, cfg.train_cfg.val_interval
    if params.max_iters is not None:
        factor = params.max_iters / max_iters
        for index, scheduler in enumerate(cfg.param_scheduler):
            begin = scheduler.get("begin", 0)
            overrides[f"param_scheduler.{index}.begin"] = (
                min(params.max_iters - 1, _scale(begin, factor)) if begin else 0
            )
            overrides[f"param_scheduler.{index}.end"] = min(
                params.max_iters, _scale(scheduler.get("end", max_iters), factor)
            )
        max_iters = overrides["train_cfg.max_iters"] = int(params.max_iters)
        val_interval = _scale(val_interval, factor)
        overrides["default_hooks.logger.interval"] = min(cfg.default_hooks.logger.interval, _scale(max_iters, 0.05))
    if params.val_interval is not None:
        val_interval = int(params.val_interval)
    overrides["train_cfg.val_interval"] = overrides["default_hooks.checkpoint.interval"] = val_interval
    batch_size = int(params.batch_size) if params.batch_size is not None else cfg.train_dataloader.batch_size
    if params.batch_size is not None:
        overrides["train_dataloader.batch_size"] = batch_size
    if params.img_size is not None:
        overrides.update(_img_size_overrides(cfg, int(params.img_size)))
    root = paths.resolve(params.prepared_root or cfg.train_dataloader.dataset.data_root)
    loaders = ("train_dataloader", "val_dataloader", "test_dataloader")
    overrides.update({f"{loader}.dataset.data_root": str(root) for loader in loaders})
    from helpers.modeling.winners import replacing, winners_overrides

    overrides.update(
        winners_overrides(
            cfg,
            data_root=root,
            batch_size=batch_size,
            max_iters=max_iters,
            fold=params.fold,
            positive_rate=params.positive_rate,
            load_from=params.load_from,
            pretrained=params.pretrained,
            keep_checkpoints=params.keep_checkpoints,
        )
    )
    workers = params.workers
    if workers is None and torch.cuda.is_available():
        workers = min(16, max(1, default_workers() // max(1, params.gpus)))
    if workers is not None:
        for loader in loaders:
            overrides[f"{loader}.num_workers"] = int(workers)
            overrides[f"{loader}.persistent_workers"] = int(workers) > 0
    if amp_enabled(params.amp):
        overrides["optim_wrapper.type"] = "AmpOptimWrapper"
        overrides["optim_wrapper.dtype"] = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    hooks = [dict(type="ChannelsLastHook")] if torch.cuda.is_available() and params.channels_last else []
    # every run stops at its first non-finite loss, gradient norm or weight (helpers.modeling.divergence)
    overrides["custom_hooks"] = [*cfg.get("custom_hooks", []), *hooks, dict(type="DivergenceHook")]
    overrides["env_cfg.cudnn_benchmark"] = torch.cuda.is_available()
    overrides["randomness"] = replacing(
        cfg, "randomness", {"seed": int(params.seed), "deterministic": bool(params.deterministic)}
    )
    overrides["launcher"] = "pytorch" if distributed.process_count(params.gpus, params.nproc) > 1 else "none"
    work_dir = overrides["work_dir"] = str(
        (paths.resolve(params.work_dir) if params.work_dir else run_folders.run_dir(params.config, lr)).resolve()
    )
    overrides["resume"] = bool(params.resume)
    if params.resume:  # a copied or moved run folder resumes from its own last checkpoint, not where mmengine's
        _, last = run_folders.find_checkpoints(work_dir)  # pointer says it was saved (the original tree's)
        pointer = Path(work_dir) / run_folders.LAST_CHECKPOINT_FILE
        if last is not None and Path(pointer.read_text().strip()) != last:
            overrides["load_from"] = str(last)
    # mmengine keeps one visualizer per name in the process: a fixed name ('visualizer' in mmseg's runtime)
    # would send a second run's scalars in the same kernel or test session to the first run's folder.
    overrides["visualizer.name"] = f"visualizer:{work_dir}:{time.time_ns()}"
    return overrides


def build_config(params: TrainParams) -> Config:
    """Load the config file and apply the parameters in one ``merge_from_dict``; the result is the run's single
    source of settings."""
    cfg = Config.fromfile(str(paths.config_path(params.config)))
    cfg.merge_from_dict(training_overrides(params, cfg), allow_list_keys=True)
    tracking.add_vis_backends(
        cfg, experiment=paths.config_name(params.config), run=Path(cfg.work_dir).name, mlflow=params.mlflow
    )
    return cfg


@dataclass
class TrainResult:
    """Where a run wrote its files, and what it measured."""

    work_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    metrics: dict = field(default_factory=dict)


def summarize_run(
    work_dir: Path | str, batch_size: int, world_size: int, wall_time_s: float | None, peak_memory_mb: float | None
) -> dict:
    """metrics.json: best and last val metrics, throughput (images/s from mmengine's iteration times)."""
    train_rows, val_rows = run_folders.read_scalars(work_dir)
    iter_times = [row["time"] for row in train_rows if "time" in row]
    summary = {
        "status": "ok",
        "iterations": train_rows[-1]["step"] if train_rows else 0,
        "final_loss": train_rows[-1].get("loss") if train_rows else None,
        "wall_time_s": wall_time_s,
        "peak_memory_mb": peak_memory_mb,
        "images_per_s": batch_size * world_size / float(np.median(iter_times)) if iter_times else None,
        "val": val_rows,
    }
    if val_rows:
        best = max(val_rows, key=lambda row: row.get(run_folders.BEST_METRIC, -1))
        summary["best_val"] = best
        summary["last_val"] = val_rows[-1]
    best_ckpt, last_ckpt = run_folders.find_checkpoints(work_dir)  # names in the run folder (it may be moved)
    summary["best_checkpoint"] = best_ckpt.name if best_ckpt else None
    summary["last_checkpoint"] = last_ckpt.name if last_ckpt else None
    return summary


def describe_speed(metrics: dict) -> str:
    """metrics.json's speed and resources in four lines for reading ('–' where it was not measured)."""

    def shown(value: float | None, pattern: str) -> str:
        return "–" if value is None else pattern.format(value)

    return (
        f"iterations: {metrics['iterations']}\n"
        f"images / s (training): {shown(metrics.get('images_per_s'), '{:.1f}')}\n"
        "wall time: "
        f"{shown(None if metrics.get('wall_time_s') is None else metrics['wall_time_s'] / 60, '{:.1f} min')}\n"
        f"peak memory: {shown(metrics.get('peak_memory_mb'), '{:.0f} MB')}"
    )


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def check_data(cfg: Config) -> PreparedData:
    """The prepared folder the config trains on, which must hold data of the config's size (else one
    sentence saying what is missing and the 02_prepare command that makes it)."""
    width, height = model_input_size(cfg)
    if width != height:
        raise ValueError(f"the config trains at {width}x{height}; 02_prepare writes square images only")
    return check_prepared(cfg.train_dataloader.dataset.data_root, width)


def _to_log_file(logger: logging.Logger, lines: list[str]) -> None:
    """Write ``lines`` to the logger's files only (the run's log), not to its console (the notebook)."""
    for line in lines:
        record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, line, None, None)
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)


def write_failed_metrics(
    work_dir: Path | str, error: str, batch_size: int, world_size: int, wall_time_s: float | None
) -> dict:
    """metrics.json of a run that failed (``status: failed`` and the error), with what it logged until then."""
    metrics = json_safe(
        {**summarize_run(work_dir, batch_size, world_size, wall_time_s, None), "status": "failed", "error": error}
    )
    atomic_write_json(Path(work_dir) / run_folders.METRICS_FILE, metrics)
    return metrics


def check_start_checkpoints(cfg: Config, resume: bool) -> None:
    """The checkpoint a resumed run continues from (its last) and a ``load_from`` one must be readable and
    finite; else one CheckpointError naming the file, before anything is written."""
    last = run_folders.find_checkpoints(cfg.work_dir)[1] if resume else None
    if last is not None:
        verified_state_dict(last)
    if cfg.get("load_from") and (last is None or Path(cfg.load_from) != last):
        verified_state_dict(cfg.load_from)


def run_training(params: TrainParams) -> TrainResult:
    """Train one run and write its manifest and metrics; ``gpus > 1`` goes through torchrun.

    Stops before any work when the prepared data is missing or of another size than the config's, when
    the checkpoint it resumes or starts from is unusable, or when another process is writing the run folder
    (helpers.core.locks, naming it). A training that diverges raises TrainingDiverged and leaves a metrics.json
    with ``status: failed``.
    """
    cfg = build_config(params)
    check_data(cfg)
    check_start_checkpoints(cfg, bool(params.resume))
    with folder_lock(cfg.work_dir, "run folder"):
        return _train_locked(params, cfg)


def _train_locked(params: TrainParams, cfg: Config) -> TrainResult:
    work_dir = Path(cfg.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    cfg.dump(str(work_dir / run_folders.CONFIG_FILE))
    manifest = {
        "parameters": asdict(params),
        "config_file": str(paths.config_path(params.config)),
        "dumped_config": str(work_dir / run_folders.CONFIG_FILE),
        "config": (work_dir / run_folders.CONFIG_FILE).read_text(),
        "lr": cfg.optim_wrapper.optimizer.lr,
        "amp": cfg.optim_wrapper.type == "AmpOptimWrapper",
        "code_version": code_version(),
        "packages": package_versions(),
        "device": device_info(),
        "seed": params.seed,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(work_dir / run_folders.MANIFEST_FILE, manifest)
    start = time.perf_counter()
    started = time.time()
    processes = distributed.process_count(params.gpus, params.nproc)
    batch_size = cfg.train_dataloader.batch_size
    try:
        if processes > 1:
            try:
                launch_torchrun(work_dir / run_folders.CONFIG_FILE, processes)
            except subprocess.CalledProcessError:
                error = _failure_written_since(work_dir, started)  # by the rank that saw the divergence
                if error:
                    raise TrainingDiverged(error) from None
                raise
            peak = None
        else:
            from mmengine.runner import Runner

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            kept: list[str] = []
            with library_warnings_kept(kept), console_to_terminal():  # mmengine's logger: the terminal, not the report
                runner = Runner.from_cfg(cfg)
            _to_log_file(runner.logger, [f"library warning (known, harmless): {text}" for text in kept])
            runner.register_hook(NotebookProgressHook())  # the notebook's view: a bar and one line per validation
            runner.train()
            peak = _peak_memory_mb()
    except TrainingDiverged as err:
        write_failed_metrics(work_dir, str(err), batch_size, processes, time.perf_counter() - start)
        raise
    wall = time.perf_counter() - start
    metrics = summarize_run(work_dir, cfg.train_dataloader.batch_size, processes, wall, peak)
    atomic_write_json(work_dir / run_folders.METRICS_FILE, metrics)
    best, last = run_folders.find_checkpoints(work_dir)
    return TrainResult(work_dir=work_dir, best_checkpoint=best, last_checkpoint=last, metrics=metrics)


def _failure_written_since(work_dir: Path, since: float) -> str | None:
    """The error of a failed metrics.json written after ``since`` (by a torchrun process), else None."""
    path = work_dir / run_folders.METRICS_FILE
    if not path.is_file() or path.stat().st_mtime < since:
        return None
    metrics = run_folders.read_metrics(work_dir)
    return metrics.get("error") if metrics.get("status") == "failed" else None


def launch_torchrun(config_file: Path, gpus: int) -> None:
    """Train a dumped config in ``gpus`` processes of this node (one per GPU, or CPU processes with gloo):
    ``torchrun`` in a subprocess, pytorch launcher."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        raise RuntimeError("torchrun not found next to this Python or on PATH")
    command = [
        torchrun,
        f"--nproc_per_node={gpus}",
        "--master_port",
        str(29500 + os.getpid() % 1000),
        "-m",
        "helpers.modeling.train",
        str(config_file),
        "--launcher",
        "pytorch",
    ]
    log.info("launching %s", " ".join(command))
    output = terminal_stream() if in_kernel() else None  # the processes' logs: the terminal, not the notebook
    subprocess.run(
        command,
        check=True,
        cwd=paths.REPO_ROOT,
        stdout=output,
        stderr=output,
        env={**os.environ, LOCK_HELD_ENV: str(os.getpid())},
    )


def main(argv: list[str] | None = None) -> None:
    """Entry for torchrun / srun: train a dumped config (``--launcher pytorch|slurm|none``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", help="an mmseg config (the run's dumped config.py)")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    from mmengine.runner import Runner

    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    cfg.resume = args.resume or cfg.get("resume", False)
    if args.launcher == "pytorch":
        distributed.init_process_group(cfg)
    # one writer per run folder: the launching process holds the lock (03_train), else rank 0 takes it
    lead = int(os.environ.get("RANK", "0")) == 0 and not os.environ.get(LOCK_HELD_ENV)
    with folder_lock(cfg.work_dir, "run folder") if lead else contextlib.nullcontext():
        try:
            Runner.from_cfg(cfg).train()
        except TrainingDiverged as err:  # recorded for the launching process (its run_training reads it)
            write_failed_metrics(
                cfg.work_dir, str(err), cfg.train_dataloader.batch_size, int(os.environ.get("WORLD_SIZE", "1")), None
            )
            raise


if __name__ == "__main__":
    main()
