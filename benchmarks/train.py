"""Benchmark 03_train: training images/s, and the data loader's images/s from the prepared cache vs. raw PNGs.

Synthetic data: N demo pairs generated at 1024x1024 (``helpers.data.demo_dataset``, the Kaggle layout), prepared by
``helpers.data.prepare`` at 512 (the seed's size) and at the demo size (128).

Training: ``Runner.from_cfg(build_config(TrainParams(...)))`` runs ``--warmup`` + ``--iters`` iterations with
validation and checkpoints switched off, each measurement in a fresh spawned process (no CUDA state or
loader workers left over from the one before); images/s = batch size / median of mmengine's per-iteration
``time`` (data loading included, logged every iteration with window 1) over the iterations after the warm-up.
- On CUDA: the seed's model (fcn-unet-s5-d16, lr 0.01 config) at ``--size`` in float32 and with AMP
  (``TrainParams(amp=True)``: bfloat16), as a percentage of the ~680 images/s ceiling of one H200 at 512
  (FACTS.md), and the demo config at the demo size, both precisions.
- On the CPU (no GPU, or ``--skip-gpu``, which hides the GPU): the demo config at the demo size in float32;
  the seed's model at 512 and AMP are not measured there.

Data loader alone: the seed config's train dataloader (``--workers`` processes) iterated for
``--loader-batches`` batches (at least 8 per worker; the best of 3 such windows) after ``--warmup`` (at
least 2 per worker), on the 512 cache against a folder in the same layout whose images are symlinks to the
raw 1024x1024 PNGs and whose masks are the raw masks converted to {0, 1} at 1024x1024 and encoded as the
cache encodes its masks (so the pipeline's Resize does 1024 -> 512 on the fly, as training from the raw
files would, and the raw side is not slowed by a worse mask encoding).
Three pipelines: the configured one (one gray channel, GrayPhotoMetricDistortion), the seed's 3-channel
form of it (``helpers.data.transforms.seed_training_pipeline``: the same batches, bit for bit), and loading,
Resize and packing only (what the cache changes).

    .venv/bin/python benchmarks/train.py                  # GPU parts where CUDA exists, CPU parts otherwise
    .venv/bin/python benchmarks/train.py --skip-gpu --images 48 --cpu-iters 10
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

from helpers.core.paths import DEMO_CONFIG, SEED_CONFIG

warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
warnings.filterwarnings("ignore", message="Multi-processing start method", category=UserWarning)  # spawn -> fork
warnings.filterwarnings("ignore", category=UserWarning, module=r"(mmseg|mmengine|mmcv)(\.|$)")

ROOT = Path(__file__).resolve().parents[1]
H200_CEILING = 680.0  # images/s at 512x512, FACTS.md ("Compute")
LOADER_GOAL = 3.0
LOADER_WINDOWS = 3  # the loader's rate is the best of this many windows (a shared machine's noise only slows)
AUGMENTATIONS = ("RandomFlip", "PhotoMetricDistortion", "GrayPhotoMetricDistortion")
PIPELINES = ("train pipeline", "seed 3-channel pipeline", "load+resize only")


@dataclass
class Row:
    """One line of the final table."""

    part: str
    device: str
    config: str
    size: int
    batch: int
    precision: str
    images_per_s: float | None = None
    data_time_s: float | None = None
    peak_mb: float | None = None
    ratio: str = ""
    note: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96, help="synthetic 1024x1024 training pairs")
    parser.add_argument("--raw-size", type=int, default=1024)
    parser.add_argument("--size", type=int, default=512, help="the seed model's image size (GPU) and the cache's")
    parser.add_argument("--batch-size", type=int, default=16, help="batch at --size (the seed's 16)")
    parser.add_argument("--iters", type=int, default=50, help="measured iterations on the GPU")
    parser.add_argument("--cpu-size", type=int, default=128, help="the demo size")
    parser.add_argument("--cpu-batch-size", type=int, default=8, help="batch at --cpu-size (the demo config's 8)")
    parser.add_argument("--cpu-iters", type=int, default=20, help="measured iterations of the demo config")
    parser.add_argument("--warmup", type=int, default=10, help="iterations / batches not measured")
    parser.add_argument("--loader-batches", type=int, default=20)
    parser.add_argument("--workers", type=int, default=None, help="data loader processes (default: CPU count, max 16)")
    parser.add_argument("--skip-gpu", action="store_true", help="hide the GPU: measure the CPU parts only")
    parser.add_argument("--skip-loader", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--work-dir", default=None, help="scratch folder (default: a temporary one)")
    return parser.parse_args(argv)


def make_data(scratch: Path, args: argparse.Namespace, workers: int) -> tuple[Path, Path, Path]:
    """(raw Kaggle-layout root, prepared cache at --size, prepared cache at --cpu-size)."""
    from helpers.data.demo_dataset import DemoSpec, generate_demo_dataset
    from helpers.data.prepare import prepare_dataset

    raw_root = scratch / "raw"
    spec = DemoSpec(n_train=args.images, n_test=max(2, args.images // 10), size=args.raw_size, seed=0)
    start = time.perf_counter()
    generate_demo_dataset(raw_root, spec, workers=workers)
    large = prepare_dataset(raw_root, scratch / "prepared", img_size=args.size, workers=workers).out_dir
    small = prepare_dataset(raw_root, scratch / "prepared", img_size=args.cpu_size, workers=workers).out_dir
    print(
        f"data: {args.images} + {spec.n_test} pairs at {args.raw_size}, prepared at {args.size} and "
        f"{args.cpu_size} in {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    return raw_root, large, small


def make_raw_view(raw_root: Path, prepared: Path, dest: Path) -> Path:
    """The prepared layout over the raw files: image symlinks, masks as {0, 1} at full size, same splits."""
    import cv2
    import pandas as pd

    from helpers.core import paths
    from helpers.data.images import MASK_PNG_PARAMS

    labels = pd.read_csv(prepared / "labels.csv", dtype={"name": str})
    raw = raw_root / paths.KAGGLE_FOLDER
    for split, name in zip(labels["split"], labels["name"], strict=True):
        for folder in ("images", "masks"):
            (dest / folder / split).mkdir(parents=True, exist_ok=True)
        image = dest / "images" / split / f"{name}.png"
        if not image.exists():
            image.symlink_to(raw / "png_images" / f"{name}.png")
        mask = cv2.imread(str(raw / "png_masks" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(dest / "masks" / split / f"{name}.png"), (mask > 0).astype("uint8"), MASK_PNG_PARAMS)
    for file in ("train.txt", "val.txt", "test.txt", "labels.csv"):
        (dest / file).write_text((prepared / file).read_text())
    return dest


def _register() -> None:
    """The project's mmseg components and mmseg's registry scope (also in a spawned process)."""
    from mmengine.registry import init_default_scope

    import helpers.data.mmseg_dataset  # noqa: F401
    import helpers.modeling  # noqa: F401

    init_default_scope("mmseg")


def _child(results, func, args) -> None:
    try:
        results.put(("ok", func(*args)))
    except BaseException:  # noqa: BLE001  (handed to the parent, which raises it)
        results.put(("error", traceback.format_exc()))
    gc.collect()  # shut the loader workers down while the interpreter is still whole


def isolated(func, *args):
    """``func(*args)`` in a fresh spawned process: no CUDA state, allocator cache or loader workers carried
    over from an earlier measurement. A child still tearing its loader workers down is killed after 10 s."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_child, args=(results, func, args))
    process.start()
    status, value = results.get()
    process.join(timeout=10)
    if process.is_alive():
        process.kill()
    if status == "error":
        raise RuntimeError(f"measurement failed in its process:\n{value}")
    return value


def loader_images_per_s(
    config: str,
    data_root: Path,
    size: int,
    batch: int,
    workers: int,
    batches: int,
    warmup: int,
    pipeline: str,
    scratch: Path,
) -> float:
    """Images/s of the config's train dataloader alone (``workers`` processes), its pipeline one of
    ``PIPELINES``."""
    from mmengine.runner import Runner
    from mmengine.utils.dl_utils import set_multi_processing

    from helpers.data.transforms import seed_training_pipeline
    from helpers.modeling.train import TrainParams, build_config

    _register()
    cfg = build_config(
        TrainParams(
            config=config,
            prepared_root=str(data_root),
            img_size=size,
            batch_size=batch,
            workers=workers,
            work_dir=str(scratch),
        )
    )
    set_multi_processing(**cfg.env_cfg.mp_cfg)  # as the Runner does: fork, OpenCV single-threaded
    configured = cfg.train_dataloader.dataset.pipeline
    if pipeline == "seed 3-channel pipeline":
        cfg.train_dataloader.dataset.pipeline = seed_training_pipeline(configured)
    elif pipeline == "load+resize only":
        cfg.train_dataloader.dataset.pipeline = [t for t in configured if t["type"] not in AUGMENTATIONS]
    batches_iter = iter(Runner.build_dataloader(cfg.train_dataloader, seed=0))
    for _ in range(warmup):
        next(batches_iter)
    rates = []
    for _ in range(LOADER_WINDOWS):
        start = time.perf_counter()
        for _ in range(batches):
            next(batches_iter)
        rates.append(batches * batch / (time.perf_counter() - start))
    return max(rates)


def train_images_per_s(
    config: str,
    data_root: Path,
    size: int,
    batch: int,
    amp: bool,
    iters: int,
    warmup: int,
    workers: int | None,
    work_dir: Path,
    channels_last: bool = True,
) -> tuple[float, float, float | None, str]:
    """(images/s, median data_time, peak CUDA MB, device) of ``warmup + iters`` training iterations."""
    import numpy as np
    import torch
    from mmengine.runner import Runner

    from helpers.core.run_folders import read_scalars
    from helpers.modeling.train import TrainParams, build_config

    _register()
    cfg = build_config(
        TrainParams(
            config=config,
            prepared_root=str(data_root),
            img_size=size,
            batch_size=batch,
            amp=amp,
            channels_last=channels_last,
            max_iters=warmup + iters,
            workers=workers,
            work_dir=str(work_dir),
        )
    )
    cfg.log_level = "WARNING"  # the scalars are still written every iteration
    cfg.default_hooks.logger.interval = 1
    cfg.log_processor.window_size = 1  # every iteration's own time, not a 10-iteration mean
    cfg.default_hooks.checkpoint = None
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    runner = Runner.from_cfg(cfg)
    runner.train()
    device = str(next(runner.model.parameters()).device)
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    rows = [row for row in read_scalars(work_dir)[0] if row["step"] > warmup]
    if len(rows) != iters:
        raise RuntimeError(f"expected {iters} measured iterations in the scalars, found {len(rows)}")
    return (
        batch / float(np.median([r["time"] for r in rows])),
        float(np.median([r["data_time"] for r in rows])),
        peak,
        device,
    )


def training_rows(args: argparse.Namespace, large: Path, small: Path, scratch: Path) -> list[Row]:
    import torch

    rows = []
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    demo = (DEMO_CONFIG, args.cpu_size, args.cpu_batch_size, args.iters if cuda else args.cpu_iters)
    runs = [(SEED_CONFIG, args.size, args.batch_size, args.iters), demo] if cuda else [demo]
    if not cuda:
        why = "--skip-gpu" if args.skip_gpu else "no GPU"
        print(f"training {SEED_CONFIG} at {args.size}: not measured ({why}; 512x512 on a CPU is a GPU job)")
        rows.append(
            Row("train", "cuda", SEED_CONFIG, args.size, args.batch_size, "fp32 / amp", note=f"not measured: {why}")
        )
    for config, size, batch, iters in runs:
        data_root = large if size == args.size else small
        fp32 = None
        variants = [(False, True), (True, True)] + ([(True, False)] if cuda else [])
        for amp, channels_last in variants:
            precision = "fp32" if not amp else "amp" if not cuda else f"amp-{'bf16' if bf16 else 'fp16'}"
            if cuda:
                precision += ", channels-last" if channels_last else ", NCHW"
            row = Row("train", "cuda" if cuda else "cpu", config, size, batch, precision)
            if amp and not cuda:
                row.note = "not measured: no GPU"
                print(f"training {config} at {size} with AMP: not measured: no GPU")
                rows.append(row)
                continue
            label = f"{'seed' if config == SEED_CONFIG else 'demo'}-{size}-{precision}".replace(", ", "-")
            print(f"training {label}: {args.warmup} + {iters} iterations ...", flush=True)
            try:
                ips, data_time, peak, device = isolated(
                    train_images_per_s,
                    config,
                    data_root,
                    size,
                    batch,
                    amp,
                    iters,
                    args.warmup,
                    args.workers,
                    scratch / "runs" / label,
                    channels_last,
                )
            except RuntimeError as err:  # report it and go on with the other measurements
                print(err, flush=True)
                row.note = f"failed: {str(err).strip().splitlines()[-1]}"
                rows.append(row)
                continue
            row.device, row.images_per_s, row.data_time_s, row.peak_mb = device, ips, data_time, peak
            if not amp:
                fp32 = ips
            elif fp32:
                row.ratio = f"x{ips / fp32:.2f} vs fp32"
            if device.startswith("cuda") and size == 512:
                row.note = f"{100 * ips / H200_CEILING:.1f} % of the H200 ceiling ({H200_CEILING:.0f} img/s)"
            print(f"  {ips:.1f} images/s", flush=True)
            rows.append(row)
    return rows


def loader_rows(args: argparse.Namespace, raw_root: Path, large: Path, scratch: Path, workers: int) -> list[Row]:
    raw_view = make_raw_view(raw_root, large, scratch / f"raw-view-{args.raw_size}")
    # the first wave of batches is made by all workers at once: skip it, and measure many waves
    warmup, batches = max(args.warmup, 2 * workers), max(args.loader_batches, 8 * workers)
    rows, cache_rates = [], {}
    for pipeline in PIPELINES:
        results = {}
        for label, root in (("cache", large), ("raw", raw_view)):
            print(
                f"data loader, {pipeline}, {label} files: {warmup} + {LOADER_WINDOWS} x {batches} batches ...",
                flush=True,
            )
            results[label] = isolated(
                loader_images_per_s,
                SEED_CONFIG,
                root,
                args.size,
                args.batch_size,
                workers,
                batches,
                warmup,
                pipeline,
                scratch / f"loader-{label}-{pipeline.split()[0]}",
            )
            print(f"  {results[label]:.1f} images/s", flush=True)
        ratio = results["cache"] / results["raw"]
        cache_rates[pipeline] = results["cache"]
        verdict = "meets" if ratio >= LOADER_GOAL else "misses"
        rows += [
            Row(
                "loader",
                f"{workers} workers",
                SEED_CONFIG,
                args.size,
                args.batch_size,
                f"{args.size} cache, {pipeline}",
                results["cache"],
                ratio=f"x{ratio:.2f} vs raw",
                note=f"{verdict} the {LOADER_GOAL:.0f}x goal",
            ),
            Row(
                "loader",
                f"{workers} workers",
                SEED_CONFIG,
                args.size,
                args.batch_size,
                f"raw {args.raw_size} resized, {pipeline}",
                results["raw"],
                note="raw images (symlinks), {0,1} masks at full size",
            ),
        ]
    speedup = cache_rates[PIPELINES[0]] / cache_rates[PIPELINES[1]]
    rows[0].note += f"; x{speedup:.2f} the {PIPELINES[1]} on the cache"
    return rows


def print_table(rows: list[Row]) -> None:
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    header = [
        "part",
        "device",
        "config",
        "size",
        "batch",
        "precision / data",
        "images/s",
        "data_time s",
        "peak MB",
        "ratio",
        "note",
    ]
    lines = [
        [
            r.part,
            r.device,
            r.config.split("_")[0],
            str(r.size),
            str(r.batch),
            r.precision,
            fmt(r.images_per_s, ".1f"),
            fmt(r.data_time_s, ".4f"),
            fmt(r.peak_mb, ".0f"),
            r.ratio,
            r.note,
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.skip_gpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported: everything runs on the CPU
    sys.path.insert(0, str(ROOT))
    import torch

    from helpers.core.parallel import default_workers
    from helpers.core.provenance import device_info, package_versions

    workers = args.workers if args.workers is not None else min(16, default_workers())
    print(f"device: {device_info()}")
    print(f"packages: {package_versions()}")
    print(f"torch threads: {torch.get_num_threads()}, loader workers: {workers}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        scratch = Path(args.work_dir) if args.work_dir else Path(tmp)
        raw_root, large, small = make_data(scratch, args, workers)
        rows = []
        if not args.skip_train:
            rows += training_rows(args, large, small, scratch)
        if not args.skip_loader:
            rows += loader_rows(args, raw_root, large, scratch, workers)
    print_table(rows)


if __name__ == "__main__":
    main()
