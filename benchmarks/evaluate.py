"""Images/s of ``evaluate_run`` (inference + every metric) against mmseg's own ``Runner.test()``.

Same checkpoint, split, batch size and dataloader settings. Without ``--run`` a demo run is trained
briefly in a temporary folder (demo config, generated data). Each side runs once untimed (warm-up), then
``--repeats`` times, alternating which goes first; the best wall and CPU times count (CPU seconds are
the steadier measure on a shared machine). ``evaluate_run`` here uses a given post-processing (tuning
would add the val split's inference) and ``--n-boot`` bootstrap samples.

    .venv/bin/python benchmarks/evaluate.py [--run RUN_DIR --data-root DIR] [--batch-size 8] [--n-test 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from helpers.core.paths import DEMO_CONFIG
from helpers.modeling.inference import load_model, predict_split, resolve_run
from helpers.postprocessing import PostProcess
from helpers.workflow.evaluate_runs import evaluate_run


def train_demo_run(root: Path, n_test: int, img_size: int, iters: int) -> Path:
    """Generate, prepare and briefly train the demo; returns the run folder."""
    from helpers.data.demo_dataset import DemoSpec, generate_demo_dataset
    from helpers.data.prepare import prepare_dataset
    from helpers.modeling.train import TrainParams, run_training

    raw = generate_demo_dataset(root / "raw", DemoSpec(n_train=80, n_test=n_test, size=img_size, seed=0), workers=1)
    prepared = prepare_dataset(raw, root / "prepared", img_size=img_size, workers=1)
    result = run_training(
        TrainParams(
            config=DEMO_CONFIG,
            prepared_root=str(prepared.out_dir),
            img_size=img_size,
            max_iters=iters,
            val_interval=iters,
            work_dir=str(root / "run"),
        )
    )
    return result.work_dir


class Clock:
    """Wall and CPU seconds since the last ``lap``."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        elapsed = (wall - self.wall, cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
        return elapsed


def mmseg_side(run_dir: Path, split: str, data_root: str | None, batch_size: int, work_dir: Path) -> tuple[dict, dict]:
    """Times of ``Runner.from_cfg`` + ``test()`` and of ``test()`` alone (it loads the checkpoint), and its metrics."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    import helpers.data.mmseg_dataset  # noqa: F401
    import helpers.modeling  # noqa: F401

    _, checkpoint, config = resolve_run(run_dir)
    cfg = Config.fromfile(str(config))
    cfg.work_dir = str(work_dir)
    cfg.log_level = "WARNING"
    cfg.load_from = str(checkpoint)
    cfg.test_dataloader.batch_size = batch_size
    cfg.test_dataloader.dataset.ann_file = f"{split}.txt"
    if data_root is not None:
        cfg.test_dataloader.dataset.data_root = data_root
    clock = Clock()
    runner = Runner.from_cfg(cfg)
    build = clock.lap()
    metrics = runner.test()
    test = clock.lap()
    total = (build[0] + test[0], build[1] + test[1])
    return {"mmseg: Runner build+test": total, "mmseg: Runner.test()": test}, metrics


def our_side(
    run_dir: Path, split: str, data_root: str | None, batch_size: int, n_boot: int, device: str | None, out_dir: Path
) -> tuple[dict, dict]:
    """Times of ``evaluate_run`` (load, inference, every metric, bootstrap, files) and of load_model +
    predict_split alone, and the metrics."""
    clock = Clock()
    result = evaluate_run(
        run_dir,
        split=split,
        prepared_root=data_root,
        batch_size=batch_size,
        postprocess=PostProcess(),
        n_boot=n_boot,
        device=device,
        out_dir=out_dir,
    )
    full = clock.lap()
    predict_split(load_model(run_dir, device), result.data_root, split, batch_size)
    inference = clock.lap()
    return {"ours: evaluate_run": full, "ours: load+predict_split": inference}, result.metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a run folder (default: train a demo run in a temporary folder)")
    parser.add_argument("--data-root", help="prepared data (default: the run's config)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", help="cpu or cuda (default: cuda when visible)")
    parser.add_argument("--n-test", type=int, default=200, help="demo test images when training a demo run")
    parser.add_argument("--img-size", type=int, default=128, help="demo image size")
    parser.add_argument("--iters", type=int, default=20, help="demo training iterations")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_dir = Path(args.run) if args.run else train_demo_run(tmp, args.n_test, args.img_size, args.iters)
        times: dict[str, list[tuple[float, float]]] = {}
        for repeat in range(args.repeats + 1):  # the first round warms up; the order alternates
            for side in ("mmseg", "ours")[:: 1 if repeat % 2 == 0 else -1]:
                if side == "ours":
                    measured, mine = our_side(
                        run_dir,
                        args.split,
                        args.data_root,
                        args.batch_size,
                        args.n_boot,
                        args.device,
                        tmp / f"eval{repeat}",
                    )
                else:
                    measured, theirs = mmseg_side(
                        run_dir, args.split, args.data_root, args.batch_size, tmp / f"runner{repeat}"
                    )
                for name, value in measured.items():
                    times.setdefault(name, []).append(value)
        images = mine["mmseg"]["images"]
        print(
            f"\nrun {run_dir}, split {args.split}: {images} images of {mine['image_shape']}, batch {args.batch_size}, "
            f"n_boot {args.n_boot}, device {args.device or 'auto'}"
        )
        rate, cpu_rate = {}, {}
        for name, values in sorted(times.items()):
            wall = min(v[0] for v in values[1:])
            cpu = min(v[1] for v in values[1:])
            rate[name], cpu_rate[name] = images / wall, images / cpu
            print(
                f"{name:>26}: {rate[name]:7.1f} images/s wall (best of {args.repeats}: {wall:6.2f} s), "
                f"{cpu_rate[name]:7.1f} images per CPU-second"
            )
        for ours_name, mmseg_name in (
            ("ours: evaluate_run", "mmseg: Runner build+test"),
            ("ours: load+predict_split", "mmseg: Runner.test()"),
        ):
            print(
                f"{'ratio':>26}: {rate[ours_name] / rate[mmseg_name]:.2f} wall, "
                f"{cpu_rate[ours_name] / cpu_rate[mmseg_name]:.2f} CPU ({ours_name} / {mmseg_name})"
            )
        same = all(float(mine["mmseg"][k]) == round(float(theirs[k]), 2) for k in ("aAcc", "mIoU", "mDice"))
        print(f"{'same aAcc/mIoU/mDice':>26}: {same} ({ {k: float(theirs[k]) for k in ('aAcc', 'mIoU', 'mDice')} })")


if __name__ == "__main__":
    main()
