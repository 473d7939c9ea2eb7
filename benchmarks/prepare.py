"""Benchmark 02_prepare: ``prepare_dataset`` against a plain single-process loop doing the same work.

Generates N demo pairs of 1024x1024 PNGs in the Kaggle layout in a temporary folder, then times, in one
run and on the same files: a plain loop (cv2 decode of image and mask, resize to 512 with INTER_AREA /
INTER_NEAREST on the binarized mask, PNG encode with prepare's settings, write), ``prepare_dataset`` with one worker,
and ``prepare_dataset`` with all workers. OpenCV runs single-threaded everywhere, so "1 process" means one core.
Wall time gives images/s; the CPU time of the single-process runs gives their per-image cost, which stays
meaningful on a machine shared with other jobs (worker processes' CPU time is not counted, hence "-").

    .venv/bin/python benchmarks/prepare.py --images 200
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from helpers.core.parallel import default_workers
from helpers.data.demo_dataset import DemoSpec, generate_demo_dataset
from helpers.data.images import IMAGE_PNG_PARAMS, MASK_PNG_PARAMS
from helpers.data.prepare import prepare_dataset
from helpers.data.rawdata import read_index

RAW_SIZE = 1024


def plain_loop(pairs: pd.DataFrame, out_dir: Path, img_size: int) -> None:
    """The baseline: decode, resize, binarize, encode and write each pair, one after the other."""
    (out_dir / "images").mkdir(parents=True)
    (out_dir / "masks").mkdir(parents=True)
    for name, image_path, mask_path in zip(pairs["name"], pairs["image_path"], pairs["mask_path"], strict=True):
        image = cv2.imread(image_path, cv2.IMREAD_GRAYSCALE)
        mask = cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE)
        resized = cv2.resize(image, (img_size, img_size), interpolation=cv2.INTER_AREA)
        binary = cv2.resize((mask > 0).astype(np.uint8), (img_size, img_size), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(out_dir / "images" / name), resized, IMAGE_PNG_PARAMS)
        cv2.imwrite(str(out_dir / "masks" / name), binary, MASK_PNG_PARAMS)


def best_time(run: Callable[[Path], object], scratch: Path, label: str, repeats: int) -> tuple[float, float]:
    """(wall, CPU of this process) seconds of the fastest of ``repeats`` runs, each into a fresh output folder."""
    times = []
    for attempt in range(repeats):
        out = scratch / f"{label}-{attempt}"
        wall, cpu = time.perf_counter(), time.process_time()
        run(out)
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="image/mask pairs to generate (default 200)")
    parser.add_argument(
        "--workers", type=int, default=default_workers(), help="workers for prepare (default: all cores)"
    )
    parser.add_argument("--img-size", type=int, default=512, help="prepared size (default 512)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per method; the fastest counts (default 1)")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)

    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        scratch = Path(tmp)
        start = time.perf_counter()
        generate_demo_dataset(
            scratch / "raw", DemoSpec(n_train=args.images, n_test=0, size=RAW_SIZE), workers=args.workers
        )
        print(f"generated {args.images} pairs of {RAW_SIZE}x{RAW_SIZE} PNGs in {time.perf_counter() - start:.1f} s")
        pairs = read_index(scratch / "raw").pairs
        for path in [*pairs["image_path"], *pairs["mask_path"]]:  # page cache: no run pays for the disk
            Path(path).read_bytes()

        def prepare(workers: int) -> Callable[[Path], object]:
            return lambda out: prepare_dataset(scratch / "raw", out, img_size=args.img_size, workers=workers)

        seconds = {
            "plain loop (1 process)": best_time(
                lambda out: plain_loop(pairs, out, args.img_size), scratch, "loop", args.repeats
            ),
            "prepare_dataset workers=1": best_time(prepare(1), scratch, "one", args.repeats),
            f"prepare_dataset workers={args.workers}": best_time(prepare(args.workers), scratch, "all", args.repeats),
        }

    n = len(pairs)
    loop_wall, loop_cpu = seconds["plain loop (1 process)"]
    table = pd.DataFrame(
        {
            "method": list(seconds),
            "wall s": [round(wall, 2) for wall, _ in seconds.values()],
            "images/s": [round(n / wall, 1) for wall, _ in seconds.values()],
            "speed-up vs loop": [round(loop_wall / wall, 2) for wall, _ in seconds.values()],
            "wall ms/image": [round(1000 * wall / n, 2) for wall, _ in seconds.values()],
            "CPU ms/image": [round(1000 * cpu / n, 2) for _, cpu in list(seconds.values())[:2]] + ["-"],
        }
    )
    print(f"\n{n} pairs, {RAW_SIZE} -> {args.img_size}, {default_workers()} cores available\n")
    print(table.to_string(index=False))
    (one_wall, one_cpu), (all_wall, _) = list(seconds.values())[1:]
    print(f"\nprepare with {args.workers} workers: {loop_wall / all_wall:.2f}x the plain loop's images/s")
    print(
        f"per image, workers=1 vs the loop: wall {1000 * one_wall / n:.2f} vs {1000 * loop_wall / n:.2f} ms "
        f"({one_wall / loop_wall:.2f}x), CPU {1000 * one_cpu / n:.2f} vs {1000 * loop_cpu / n:.2f} ms "
        f"({one_cpu / loop_cpu:.2f}x)"
    )


if __name__ == "__main__":
    main()
