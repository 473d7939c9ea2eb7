"""The full-size rehearsal: every stage at growing numbers of 1024x1024 images, its cost and its growth.

For each size N (``--sizes``, images in all) it generates data in the real dataset's layout and size (the demo
generator at 1024x1024, the real split between the train and test stages (10,675 / 1,372), 22 % positive,
patients with up to 6 images), then runs the full-data profile (``pipeline/*.yaml`` as shipped) stage by stage
through ``python -m helpers pipeline``, each stage in its own process. Changed from the shipped profile, and only
this: the data folders (``shared.yaml``: generated data in a scratch folder); 03_train trains the CPU demo model
(``configs/demo_*``) at the real input size 512 for ``--iters`` iterations (validated once), for the first
learning rate of the sweep only (``--lrs`` to change); 01 and 02 use ``--workers`` processes. 04 runs at 512 (the
prepared data, as shipped) and at 1024 (``prepared_root`` a second preparation at 1024, as the seed scored 512
models on the 1024 masks), and a mean-probability ensemble of 5 members (the trained run 5 times, tuned on val)
is evaluated at 1024 (``helpers.workflow.evaluate_runs.evaluate_ensemble``, with 04's batch size, TTA and bootstrap).

Per stage and size: wall and CPU seconds (the process and every child it waited for, such as papermill's kernel,
or the sum sampled over its process tree when larger: a pool's workers started by a fork server are not waited for),
peak RSS (the sum over the process tree, sampled every 0.1 s, and the largest single process from ``wait4``), bytes
written (the block writes ``wait4`` counts) and the disk the stage left behind. Then, per stage, the log-log
slopes of time and memory between consecutive sizes, and the goals, each printed as met or NOT met; the exit
status is 1 when one is missed:

- time grows at most linearly with the images: slope of wall and of CPU time <= 1.1;
- no stage's peak memory grows with the images beyond what it must keep: the largest process's peak RSS,
  extrapolated linearly (through the two largest sizes) to the real 12,047 images, at most 1 GB over the largest
  size's (87 KB an image, 1/12 byte a pixel at 1024);
- 04 at 1024 (the patient split's val + test, tuned on val) and the 5-member ensemble at 1024: that extrapolated
  peak within 4 GB.

At small sizes the peak's per-image estimate is noisy (tens of MB between runs divided by tens of images): a change
under 32 MB between two sizes counts as none, and the largest process's ``wait4`` peak is used because it is
steadier than the sampled tree sum. So at ``--quick``'s sizes only a growth of about 1 MB an image or more shows;
``tests/test_evaluation_memory.py`` checks evaluation's memory exactly (tracemalloc), and the sizes 500 and 2,000
resolve a quarter byte a pixel at 1024.

The stages run with glibc's mmap threshold fixed at 128 KB (``MALLOC_MMAP_THRESHOLD_``): by default glibc raises
it as large blocks are freed, and the freed memory it then keeps grows with the number of batches up to a plateau,
which at small sizes is indistinguishable from growth with the images. ``--default-malloc`` leaves it as a user's
process has it.

``--quick`` runs 32 and 64 images with 04's (and the ensemble's) batch size 2, so that every split holds a full
batch at both sizes: the batch's memory then does not grow with its fill between the sizes, which would look like
growth with the images. The absolute 4 GB goal is for the shipped batch of 16 (``--eval-batch``; its ``batch``
column says which). ``--skip`` leaves steps out (for a full-size run on a small machine, the ones it has no hours
for); with ``--keep`` the table so far is written to ``DIR/scale.csv`` after every step.

    .venv/bin/python benchmarks/scale.py --quick            # sizes 32 and 64, 1 training iteration, batch 2
    .venv/bin/python benchmarks/scale.py --sizes 500 2000 12047 --keep /big/disk/scale
    .venv/bin/python benchmarks/scale.py --report /big/disk/scale   # its table and goals again
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
REAL_IMAGES, REAL_TEST_STAGE = 12047, 1372  # the Kaggle dataset: 10,675 train-stage + 1,372 test-stage images
MEMORY_BOUND = 4 * 1024**3
RSS_NOISE_MB = 32  # a peak that changes less than this between two sizes counts as not growing (run-to-run noise)
GROWTH_ALLOWANCE_MB = (
    1024  # what a stage may keep per image: 1 GB over 12,047 images is 87 KB an image (1/12 byte a pixel at 1024)
)
TIME_SLOPE_BOUND = 1.1
QUICK_SIZES = (32, 64)
# --quick's batch size for 04 and the ensemble: at 32 images the test and val splits hold about 4 and 6, so every
# split still holds one full batch (a batch's memory must not grow with its fill between the sizes); the shipped 16
# would need 150 images, and --quick at 150 and 300 took about 25 minutes on 2 cores (inference-bound)
QUICK_EVAL_BATCH = 2
ENSEMBLE_MEMBERS = 5
# glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which freed tensors stay in
# the heap: a process's RSS then climbs with the number of batches to a plateau, which at --quick's sizes looks like
# growth with the images (04 at 1024, batch 2: 1,062 MB at 32 images, 1,113 to 1,140 MB at 64; with the threshold
# fixed at 128 KB, 943 and 945 MB). Fixed, the peak RSS is the memory the stage holds; --default-malloc measures
# what a user's process gets, retained heap included.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}
ENSEMBLE_STEP = f"ensemble{ENSEMBLE_MEMBERS}@1024"


def _tree(pid: int) -> list:
    """The process ``pid`` and all its descendants (psutil), [] when it is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _sample_tree(pid: int, cpu_seen: dict[int, float]) -> int:
    """Resident bytes of the tree now; records each process's CPU seconds so far in ``cpu_seen`` (processes that
    the stage does not wait for, e.g. a pool's workers started by a fork server, are missing from wait4's count)."""
    import psutil

    total = 0
    for process in _tree(pid):
        try:
            total += process.memory_info().rss
            times = process.cpu_times()
            cpu_seen[process.pid] = times.user + times.system
        except psutil.Error:
            pass
    return total


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def measure(command: list[str], log_path: Path, disk_root: Path, *, default_malloc: bool = False) -> dict:
    """Run ``command`` (from the repository root) and measure it; raises when it fails (its log says why).

    Unless ``default_malloc``, glibc's mmap threshold is fixed (:data:`MALLOC_ENV`) in the stage's processes."""
    disk_before = _disk_bytes(disk_root)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "TQDM_DISABLE": "1",
        **({} if default_malloc else MALLOC_ENV),
    }
    with open(log_path, "w") as log:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        peak = [0]
        cpu_seen: dict[int, float] = {}
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _sample_tree(process.pid, cpu_seen))
                done.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}); {log_path}:\n{tail}")
    # CPU: wait4's (the stage and every process it waited for) or, when larger, the sum sampled over the tree
    cpu = max(usage.ru_utime + usage.ru_stime, sum(cpu_seen.values()))
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_tree_MB": peak[0] / 2**20,
        "peak_rss_single_MB": usage.ru_maxrss / 1024,
        "written_MB": usage.ru_oublock * 512 / 2**20,
        "disk_added_MB": (_disk_bytes(disk_root) - disk_before) / 2**20,
    }


def write_profile(
    folder: Path,
    root: Path,
    *,
    iters: int,
    lrs: list[float] | None,
    workers: int,
    img_size: int = 512,
    eval_prepared: Path | None = None,
    eval_batch: int | None = None,
) -> Path:
    """The shipped full-data profile (pipeline/*.yaml) with only the changes the module doc lists."""
    from helpers.core import paths

    folder.mkdir(parents=True, exist_ok=True)
    for source in sorted(paths.PIPELINE_PARAMS_DIR.glob("*.yaml")):
        params = yaml.safe_load(source.read_text()) or {}
        stage = source.stem
        if stage == "shared":
            params.update(raw_root=str(root / "raw"), prepared_root=str(root / "prepared" / f"patient-{img_size}"))
        elif stage in ("01_explore", "02_prepare"):
            params["workers"] = workers
            if stage == "02_prepare":
                params["img_size"] = img_size
        elif stage == "03_train":
            demo = yaml.safe_load((paths.PIPELINE_PARAMS_DIR / "demo" / "03_train.yaml").read_text())
            params.update(
                config=demo["config"],
                img_size=512,
                max_iters=iters,
                val_interval=iters,
                lrs=lrs if lrs else params["lrs"][:1],
            )
        elif stage == "04_evaluate":
            if eval_prepared is not None:
                params["prepared_root"] = str(eval_prepared)
            if eval_batch:
                params["batch_size"] = eval_batch
        (folder / source.name).write_text(yaml.safe_dump(params, sort_keys=False))
    return folder


def ensemble_worker(run_dir: str, prepared_root: str, outputs: str, params_dir: str) -> None:
    """Evaluate the 5-member ensemble with 04's settings from ``params_dir`` (in its own process, measured from
    outside)."""
    from helpers.workflow.evaluate_runs import evaluate_ensemble

    params = yaml.safe_load((Path(params_dir) / "04_evaluate.yaml").read_text())
    evaluate_ensemble(
        [run_dir] * ENSEMBLE_MEMBERS,
        f"scale_{ENSEMBLE_MEMBERS}members",
        split=params["split"],
        prepared_root=prepared_root,
        batch_size=params["batch_size"],
        tta=params["tta"],
        n_boot=params["n_boot"],
        device="cpu",
        outputs=outputs,
    )


def _show(row: dict) -> None:
    print(
        "    " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True
    )


STEPS = (
    "generate@1024",
    "01_explore@1024",
    "02_prepare@512",
    "03_train@512",
    "04_evaluate@512",
    "05_visualize@512",
    "02_prepare@1024",
    "04_evaluate@1024",
    ENSEMBLE_STEP,
)


def run_size(n_images: int, root: Path, args: argparse.Namespace, done: Callable[[dict], None]) -> None:
    """Every step (but ``args.skip``) at ``n_images`` images; ``done(row)`` after each."""
    from helpers.core import run_folders

    root.mkdir(parents=True, exist_ok=True)
    outputs, logs = root / "outputs", root / "logs"
    logs.mkdir(exist_ok=True)
    n_test = max(1, round(n_images * REAL_TEST_STAGE / REAL_IMAGES))
    settings = dict(iters=args.iters, lrs=args.lrs, workers=args.workers, eval_batch=args.eval_batch)
    profile = write_profile(root / "pipeline", root, **settings)
    profile_1024 = write_profile(
        root / "pipeline-1024", root, img_size=1024, eval_prepared=root / "prepared" / "patient-1024", **settings
    )
    eval_batch = yaml.safe_load((profile / "04_evaluate.yaml").read_text())["batch_size"]
    helpers_cli = [sys.executable, "-m", "helpers"]

    def pipeline(stage: str, params: Path) -> list[str]:
        return [*helpers_cli, "pipeline", "--params-dir", str(params), "--outputs", str(outputs), "--stages", stage]

    train_params = yaml.safe_load((profile / "03_train.yaml").read_text())
    run_dir = run_folders.run_dir(train_params["config"], train_params["lrs"][0], outputs)
    commands = {  # keyed by STEPS' names, run in STEPS' order
        "generate@1024": [
            *helpers_cli,
            "demo-data",
            "--dest",
            str(root / "raw"),
            "--n-train",
            str(n_images - n_test),
            "--n-test",
            str(n_test),
            "--size",
            "1024",
        ],
        "01_explore@1024": pipeline("01_explore", profile),
        "02_prepare@512": pipeline("02_prepare", profile),
        "03_train@512": pipeline("03_train", profile),
        "04_evaluate@512": pipeline("04_evaluate", profile),
        "05_visualize@512": pipeline("05_visualize", profile),
        "02_prepare@1024": pipeline("02_prepare", profile_1024),
        "04_evaluate@1024": pipeline("04_evaluate", profile_1024),
        ENSEMBLE_STEP: [
            sys.executable,
            str(Path(__file__).resolve()),
            "--ensemble-worker",
            str(run_dir),
            str(root / "prepared" / "patient-1024"),
            str(outputs),
            str(profile),
        ],
    }
    if set(commands) != set(STEPS):
        raise AssertionError(f"STEPS and run_size's commands differ: {sorted(set(commands) ^ set(STEPS))}")
    for step in STEPS:
        if step in args.skip:
            continue
        stage, resolution = step.split("@")
        command = commands[step]
        print(f"  N={n_images}: {stage} at {resolution} ...", flush=True)
        row = {
            "stage": stage,
            "resolution": resolution,
            "images": n_images,
            **measure(command, logs / f"{stage}-{resolution}.log", root, default_malloc=args.default_malloc),
        }
        if stage.startswith(("04", "ensemble")):  # what it predicted: val (for tuning) + test, at 04's batch size
            evaluated = json.loads(
                (run_folders.eval_dir(run_dir, "test", outputs) / run_folders.EVAL_METRICS_FILE).read_text()
            )
            row.update(
                predicted_images=evaluated["mmseg"]["images"] + evaluated["postprocess"].get("val_images", 0),
                batch=eval_batch,
            )
        _show(row)
        done(row)


def slope(x0: float, x1: float, y0: float, y1: float) -> float:
    """The log-log slope between two points (NaN when a value is not positive)."""
    if min(x0, x1, y0, y1) <= 0 or x0 == x1:
        return math.nan
    return math.log(y1 / y0) / math.log(x1 / x0)


def growth(table: pd.DataFrame) -> pd.DataFrame:
    """Per stage: slopes between consecutive sizes, and the largest process's peak memory extrapolated linearly
    (through the two largest sizes) to the real 12,047 images."""
    rows = []
    for (stage, resolution), group in table.groupby(["stage", "resolution"], sort=False):
        group = group.sort_values("images")
        stage_rows = []
        for i in range(1, len(group)):
            a, b = group.iloc[i - 1], group.iloc[i]
            stage_rows.append(
                {
                    "stage": stage,
                    "resolution": resolution,
                    "from": int(a.images),
                    "to": int(b.images),
                    "wall_slope": slope(a.images, b.images, a.wall_s, b.wall_s),
                    "cpu_slope": slope(a.images, b.images, a.cpu_s, b.cpu_s),
                    "rss_slope": slope(a.images, b.images, a.peak_rss_single_MB, b.peak_rss_single_MB),
                    "rss_MB_per_image": (b.peak_rss_single_MB - a.peak_rss_single_MB) / (b.images - a.images),
                }
            )
        if stage_rows:
            last = group.iloc[-1]
            change = group.iloc[-1].peak_rss_single_MB - group.iloc[-2].peak_rss_single_MB
            per_image = 0.0 if change < RSS_NOISE_MB else stage_rows[-1]["rss_MB_per_image"]
            for row in stage_rows:
                row["batch"] = last.get("batch", math.nan)
                row["rss_MB_largest"] = last.peak_rss_single_MB
                row["rss_MB_at_12047"] = last.peak_rss_single_MB + per_image * (REAL_IMAGES - last.images)
        rows += stage_rows
    return pd.DataFrame(rows)


def goals(slopes: pd.DataFrame) -> list[tuple[str, bool]]:
    """Each goal as (what, met)."""
    results = []
    for row in slopes.to_dict("records"):
        label = f"{row['stage']} at {row['resolution']}, {row['from']} -> {row['to']} images"
        results.append(
            (
                f"{label}: time slope <= {TIME_SLOPE_BOUND} (wall {row['wall_slope']:.2f}, CPU {row['cpu_slope']:.2f})",
                bool(row["wall_slope"] <= TIME_SLOPE_BOUND and row["cpu_slope"] <= TIME_SLOPE_BOUND),
            )
        )
    for (stage, resolution), group in slopes.groupby(["stage", "resolution"], sort=False):
        largest, projected = group["rss_MB_largest"].iloc[-1], group["rss_MB_at_12047"].iloc[-1]
        results.append(
            (
                f"{stage} at {resolution}: peak RSS extrapolated to {REAL_IMAGES} images {projected / 1024:.2f} GB, "
                f"at most {GROWTH_ALLOWANCE_MB / 1024:.0f} GB over the largest size's {largest / 1024:.2f} GB",
                bool(projected - largest <= GROWTH_ALLOWANCE_MB),
            )
        )
        if stage.startswith(("04", "ensemble")) and resolution == "1024":
            batch = group["batch"].iloc[-1]
            batch = f"batch {batch:.0f}" if batch == batch else "04's batch"
            results.append(
                (
                    f"{stage} at 1024 (val + test, tuned on val, {batch}): extrapolated peak RSS "
                    f"{projected / 1024:.2f} GB <= {MEMORY_BOUND / 2**30:.0f} GB",
                    bool(projected * 2**20 <= MEMORY_BOUND),
                )
            )
    return results


def report(table: pd.DataFrame) -> bool:
    """Print the table, the growth and the goals; True when every goal is met."""
    pd.set_option("display.width", 250)
    print("\nPer stage and size (peak RSS: tree = sum over the stage's processes, single = its largest process):")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    slopes = growth(table)
    if not len(slopes):
        print("\n(one size only: no growth exponents)")
        return True
    print(
        "\nGrowth between sizes (log-log slopes of wall time, CPU time and the largest process's peak RSS; "
        "its MB per added image and extrapolated to 12,047 images):"
    )
    print(slopes.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    results = goals(slopes)
    print("\nGoals:")
    for text, met in results:
        print(f"  {'met    ' if met else 'NOT met'}  {text}")
    return all(met for _, met in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, help="numbers of images (default 500 2000 12047)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"sizes {QUICK_SIZES[0]} and {QUICK_SIZES[1]}, 1 training iteration, 04's batch size {QUICK_EVAL_BATCH}",
    )
    parser.add_argument(
        "--iters", type=int, help="training iterations, validated once at the end (default 4; --quick 1)"
    )
    parser.add_argument("--lrs", nargs="*", type=float, help="learning rates to train (default: the profile's first)")
    parser.add_argument("--workers", type=int, default=2, help="01/02's worker processes")
    parser.add_argument(
        "--eval-batch",
        type=int,
        help=f"04's and the ensemble's batch size (default: the profile's; --quick {QUICK_EVAL_BATCH})",
    )
    parser.add_argument(
        "--skip",
        nargs="+",
        default=[],
        choices=STEPS,
        metavar="STEP",
        help=f"steps not to run (a step needs those before it that it reads): {' '.join(STEPS)}",
    )
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's mmap threshold dynamic in the stages (RSS then includes freed memory glibc keeps)",
    )
    parser.add_argument("--keep", metavar="DIR", help="work (and keep everything) in DIR instead of a temporary folder")
    parser.add_argument("--report", metavar="DIR", help="only print the table and goals of a --keep DIR's scale.csv")
    parser.add_argument(
        "--ensemble-worker", nargs=4, metavar=("RUN", "PREPARED", "OUTPUTS", "PARAMS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.ensemble_worker:
        ensemble_worker(*args.ensemble_worker)
        return
    if args.report:
        if not report(pd.read_csv(Path(args.report) / "scale.csv", dtype={"resolution": str})):
            raise SystemExit(1)
        return
    sizes = sorted(set(args.sizes or (QUICK_SIZES if args.quick else (500, 2000, REAL_IMAGES))))
    args.iters = args.iters or (1 if args.quick else 4)
    args.eval_batch = args.eval_batch or (QUICK_EVAL_BATCH if args.quick else None)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="scale-"))
    print(f"working in {work} ({os.cpu_count()} CPUs)", flush=True)
    rows: list[dict] = []

    def done(
        row: dict,
    ) -> None:  # with --keep, the table so far is on disk after every step (a long run may be stopped)
        rows.append(row)
        if args.keep:
            from helpers.core.fileio import atomic_write_text

            atomic_write_text(work / "scale.csv", pd.DataFrame(rows).to_csv(index=False))

    try:
        for n_images in sizes:
            run_size(n_images, work / f"n{n_images}", args, done)
            if not args.keep:  # keep the disk to one size at a time
                shutil.rmtree(work / f"n{n_images}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if not rows:
        raise SystemExit("every step was skipped (--skip): nothing measured")
    table = pd.DataFrame(rows)
    if not report(table):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
