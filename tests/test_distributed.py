"""Two CPU processes train together through torchrun (gloo), the path a GPU node takes with nccl: each rank
trains on its own half of the data, the ranks end with the same weights, only rank 0 writes files, and a
run killed mid-way resumes under DDP where it stopped. The demo config's loss goes down."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import psutil
import pytest
import torch

from helpers.core import paths, run_folders
from helpers.core.paths import DEMO_CONFIG
from helpers.modeling.distributed import process_count
from helpers.modeling.train import TrainParams, build_config, run_training
from tests.ddp_probe import OTHER_RANKS_UMASK

pytestmark = pytest.mark.slow

MAX_ITERS = 30
CHECKPOINT_INTERVAL = 10
BATCH = 4


def test_process_count():
    assert process_count(gpus=1, nproc=1) == 1
    assert process_count(gpus=4, nproc=1) == 4
    assert process_count(gpus=0, nproc=2) == 2
    assert process_count(gpus=1, nproc=3) == 3
    with pytest.raises(ValueError, match="gpus=2 and nproc=2"):
        process_count(gpus=2, nproc=2)
    with pytest.raises(ValueError, match="nproc=0"):
        process_count(gpus=1, nproc=0)


def session_train_steps(session: Path) -> list[int]:
    rows = [json.loads(line) for line in (session / "vis_data" / "scalars.json").read_text().splitlines()]
    return [row["step"] for row in rows if "loss" in row]


@pytest.fixture(scope="module")
def ddp_run(demo_prepared, tmp_path_factory):
    """The demo config at 64x64 in 2 CPU processes, killed (SIGKILL, the whole process group) after its first
    checkpoint and resumed with ``resume=True``; a probe hook records what every rank did."""
    root = tmp_path_factory.mktemp("ddp")
    probe_dir = root / "probe"
    config = root / "demo_with_probe.py"
    config.write_text(
        f"_base_ = [{str(paths.config_path(DEMO_CONFIG))!r}]\n"
        "custom_imports = dict(imports=['tests.ddp_probe'], allow_failed_imports=False)\n"
        f"custom_hooks = [dict(type='DDPProbeHook', out_dir={str(probe_dir)!r})]\n"
    )
    work_dir = root / "run"
    params = TrainParams(
        config=str(config),
        prepared_root=str(demo_prepared.out_dir),
        img_size=64,
        batch_size=BATCH,
        workers=0,
        max_iters=MAX_ITERS,
        val_interval=CHECKPOINT_INTERVAL,
        work_dir=str(work_dir),
        nproc=2,
    )
    assert build_config(params).launcher == "pytorch"

    script = (
        "import json, sys\nfrom helpers.modeling.train import TrainParams, run_training\n"
        "run_training(TrainParams(**json.loads(sys.argv[1])))\n"
    )
    first = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(asdict(params))],
        cwd=paths.REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 900
        while not (work_dir / "last_checkpoint").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first session ended before it could be killed"
    finally:  # SIGKILL to the launcher, torchrun and both ranks (each in its own session): a pre-empted job
        launcher = psutil.Process(first.pid)
        processes = [launcher, *launcher.children(recursive=True)]
        for process in processes:
            process.kill()
        psutil.wait_procs(processes, timeout=30)
        first.wait()
    killed_at = Path((work_dir / "last_checkpoint").read_text().strip())
    result = run_training(replace(params, resume=True))
    return {"work_dir": work_dir, "probe": probe_dir, "killed_at": killed_at, "result": result}


def probe_records(probe: Path) -> dict[int, dict]:
    records = {}
    for path in probe.glob(f"rank*-iter{MAX_ITERS}.json"):
        record = json.loads(path.read_text())
        records[record["rank"]] = record
    return records


def test_each_rank_trains_on_its_own_half_of_the_data(ddp_run):
    records = probe_records(ddp_run["probe"])
    assert sorted(records) == [0, 1]
    for rank, record in records.items():
        assert record["world_size"] == 2 and record["sampler_world_size"] == 2 and record["sampler_rank"] == rank
        assert record["wrapper"] == "MMDistributedDataParallel"
    size = records[0]["dataset_size"]
    halves = [set(records[rank]["first_pass"]) for rank in (0, 1)]
    assert not halves[0] & halves[1], "the ranks share samples within one pass over the data"
    assert len(halves[0]) == len(halves[1]) == size // 2 and halves[0] | halves[1] <= set(range(size))
    for record in records.values():  # what the rank trained on is its shard, in its order, and the resumed
        seen = [path for batch in record["seen_paths"] for path in batch]  # session skipped what was trained
        assert seen == record["stream_paths"][BATCH * record["start_iter"] : BATCH * MAX_ITERS]
    assert records[0]["seen_paths"] != records[1]["seen_paths"]


def test_the_ranks_end_with_identical_weights_that_training_changed(ddp_run):
    states = [torch.load(ddp_run["probe"] / f"rank{rank}-iter{MAX_ITERS}.pt") for rank in (0, 1)]
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    done = int(ddp_run["killed_at"].stem.removeprefix("iter_"))
    start = torch.load(ddp_run["probe"] / f"rank0-from{done}.pt")
    changed = [
        key for key in states[0] if states[0][key].is_floating_point() and not torch.equal(states[0][key], start[key])
    ]
    assert len(changed) > len(states[0]) // 2, "the resumed session did not train"


def test_only_rank_0_writes_checkpoints_logs_and_metrics(ddp_run):
    work_dir = ddp_run["work_dir"]
    checkpoints = [*work_dir.glob("*.pth"), work_dir / "last_checkpoint"]
    # the probe gives rank 1 the umask 077: a file it created would have no group/other permission bits
    assert not [p.name for p in checkpoints if not p.stat().st_mode & OTHER_RANKS_UMASK]
    sessions = sorted(p.parent.parent for p in work_dir.glob("*/vis_data/scalars.json"))
    assert len(sessions) == 2
    for session in sessions:
        logs = list(session.glob("*.log"))
        assert len(logs) == 1 and "rank" not in logs[0].name.replace(session.name, "")
        assert len(list((session / "vis_data").glob("events.out.tfevents.*"))) == 1
    names = sorted(p.name for p in work_dir.glob("*.pth"))
    assert f"iter_{MAX_ITERS}.pth" in names and all(name.startswith(("iter_", "best_")) for name in names)
    assert (work_dir / run_folders.METRICS_FILE).is_file()


def test_a_killed_ddp_run_resumes_with_the_iteration_count_continuing(ddp_run):
    work_dir, killed_at = ddp_run["work_dir"], ddp_run["killed_at"]
    done = int(killed_at.stem.removeprefix("iter_"))
    assert done % CHECKPOINT_INTERVAL == 0 and done < MAX_ITERS
    sessions = sorted(p.parent.parent for p in work_dir.glob("*/vis_data/scalars.json"))
    log_text = next(sessions[1].glob("*.log")).read_text()
    assert f"Auto resumed from the latest checkpoint {killed_at}" in log_text
    assert f"resumed epoch: 0, iter: {done}" in log_text
    resumed_steps = session_train_steps(sessions[1])
    assert resumed_steps[0] > done and resumed_steps[-1] == MAX_ITERS
    assert max(session_train_steps(sessions[0])) < MAX_ITERS
    records = probe_records(ddp_run["probe"])
    assert {record["start_iter"] for record in records.values()} == {done}
    train_rows, val_rows = run_folders.read_scalars(work_dir)
    steps = [row["step"] for row in train_rows]
    assert steps == sorted(set(steps)) and steps[-1] == MAX_ITERS
    assert MAX_ITERS in {row["step"] for row in val_rows}
    metrics = ddp_run["result"].metrics
    assert (
        metrics["iterations"] == MAX_ITERS and ddp_run["result"].last_checkpoint == work_dir / f"iter_{MAX_ITERS}.pth"
    )


def test_the_demo_config_loss_goes_down_under_ddp(ddp_run):
    train_rows, _ = run_folders.read_scalars(ddp_run["work_dir"])
    losses = [row["loss"] for row in train_rows]
    assert all(loss == loss for loss in losses)  # no NaN
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3, losses
