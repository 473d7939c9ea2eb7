"""State checked before it is trusted: a truncated manifest, metrics.json, eval.json or record is never taken for a
finished step, nothing is emptied over it, and the error names the file and the stage that re-makes it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.core import paths, run_folders
from helpers.core.fileio import CorruptFileError, check_npy, read_json
from helpers.core.paths import DEMO_CONFIG
from helpers.data.prepared_folder import read_prepared
from helpers.workflow import stage_records


def _truncate(path: Path, keep: int = 300) -> None:
    """``head -c keep`` of the file over itself, as the fault probe did."""
    path.write_bytes(path.read_bytes()[:keep])


def test_read_json_names_the_file_the_fault_and_the_remedy(tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{"a": 1, "b": [1, 2')
    with pytest.raises(
        CorruptFileError, match=rf"{re.escape(str(path))}: not valid JSON \(.* line 1 column .*truncated.*; re-run X"
    ):
        read_json(path, "re-run X")
    path.write_text("")
    with pytest.raises(CorruptFileError, match="empty"):
        read_json(path, "re-run X")
    path.write_text("[1, 2]")
    with pytest.raises(CorruptFileError, match="holds list where an object belongs"):
        read_json(path, "re-run X")
    assert read_json(path, "", expect=list) == [1, 2]
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(CorruptFileError, match="not UTF-8"):
        read_json(path, "")


def test_a_truncated_npy_is_refused_from_its_header(tmp_path):
    path = tmp_path / "probs.npy"
    np.save(path, np.zeros((3, 8, 8), np.float16))
    assert check_npy(path) == ((3, 8, 8), np.dtype(np.float16))
    _truncate(path, path.stat().st_size - 10)
    with pytest.raises(CorruptFileError, match=r"probs.npy: .* bytes where its header \(\(3, 8, 8\), float16\)"):
        check_npy(path)
    _truncate(path, 20)
    with pytest.raises(CorruptFileError, match="not a .npy array"):
        check_npy(path)


@pytest.fixture
def prepared_copy(demo_prepared, tmp_path) -> Path:
    """A copy of the demo's prepared folder (the session's is read-only for tests), named as 02 names it."""
    copy = tmp_path / "prepared" / "official-64"
    shutil.copytree(demo_prepared.out_dir, copy)
    return copy


def test_a_corrupt_prepared_manifest_names_itself_and_02(prepared_copy):
    manifest = prepared_copy / "manifest.json"
    _truncate(manifest)
    with pytest.raises(
        CorruptFileError, match=rf"{re.escape(str(manifest))}: not valid JSON .*re-run 02_prepare.*img_size 64"
    ):
        read_prepared(prepared_copy)
    # 02's record does not count it as done: the stage reruns
    record = prepared_copy.parent / "02_prepare.json"
    stage_records.write_record(record, {"x": 1}, stage_records.FINISHED, [manifest])
    state = stage_records.status(record, {"x": 1}, [manifest])
    assert not state.done and str(manifest) in state.reason and "output unreadable" in state.reason


def test_02_rerun_over_a_corrupt_manifest_writes_the_same_manifest(demo_raw_dir, prepared_copy):
    from helpers.data.prepare import prepare_dataset

    manifest = prepared_copy / "manifest.json"
    before = manifest.read_bytes()
    _truncate(manifest)
    prepare_dataset(demo_raw_dir, out_dir=prepared_copy, img_size=64, split_mode="official", workers=1)
    assert manifest.read_bytes() == before  # so the runs trained on it stay up to date (same hash)


@pytest.fixture
def swept_run(trained_demo_run, prepared_copy, tmp_path, monkeypatch):
    """A copy of the trained demo run where the sweep puts it, with the record the sweep would have written:
    (sweep parameters, outputs, run folder). Any run that starts fails the test."""
    from helpers.workflow import sweep as sweep_module

    outputs = tmp_path / "outputs"
    work_dir = run_folders.run_dir(DEMO_CONFIG, 0.003, outputs)
    shutil.copytree(trained_demo_run.work_dir, work_dir)
    (work_dir / "03_train.html").write_text("<html></html>")
    parameters = {
        "config": DEMO_CONFIG,
        "prepared_root": str(prepared_copy),
        "img_size": 64,
        "max_iters": 60,
        "val_interval": 30,
    }
    run_parameters = {**parameters, "lr": 0.003, "work_dir": str(work_dir)}
    expected = [work_dir / run_folders.METRICS_FILE, work_dir / "03_train.html"]
    stage_records.write_record(
        work_dir / run_folders.RECORD_FILE, sweep_module.run_inputs(run_parameters), stage_records.FINISHED, expected
    )
    monkeypatch.setattr(sweep_module, "run_notebook", lambda *args, **kwargs: pytest.fail("a run started"))
    return parameters, outputs, work_dir


def _checkpoints(work_dir: Path) -> list[str]:
    return sorted(p.name for p in work_dir.glob("*.pth"))


def test_the_swept_copy_is_up_to_date(swept_run):
    from helpers.workflow.sweep import sweep

    parameters, outputs, _ = swept_run
    table = sweep([0.003], parameters, outputs)
    assert bool(table.loc[0, "skipped"])


def test_a_corrupt_prepared_manifest_empties_no_run(swept_run, prepared_copy):
    """Case 1: the manifest's hash changed, so the run would retrain; its prepared data is read first."""
    from helpers.workflow.sweep import sweep

    parameters, outputs, work_dir = swept_run
    kept = _checkpoints(work_dir)
    assert kept
    manifest = prepared_copy / "manifest.json"
    _truncate(manifest)
    with pytest.raises(CorruptFileError, match=rf"{re.escape(str(manifest))}: not valid JSON.*re-run 02_prepare"):
        sweep([0.003], parameters, outputs)
    assert _checkpoints(work_dir) == kept and (work_dir / run_folders.METRICS_FILE).is_file()


def test_missing_prepared_data_empties_no_run(swept_run, prepared_copy):
    from helpers.data.prepared_folder import PreparedDataError
    from helpers.workflow.sweep import sweep

    parameters, outputs, work_dir = swept_run
    kept = _checkpoints(work_dir)
    (prepared_copy / "manifest.json").unlink()  # the folder is there (the parameter check looks for it)
    with pytest.raises(PreparedDataError, match="run 02_prepare first"):
        sweep([0.003], parameters, outputs)
    assert _checkpoints(work_dir) == kept


@pytest.mark.parametrize("name", [run_folders.METRICS_FILE, run_folders.RECORD_FILE])
def test_a_truncated_run_file_is_named_and_the_run_kept(swept_run, name):
    """Case 2: a truncated metrics.json (or record) is not "up to date", nor a reason to empty the folder."""
    from helpers.workflow.sweep import sweep

    parameters, outputs, work_dir = swept_run
    kept = _checkpoints(work_dir)
    _truncate(work_dir / name, 40)
    with pytest.raises(
        CorruptFileError, match=rf"{re.escape(str(work_dir / name))}: not valid JSON.*(--force|retrain)"
    ):
        sweep([0.003], parameters, outputs)
    assert _checkpoints(work_dir) == kept


def test_a_truncated_run_metrics_file_is_named_by_its_readers(trained_demo_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_demo_run.work_dir, copy)
    _truncate(copy / run_folders.METRICS_FILE, 50)
    _truncate(copy / run_folders.MANIFEST_FILE, 50)
    with pytest.raises(
        CorruptFileError, match=rf"{re.escape(str(copy / run_folders.METRICS_FILE))}: .*03_train writes it"
    ):
        run_folders.read_metrics(copy)
    with pytest.raises(
        CorruptFileError, match=rf"{re.escape(str(copy / run_folders.MANIFEST_FILE))}: .*03_train writes it"
    ):
        run_folders.read_manifest(copy)


@pytest.fixture
def evaluated_copy(trained_demo_run, tmp_path):
    """A copy of the trained demo run under outputs/runs/ with its test evaluation under outputs/eval/."""
    from helpers.workflow.evaluate_runs import evaluate_run_folders

    outputs = tmp_path / "outputs"
    work_dir = run_folders.run_dir(DEMO_CONFIG, 0.003, outputs)
    shutil.copytree(trained_demo_run.work_dir, work_dir)
    evaluate_run_folders([work_dir], split="test", outputs=outputs, postprocess="none", n_boot=10)
    return outputs, work_dir, run_folders.eval_dir(work_dir, "test", outputs)


@pytest.mark.parametrize("name", [run_folders.EVAL_INFO_FILE, run_folders.EVAL_METRICS_FILE, run_folders.PROBS_FILE])
def test_truncated_evaluation_outputs_are_not_up_to_date(evaluated_copy, name):
    from helpers.workflow.pipeline import stage_outputs, stage_record

    outputs, _, eval_folder = evaluated_copy
    for report in ("04_evaluate.ipynb", "04_evaluate.html"):
        (outputs / "reports").mkdir(exist_ok=True)
        (outputs / "reports" / report).write_text("{}")
    for table in ("comparison.csv", "paired.csv"):
        (outputs / "eval" / table).write_text("a\n1\n")
    expected = stage_outputs("04_evaluate", {"split": "test"}, outputs)
    assert eval_folder / name in expected
    record = stage_record("04_evaluate", outputs)
    stage_records.write_record(record, {"x": 1}, stage_records.FINISHED, expected)
    assert stage_records.status(record, {"x": 1}, expected).done
    _truncate(eval_folder / name, 100)
    state = stage_records.status(record, {"x": 1}, stage_outputs("04_evaluate", {"split": "test"}, outputs))
    assert not state.done and str(eval_folder / name) in state.reason


def test_a_truncated_eval_json_is_named_by_its_readers(evaluated_copy):
    from helpers.evaluation import load_eval
    from helpers.postprocessing import find_tuned_postprocess

    outputs, work_dir, eval_folder = evaluated_copy
    best = run_folders.find_checkpoints(work_dir)[0]
    _truncate(eval_folder / run_folders.EVAL_INFO_FILE, 100)
    pattern = rf"{re.escape(str(eval_folder / run_folders.EVAL_INFO_FILE))}: not valid JSON.*re-run 04_evaluate"
    with pytest.raises(CorruptFileError, match=pattern):
        find_tuned_postprocess(work_dir, best)
    with pytest.raises(CorruptFileError, match=pattern):
        load_eval(eval_folder)
    # predict from the command line: one line naming the file, no traceback
    image = outputs / "x.png"
    import cv2

    cv2.imwrite(str(image), np.zeros((64, 64), np.uint8))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "helpers",
            "predict",
            "--checkpoint",
            str(best),
            "--out-dir",
            str(outputs / "p"),
            str(image),
        ],
        capture_output=True,
        text=True,
        cwd=paths.REPO_ROOT,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert str(eval_folder / run_folders.EVAL_INFO_FILE) in done.stderr.strip().splitlines()[-1]


def test_a_corrupt_stage_record_says_so(tmp_path):
    record = tmp_path / "records" / "04_evaluate.json"
    stage_records.write_record(record, {"x": 1}, stage_records.FINISHED)
    _truncate(record, 30)
    state = stage_records.status(record, {"x": 1})
    assert not state.done and "its record does not read back" in state.reason and str(record) in state.reason
    with pytest.raises(CorruptFileError, match=re.escape(str(record))):
        stage_records.result_id(record)
