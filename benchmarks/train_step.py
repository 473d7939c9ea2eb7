"""Benchmark one training step of the seed's model, without the data loader: where the GPU time goes.

``model.train_step`` (data preprocessor, forward, loss, backward, optimizer step) on one fixed batch made by
the configured train pipeline from generated data, ``--warmup`` steps then ``--steps`` timed ones, for each
variant:
- fp32, NCHW: the baseline;
- AMP (bf16 where supported), NCHW;
- AMP, channels-last: what 03_train uses on CUDA (``amp='auto'``, ``ChannelsLastHook``);
- with ``--compile``: AMP, channels-last, and the backbone's and decode head's ``forward`` compiled with
  ``torch.compile`` (its compile time is printed apart).
It prints ms per step, images/s, the share of the H200's 680 images/s ceiling at 512 (FACTS.md) and the
ratio against the baseline. ``--profile DIR`` also writes torch.profiler's table of 5 steps per variant,
sorted by device time, and the share of the step's wall time during which the device was busy.
On the CPU (no GPU, or ``--skip-gpu``) it runs the fp32 variant at ``--cpu-size``: a smoke run.

    .venv/bin/python benchmarks/train_step.py --profile /tmp/profiles
    .venv/bin/python benchmarks/train_step.py --skip-gpu --steps 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

from train import H200_CEILING, ROOT  # benchmarks/train.py, beside this script

from helpers.core.paths import SEED_CONFIG

warnings.filterwarnings("ignore", category=UserWarning)

PROFILED_STEPS = 5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cpu-size", type=int, default=64)
    parser.add_argument("--cpu-batch-size", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--compile", action="store_true", help="add the torch.compile variant")
    parser.add_argument("--profile", type=Path, default=None, help="folder for torch.profiler's tables")
    parser.add_argument("--skip-gpu", action="store_true", help="hide the GPU: the CPU smoke run")
    return parser.parse_args(argv)


def make_batch(scratch: Path, size: int, batch: int):
    """(one collated training batch from the configured pipeline, the run's TrainParams)."""
    from mmengine.dataset import pseudo_collate
    from mmseg.registry import DATASETS

    from helpers.data.demo_dataset import DemoSpec, generate_demo_dataset
    from helpers.data.prepare import prepare_dataset
    from helpers.modeling.train import TrainParams, build_config

    spec = DemoSpec(n_train=max(batch, 8), n_test=2, size=size, seed=0)
    generate_demo_dataset(scratch / "raw", spec, workers=1)
    prepared = prepare_dataset(scratch / "raw", scratch / "prepared", img_size=size, workers=1, val_fraction=0.25)
    params = TrainParams(
        config=SEED_CONFIG,
        prepared_root=str(prepared.out_dir),
        img_size=size,
        batch_size=batch,
        work_dir=str(scratch / "run"),
    )
    dataset = DATASETS.build(build_config(params).train_dataloader.dataset)
    return pseudo_collate([dataset[i % len(dataset)] for i in range(batch)]), params


def build_model(params, device: str, channels_last: bool, compile_forward: bool):
    """The model and optimizer wrapper of ``build_config(params)`` (its AMP setting included), as the
    Runner builds them on one device."""
    import torch
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper
    from mmseg.registry import MODELS

    from helpers.modeling.train import build_config

    cfg = build_config(params)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    model = model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    if compile_forward:
        model.backbone.forward = torch.compile(model.backbone.forward)
        model.decode_head.forward = torch.compile(model.decode_head.forward)
    model.train()
    return model, optim_wrapper


def timed_steps(model, optim_wrapper, batch: dict, steps: int) -> float:
    """Seconds per ``train_step``, the device synchronized before and after."""
    import torch

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    sync()
    start = time.perf_counter()
    for _ in range(steps):
        model.train_step(batch, optim_wrapper)
    sync()
    return (time.perf_counter() - start) / steps


def profile_steps(model, optim_wrapper, batch: dict, path: Path, step_s: float) -> str:
    """Write torch.profiler's kernel table of a few steps to ``path``; return the device-busy share."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        timed_steps(model, optim_wrapper, batch, PROFILED_STEPS)
    averages = prof.key_averages()
    sort_by = "self_device_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    path.write_text(averages.table(sort_by=sort_by, row_limit=40, max_name_column_width=80))
    if not torch.cuda.is_available():
        return ""
    busy_s = sum(event.self_device_time_total for event in averages) / 1e6 / PROFILED_STEPS
    return f"device busy {100 * busy_s / step_s:.0f} % of the step"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.skip_gpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    sys.path.insert(0, str(ROOT))
    import torch
    from mmengine.registry import init_default_scope

    import helpers.modeling  # noqa: F401  (registers the project's mmseg components)
    from helpers.core.provenance import device_info

    init_default_scope("mmseg")
    cuda = torch.cuda.is_available()
    torch.backends.cudnn.benchmark = cuda  # as 03_train sets it on CUDA
    size, batch_size = (args.size, args.batch_size) if cuda else (args.cpu_size, args.cpu_batch_size)
    variants = [("fp32, NCHW", False, False, False)]
    if cuda:
        variants += [("AMP, NCHW", True, False, False), ("AMP, channels-last", True, True, False)]
        if args.compile:
            variants.append(("AMP, channels-last, compiled", True, True, True))
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    print(f"device: {device_info()}; {SEED_CONFIG} at {size}x{size}, batch {batch_size}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-step-") as tmp:
        batch, params = make_batch(Path(tmp), size, batch_size)
        device = "cuda" if cuda else "cpu"
        for name, amp, channels_last, compile_forward in variants:
            model, optim_wrapper = build_model(replace(params, amp=amp), device, channels_last, compile_forward)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            timed_steps(model, optim_wrapper, batch, args.warmup)
            warmup_s = time.perf_counter() - start
            step_s = timed_steps(model, optim_wrapper, batch, args.steps)
            peak_gb = f"{torch.cuda.max_memory_allocated() / 2**30:.1f}" if cuda else "-"
            note = f"warm-up {warmup_s:.0f} s" + (" (compilation included)" if compile_forward else "")
            if args.profile:
                label = name.replace(", ", "-").replace(" ", "_")
                busy = profile_steps(model, optim_wrapper, batch, args.profile / f"{label}.txt", step_s)
                note += f"; {busy}" if busy else ""
            rows.append((name, step_s, peak_gb, note))
            print(f"{name}: {1000 * step_s:.1f} ms/step", flush=True)
            del model, optim_wrapper
            if cuda:
                torch.cuda.empty_cache()
    base = rows[0][1]
    print(
        f"\n{'variant':30s} {'ms/step':>8s} {'images/s':>9s} {'% ceiling':>9s} {'vs fp32':>8s} {'peak GiB':>8s}  note"
    )
    for name, step_s, peak_gb, note in rows:
        ceiling = f"{100 * batch_size / step_s / H200_CEILING:.1f}" if cuda and size == 512 else "-"
        print(
            f"{name:30s} {1000 * step_s:8.1f} {batch_size / step_s:9.1f} {ceiling:>9s} "
            f"{'x%.2f' % (base / step_s):>8s} {peak_gb:>8s}  {note}"
        )


if __name__ == "__main__":
    main()
