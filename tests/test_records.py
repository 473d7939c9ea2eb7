"""Re-runs skip what is done: step records, the sweep's skip / resume after Ctrl-C, the SLURM job's command;
the paired comparison of runs against a direct computation, and the smallest difference it detects."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import helpers
from helpers.core import paths, run_folders
from helpers.core.metrics import paired_bootstrap_difference, per_image_dice
from helpers.core.parameters import STAGES
from helpers.core.paths import DEMO_CONFIG
from helpers.evaluation.paired import BETTER, REFERENCE, SAME, WORSE, detectable_sentence, paired_comparison, verdict
from helpers.evaluation.tables import MAX_TABLE_COLUMNS
from helpers.workflow import stage_records
from helpers.workflow.index import headline_table
from helpers.workflow.slurm import write_sbatch
from tests.conftest import random_pixel_counts
from tests.lab import save_as_lab_does


def test_a_record_matches_only_the_same_inputs_and_complete_outputs(tmp_path):
    path, output = tmp_path / "record.json", tmp_path / "out.txt"
    inputs = {"parameters": {"n_boot": 50}, "code": "abc"}
    assert stage_records.status(path, inputs, [output]).reason == "no record"
    stage_records.write_record(path, inputs, stage_records.STARTED)
    started = stage_records.status(path, inputs, [output])
    assert (started.done, started.resumable) == (False, True)
    output.write_text("x")
    stage_records.write_record(path, inputs, stage_records.FINISHED, [output])
    assert stage_records.status(
        path, {"code": "abc", "parameters": {"n_boot": 50}}, [output]
    ).done  # key order is no change
    changed = stage_records.status(path, {**inputs, "parameters": {"n_boot": 60}}, [output])
    assert not changed.done and changed.reason == "changed: parameters"
    output.unlink()
    assert stage_records.status(path, inputs, [output]).reason.startswith("output missing")
    first = stage_records.result_id(path)
    stage_records.write_record(path, inputs, stage_records.FINISHED, [output])
    assert stage_records.result_id(path) != first, "a step that ran again gets a new result id (its dependants rerun)"


def test_a_notebook_s_record_is_its_code_not_its_outputs(tmp_path, monkeypatch):
    import shutil

    import nbformat

    shutil.copytree(paths.NOTEBOOKS_DIR, tmp_path / "notebooks")
    before = {stage: stage_records.notebook_hash(stage) for stage in STAGES}
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", tmp_path / "notebooks")
    assert {stage: stage_records.notebook_hash(stage) for stage in STAGES} == before
    for stage in STAGES:
        save_as_lab_does(tmp_path / "notebooks" / f"{stage}.ipynb")
    assert {stage: stage_records.notebook_hash(stage) for stage in STAGES} == before, "saving in Lab changed a record"
    notebook = tmp_path / "notebooks" / "04_evaluate.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    next(c for c in nb.cells if c.cell_type == "markdown").source += "\nA sentence more."
    nbformat.write(nb, notebook)
    assert stage_records.notebook_hash("04_evaluate") == before["04_evaluate"]
    next(
        c for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])
    ).source += "\nprint('edited')"
    nbformat.write(nb, notebook)
    assert stage_records.notebook_hash("04_evaluate") != before["04_evaluate"], "an edited code cell is a change"
    assert stage_records.notebook_hash("no_such_stage") is None


def test_the_code_version_is_the_content_of_helpers(tmp_path):
    package = Path(helpers.__file__).parent
    assert stage_records.code_hash() == stage_records._tree_hash(
        [p for p in package.rglob("*.py") if "__pycache__" not in p.parts], package
    )
    assert stage_records.config_hash(DEMO_CONFIG) != stage_records.config_hash(paths.SEED_CONFIG)


# --- the paired comparison --------------------------------------------------------------------------------


def _direct_paired_interval(a, b, patients, n_boot, seed):
    """The paired patient bootstrap written out: per resample, the drawn patients' images (a patient drawn twice
    counts twice) and the mean of a - b over them; the same draws as the function's generator makes."""
    unique = np.unique(patients)
    draws = np.random.default_rng(seed).integers(0, len(unique), (n_boot, len(unique)))
    means = []
    for draw in draws:
        images = [i for p in draw for i in range(len(patients)) if patients[i] == unique[p]]
        means.append(np.mean([a[i] - b[i] for i in images]))
    return float(np.mean(np.subtract(a, b))), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def test_the_paired_interval_matches_a_direct_computation():
    a = [0.9, 0.1, 1.0, 0.5, 0.7, 0.0, 1.0]
    b = [0.8, 0.3, 1.0, 0.2, 0.6, 0.1, 0.4]
    patients = np.array(["p1", "p1", "p2", "p3", "p3", "p3", "p4"])
    got = paired_bootstrap_difference(np.array(a), np.array(b), patients, n_boot=300, seed=3)
    assert got == pytest.approx(_direct_paired_interval(a, b, patients, 300, 3), abs=1e-12)


def test_one_difference_for_every_patient_is_an_interval_of_that_difference():
    a = np.array([0.5, 0.7, 0.2, 0.9])
    mean, low, high = paired_bootstrap_difference(a + 0.1, a, np.array(["x", "x", "y", "z"]), n_boot=200)
    assert (mean, low, high) == pytest.approx((0.1, 0.1, 0.1))


def _result(name: str, dice, patients, tmp_path: Path) -> SimpleNamespace:
    run = tmp_path / "runs" / DEMO_CONFIG / name
    return SimpleNamespace(
        run_dir=run,
        split="test",
        data_root=tmp_path / "prepared",
        out_dir=tmp_path / "eval" / name,
        per_image=pd.DataFrame({"name": [f"img{i}" for i in range(len(dice))], "patient": patients, "dice": dice}),
    )


def test_two_identical_runs_differ_by_an_interval_around_zero(tmp_path):
    rng = np.random.default_rng(0)
    dice = rng.random(40)
    patients = [f"p{i // 2}" for i in range(40)]
    table = paired_comparison(
        [_result("lr0.003", dice, patients, tmp_path), _result("lr0.001", dice.copy(), patients, tmp_path)], n_boot=200
    )
    assert set(table["verdict"]) == {REFERENCE, SAME}
    other = table[table["verdict"] == SAME].iloc[0]
    assert other["diff_lo"] <= 0 <= other["diff_hi"] and other["diff"] == 0


def test_the_verdict_says_better_or_worse_only_when_the_interval_excludes_zero(tmp_path):
    rng = np.random.default_rng(1)
    best = rng.uniform(0.5, 1.0, 60)
    patients = [f"p{i // 3}" for i in range(60)]
    table = paired_comparison(
        [_result("lr0.01", best - 0.2, patients, tmp_path), _result("lr0.003", best, patients, tmp_path)], n_boot=300
    )
    worse = table.set_index("lr").loc[0.01]
    assert worse["verdict"] == WORSE and worse["diff"] == pytest.approx(-20) and worse["diff_hi"] < 0
    assert worse["reference"] == f"{DEMO_CONFIG} lr 0.003"
    assert (verdict(0.1, 0.3), verdict(-0.3, -0.1), verdict(-0.1, 0.1)) == (BETTER, WORSE, SAME)


def _two_runs_on_a_test_split(n_images: int, tmp_path: Path) -> list[SimpleNamespace]:
    """Two runs' per-image Dice on a synthetic test split of ``n_images`` (two images a patient): pixel counts as
    conftest's ``random_pixel_counts``, the second run finding up to 9 more lesion pixels on each image."""
    rng = np.random.default_rng(n_images)
    counts = random_pixel_counts(rng, n_images)
    truth = counts[:, 0] + counts[:, 2]
    found = np.minimum(truth, counts[:, 0] + rng.integers(0, 10, n_images))
    other = np.stack([found, counts[:, 1], truth - found, counts[:, 3]], axis=1)
    patients = [f"p{i // 2}" for i in range(n_images)]
    return [
        _result("lr0.003", per_image_dice(counts), patients, tmp_path),
        _result("lr0.001", per_image_dice(other), patients, tmp_path),
    ]


def test_the_detectable_difference_is_the_intervals_larger_reach_and_shrinks_as_the_split_grows(tmp_path):
    detectable = {}
    for n_images in (200, 1800):
        table = paired_comparison(_two_runs_on_a_test_split(n_images, tmp_path / str(n_images)), n_boot=2000)
        best, other = table[table["verdict"] == REFERENCE].iloc[0], table[table["verdict"] != REFERENCE].iloc[0]
        assert np.isnan(best["detectable"])
        assert other["detectable"] == pytest.approx(
            max(other["diff"] - other["diff_lo"], other["diff_hi"] - other["diff"])
        )
        assert (other["verdict"] == SAME) == (abs(other["diff"]) <= other["detectable"])
        detectable[n_images] = other["detectable"]
        sentence = detectable_sentence(table)
        assert f"On test ({n_images} images, {n_images // 2} patients)" in sentence
        assert f"{other['detectable']:.2f} points or more" in sentence
    # nine times the patients: about a third of the detectable difference (one over the square root)
    assert 0 < detectable[1800] < 0.5 * detectable[200], detectable
    assert detectable[1800] == pytest.approx(detectable[200] / 3, rel=0.35)


def test_the_headline_reads_no_detectable_difference_as_less_than_the_detectable_one(tmp_path):
    rng = np.random.default_rng(2)
    dice = rng.random(40)
    patients = [f"p{i // 2}" for i in range(40)]
    runs = [
        _result("lr0.003", dice, patients, tmp_path),
        _result("lr0.001", np.clip(dice + rng.normal(0, 0.1, 40), 0, 1), patients, tmp_path),
    ]
    paired = paired_comparison(runs, n_boot=500)
    other = paired[paired["verdict"] != REFERENCE].iloc[0]
    assert other["verdict"] == SAME
    comparison = pd.DataFrame(
        {"config": [DEMO_CONFIG] * 2, "lr": [0.003, 0.001], "split": ["test"] * 2, "images": [40, 40]}
    ).assign(fg_dice=50.0, image_dice=60.0, pp_image_dice=61.0)
    run = f"{DEMO_CONFIG} lr {other['lr']:g}"
    cell = headline_table(comparison, paired).set_index("run").loc[run, "vs best run"]
    assert cell.startswith(f"{SAME}: less than {other['detectable']:.2f} (")
    old = headline_table(comparison, paired.drop(columns="detectable"))  # a paired.csv from before the column
    assert old.set_index("run").loc[run, "vs best run"].startswith(f"{SAME} (")


def test_runs_scored_on_different_images_are_not_paired(tmp_path):
    one = _result("lr0.003", [0.5, 0.6], ["a", "b"], tmp_path)
    other = _result("lr0.001", [0.5, 0.6], ["a", "b"], tmp_path)
    other.per_image["name"] = ["x", "y"]
    with pytest.raises(ValueError, match="different images"):
        paired_comparison([one, other], n_boot=10)


# --- the sweep: skip, resume after Ctrl-C, force --------------------------------------------------------

MAX_ITERS, INTERVAL = 12, 4


def _sweep_command(prepared: Path, outputs: Path, lrs: list[float], *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "helpers",
        "sweep",
        "--no-yaml",
        "--lrs",
        *map(str, lrs),
        "--config",
        DEMO_CONFIG,
        "--outputs",
        str(outputs),
        "-p",
        f"prepared_root={prepared}",
        "-p",
        "img_size=64",
        "-p",
        "batch_size=4",
        "-p",
        f"max_iters={MAX_ITERS}",
        "-p",
        f"val_interval={INTERVAL}",
        "-p",
        "workers=0",
        *extra,
    ]


def _train_steps(session_scalars: Path) -> list[int]:
    return [row["step"] for row in map(json.loads, session_scalars.read_text().splitlines()) if "mIoU" not in row]


@pytest.mark.slow
def test_a_sweep_stopped_with_ctrl_c_picks_up_where_it_stopped(demo_prepared, tmp_path):
    """Ctrl-C during the second run: one line, exit 130; the re-run skips the first, resumes the second from its
    last checkpoint (the iteration count goes on) and trains the third."""
    outputs, lrs = tmp_path / "outputs", [0.003, 0.002, 0.001]
    first, second, third = (run_folders.run_dir(DEMO_CONFIG, lr, outputs) for lr in lrs)
    command = _sweep_command(demo_prepared.out_dir, outputs, lrs)
    process = subprocess.Popen(
        command, cwd=paths.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )  # its own process group: the terminal's Ctrl-C reaches all of it
    deadline = time.monotonic() + 600
    while not (second / run_folders.LAST_CHECKPOINT_FILE).exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert err.rstrip().splitlines()[-1].startswith("Interrupted."), err[-2000:]
    assert (
        (first / run_folders.METRICS_FILE).exists()
        and not (second / run_folders.METRICS_FILE).exists()
        and not third.exists()
    )
    assert not list(second.glob(".03_train-*")), "a half-written executed notebook was left behind"
    checkpoint_iter = int(Path((second / run_folders.LAST_CHECKPOINT_FILE).read_text().strip()).stem.split("_")[-1])
    first_metrics = (first / run_folders.METRICS_FILE).read_bytes()

    again = subprocess.run(command, cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "lr 0.003: already trained, skipped" in again.stdout
    assert "lr 0.002: resuming the interrupted run" in again.stdout
    assert "lr 0.001: training" in again.stdout
    assert (first / run_folders.METRICS_FILE).read_bytes() == first_metrics, "the finished run was touched"
    sessions = sorted(second.glob(run_folders.SCALARS_GLOB))
    assert len(sessions) == 2
    resumed = _train_steps(sessions[-1])
    assert resumed and min(resumed) > checkpoint_iter and max(resumed) == MAX_ITERS
    assert (
        run_folders.read_metrics(second)["iterations"] == MAX_ITERS
        and run_folders.read_metrics(third)["iterations"] == MAX_ITERS
    )

    forced = subprocess.run(
        [*_sweep_command(demo_prepared.out_dir, outputs, [0.003]), "--force"],
        cwd=paths.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert forced.returncode == 0 and "lr 0.003: training (--force)" in forced.stdout, forced.stderr[-3000:]
    assert len(list(first.glob(run_folders.SCALARS_GLOB))) == 1, "a forced run starts from scratch in an emptied folder"


def test_the_slurm_job_is_the_sweep_s_own_command(tmp_path):
    """Each array job runs `helpers sweep` for its lr (and fold), so a requeued job skips or resumes."""
    script = write_sbatch(
        [0.01, 0.001],
        {"config": DEMO_CONFIG, "max_iters": 100, "prepared_root": "data/x y"},
        tmp_path / "sweep.sbatch",
        gpus=1,
        folds=3,
        outputs=tmp_path / "out",
    )
    text = script.read_text()
    assert "#SBATCH --array=0-5" in text and "#SBATCH --requeue" in text
    assert '-m helpers sweep --no-yaml --lrs "$LR" --folds 3 --fold "$FOLD"' in text
    assert "-p max_iters=100" in text and "-p 'prepared_root=\"data/x y\"'" in text and "-p gpus=1" in text
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_the_index_has_a_headline_table_of_at_most_10_columns_a_figure_and_reports_by_stage(tmp_path):
    from helpers.workflow.index import write_index

    nan = float("nan")
    comparison = pd.DataFrame(
        [
            {
                "config": DEMO_CONFIG,
                "lr": 0.003,
                "split": "test",
                "images": 20,
                "mIoU": 60.0,
                "mDice": 70.0,
                "fg_dice": 41.0,
                "image_dice": 80.0,
                "image_dice_lo": 75.0,
                "image_dice_hi": 85.0,
                "det_auc": 0.7,
                "pp_image_dice": 82.0,
            },
            {
                "config": DEMO_CONFIG,
                "lr": 0.001,
                "split": "test",
                "images": 20,
                "mIoU": 55.0,
                "mDice": 65.0,
                "fg_dice": 30.0,
                "image_dice": 70.0,
                "image_dice_lo": 64.0,
                "image_dice_hi": 77.0,
                "det_auc": 0.6,
                "pp_image_dice": 71.0,
            },
            {
                "config": "all-empty baseline",
                "lr": nan,
                "split": "test",
                "images": 20,
                "mIoU": 49.0,
                "mDice": 50.0,
                "fg_dice": 0.0,
                "image_dice": 65.0,
                "image_dice_lo": nan,
                "image_dice_hi": nan,
                "det_auc": nan,
                "pp_image_dice": 65.0,
            },
            {
                "config": "seed (reported)",
                "lr": 0.01,
                "split": "seed's val (random 80/20)",
                "mIoU": 76.48,
                "mDice": 84.68,
            },
        ]
    )
    paired = pd.DataFrame(
        [
            {
                "config": DEMO_CONFIG,
                "lr": 0.003,
                "split": "test",
                "reference": f"{DEMO_CONFIG} lr 0.003",
                "images": 20,
                "patients": 12,
                "diff": 0.0,
                "diff_lo": 0.0,
                "diff_hi": 0.0,
                "detectable": nan,
                "verdict": REFERENCE,
            },
            {
                "config": DEMO_CONFIG,
                "lr": 0.001,
                "split": "test",
                "reference": f"{DEMO_CONFIG} lr 0.003",
                "images": 20,
                "patients": 12,
                "diff": -10.0,
                "diff_lo": -15.0,
                "diff_hi": -4.0,
                "detectable": 6.0,
                "verdict": WORSE,
            },
        ]
    )
    (tmp_path / "eval").mkdir()
    comparison.to_csv(tmp_path / "eval" / "comparison.csv", index=False)
    paired.to_csv(tmp_path / "eval" / "paired.csv", index=False)
    for report in ("reports/01_explore.html", "reports/04_evaluate.html", f"runs/{DEMO_CONFIG}/lr0.003/03_train.html"):
        (tmp_path / report).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / report).write_text("<html></html>")
    index = write_index(tmp_path).read_text()
    header = index[index.index("<thead>") : index.index("</thead>")]
    assert 0 < header.count("<th>") <= MAX_TABLE_COLUMNS and "<th>mIoU</th>" in header and "<th>mDice</th>" in header
    assert "80.00 [75.00, 85.00]" in index and "worse (-10.00 [-15.00, -4.00]; detects 6.00)" in index
    assert REFERENCE in index
    assert (
        "On test (20 images, 12 patients) the paired comparison detects a difference in per-image Dice of 6.00" in index
    )
    seed_row = re.search(r"<tr>\s*<td>seed \(reported\) lr 0.01</td>.*?</tr>", index, re.S).group(0)
    assert "<td>76.48</td>" in seed_row and "<td>84.68</td>" in seed_row  # what the seed reported, in its columns
    assert 'href="eval/comparison.csv"' in index and 'href="eval/paired.csv"' in index
    assert '<img src="data:image/png;base64,' in index and 'alt="Per-image Dice' in index
    assert index.index("<h3>01_explore</h3>") < index.index("<h3>03_train</h3>") < index.index("<h3>04_evaluate</h3>")
    assert f'href="runs/{DEMO_CONFIG}/lr0.003/03_train.html"' in index
