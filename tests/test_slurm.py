"""The sweep's SLURM array script, submitted for real to a one-node SLURM cluster on this machine (Debian's
slurm-wlm and munge; root). Opt-in: ``make test-slurm`` (PNEUMO_TEST_SLURM=1); ``make test`` skips it.

The cluster is this test's own: a slurm.conf in a temporary folder, slurmctld and slurmd on free ports,
stopped (by their pids) at the end. CPU jobs (``gpus=0``): no GPU is requested."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from helpers.core import run_folders
from helpers.core.paths import DEMO_CONFIG
from helpers.workflow.slurm import write_sbatch

OPT_IN = "PNEUMO_TEST_SLURM"
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo")
MUNGED_PID = Path("/run/munge/munged.pid")  # Debian's munged

pytestmark = pytest.mark.skipif(os.environ.get(OPT_IN) != "1", reason=f"opt-in: make test-slurm ({OPT_IN}=1)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _munge_works() -> bool:
    encoded = subprocess.run(["munge", "-n"], capture_output=True)
    return (
        encoded.returncode == 0
        and subprocess.run(["unmunge"], input=encoded.stdout, capture_output=True).returncode == 0
    )


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A one-node cluster (this host, all its CPUs, one partition); yields the environment to submit with."""
    missing = [name for name in DAEMONS if shutil.which(name) is None]
    if missing:
        pytest.skip(f"not installed: {missing} (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("the test cluster runs its daemons as root")
    started_munged = not _munge_works()
    if started_munged:
        started = subprocess.run(["su", "-s", "/bin/sh", "munge", "-c", "munged"], capture_output=True, text=True)
        if started.returncode != 0 or not _munge_works():
            pytest.fail(f"munged did not start: {started.stderr}")
    root = tmp_path_factory.mktemp("slurm")
    host = socket.gethostname()
    for folder in ("state", "spool", "log"):
        (root / folder).mkdir()
    conf = root / "slurm.conf"
    conf.write_text(f"""ClusterName=pneumotest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
""")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    subprocess.run(["slurmctld"], env=env, check=True)
    subprocess.run(["slurmd"], env=env, check=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout.strip()
            if state == "idle":
                break
            time.sleep(1)
        else:
            pytest.fail(f"the node did not come up (sinfo: {state!r}); see {root / 'log'}")
        yield env
    finally:
        for daemon in ("slurmd", "slurmctld"):
            pid_file = root / f"{daemon}.pid"
            if pid_file.exists():
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
        if started_munged and MUNGED_PID.exists():
            os.kill(int(MUNGED_PID.read_text()), signal.SIGTERM)


def test_the_sweep_runs_as_a_slurm_array(slurm_cluster, demo_prepared, tmp_path):
    outputs = tmp_path / "outputs"
    lrs = [0.003, 0.001]
    parameters = {
        "config": DEMO_CONFIG,
        "prepared_root": str(demo_prepared.out_dir),
        "img_size": 64,
        "batch_size": 4,
        "max_iters": 4,
        "val_interval": 4,
        "workers": 0,
    }
    script = write_sbatch(lrs, parameters, tmp_path / "sweep.sbatch", gpus=0, cpus_per_gpu=1, hours=1, outputs=outputs)
    (outputs / "runs").mkdir(parents=True)
    done = subprocess.run(
        ["sbatch", "--wait", str(script)], env=slurm_cluster, capture_output=True, text=True, timeout=1800
    )
    logs = sorted((outputs / "runs").glob("slurm-*.out"))
    assert done.returncode == 0, done.stderr + "".join(p.read_text()[-2000:] for p in logs)
    assert len(logs) == len(lrs)
    for lr in lrs:
        run = run_folders.run_dir(DEMO_CONFIG, lr, outputs)
        for name in (
            "03_train.ipynb",
            "03_train.html",
            run_folders.MANIFEST_FILE,
            run_folders.METRICS_FILE,
            run_folders.CONFIG_FILE,
            "iter_4.pth",
        ):
            assert (run / name).is_file(), f"{run / name} is missing"
        assert Path((run / run_folders.LAST_CHECKPOINT_FILE).read_text().strip()) == run / "iter_4.pth"
