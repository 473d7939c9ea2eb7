"""Notebooks run headless (papermill), leave executed copies and HTML; the sweep, the index, the CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pandas as pd
import papermill
import pytest
import yaml

from helpers.core import paths, run_folders
from helpers.core.locks import LOCK_FILE
from helpers.core.parameters import STAGES, ParameterError
from helpers.core.paths import DEMO_CONFIG
from helpers.data.prepared_folder import read_prepared
from helpers.evaluation.tables import MAX_TABLE_COLUMNS
from helpers.workflow.index import headline_table, write_index
from helpers.workflow.notebook_runner import PIPELINE_RUN_ENV, run_notebook
from helpers.workflow.parameter_files import stage_parameters
from helpers.workflow.pipeline import run_pipeline
from helpers.workflow.slurm import write_sbatch
from helpers.workflow.sweep import sweep
from tests.lab import save_as_lab_does
from tests.test_reports import SCRIPT_FROM_A_HOST, widest_table

NOTEBOOKS = [paths.NOTEBOOKS_DIR / f"{stage}.ipynb" for stage in STAGES]
EMBEDDED_PNG = 'src="data:image/png;base64,'  # a figure in an output cell (the template has its own PNG)
MIN_FIGURES = {"01_explore": 3, "02_prepare": 1, "03_train": 1, "04_evaluate": 1, "05_visualize": 8}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_and_paired(notebook: Path):
    nb = nbformat.read(notebook, as_version=4)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code_cells), "committed with outputs"
    assert [c for c in code_cells if "parameters" in c.metadata.get("tags", [])], "no papermill parameters cell"
    assert nb.metadata["kernelspec"]["name"] == paths.KERNEL_NAME
    twin = jupytext.read(notebook.with_suffix(".py"))
    assert [c.source for c in twin.cells] == [c.source for c in nb.cells], (
        "the .py twin and the .ipynb differ: run make notebooks"
    )


def test_notebooks_import_helpers_and_hold_no_logic():
    for notebook in NOTEBOOKS:
        code = "\n".join(c.source for c in jupytext.read(notebook.with_suffix(".py")).cells if c.cell_type == "code")
        assert "from helpers" in code
        assert not re.search(r"^\s*def |^\s*class |subprocess|os\.walk|glob\(|open\(", code, re.M), notebook.name


def _assert_report(report, html_min_figures: int = 1):
    assert report.ok, report.error
    assert report.notebook.exists() and report.html.exists()
    executed = nbformat.read(report.notebook, as_version=4)
    assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")
    assert report.html.read_text().count(EMBEDDED_PNG) >= html_min_figures


@pytest.mark.slow
def test_explore_and_prepare_run_under_papermill(demo_raw_dir, tmp_path):
    outputs = tmp_path / "outputs"
    explore = run_notebook(
        "01_explore",
        {"raw_root": str(demo_raw_dir), "outputs_dir": str(outputs), "max_images": 50, "workers": 1},
        outputs / "reports",
    )
    _assert_report(explore, html_min_figures=MIN_FIGURES["01_explore"])
    stats = json.loads((outputs / "explore" / "explore_stats.json").read_text())
    assert stats["images_scanned"] == 50

    prepare = run_notebook(
        "02_prepare",
        {
            "raw_root": str(demo_raw_dir),
            "prepared_root": str(tmp_path / "prepared" / "mine"),
            "img_size": 32,
            "workers": 1,
        },
        outputs / "reports",
    )
    _assert_report(prepare)
    written = read_prepared(tmp_path / "prepared" / "mine")
    assert (written.img_size, written.split_mode) == (32, "patient")  # the default split mode


def test_failing_notebook_still_leaves_its_report(tmp_path):
    (tmp_path / "nothing-here").mkdir()  # a folder without the Kaggle layout: the notebook's own check fails
    report = run_notebook(
        "01_explore", {"raw_root": str(tmp_path / "nothing-here"), "outputs_dir": str(tmp_path)}, tmp_path / "reports"
    )
    assert not report.ok and "nothing-here" in report.error
    assert report.notebook.exists() and "nothing-here" in report.html.read_text()


@pytest.mark.slow
def test_sweep_goes_on_after_a_failed_run(demo_prepared, tmp_path, monkeypatch):
    """The first run fails inside its notebook (given a fold that 02 did not write); the next lr still trains
    and gets its report."""
    from helpers.workflow import sweep as sweep_module

    real_run = sweep_module.run_notebook

    def first_fails(stage, parameters, output_dir, **kwargs):
        return real_run(
            stage, {**parameters, "fold": 7} if parameters["lr"] == 0.001 else parameters, output_dir, **kwargs
        )

    monkeypatch.setattr(sweep_module, "run_notebook", first_fails)
    parameters = {
        "config": DEMO_CONFIG,
        "prepared_root": str(demo_prepared.out_dir),
        "img_size": 64,
        "max_iters": 6,
        "val_interval": 6,
    }
    table = sweep([0.001, 0.003], parameters, tmp_path)
    assert list(table["ok"]) == [False, True]
    assert "fold7_train.txt" in table.loc[0, "error"]
    good = run_folders.run_dir(DEMO_CONFIG, 0.003, tmp_path)
    for name in (
        "03_train.ipynb",
        "03_train.html",
        run_folders.MANIFEST_FILE,
        run_folders.METRICS_FILE,
        run_folders.CONFIG_FILE,
    ):
        assert (good / name).exists(), name
    assert run_folders.read_manifest(good)["lr"] == 0.003
    assert list(good.glob("best_mDice_iter_*.pth"))
    assert (run_folders.run_dir(DEMO_CONFIG, 0.001, tmp_path) / "03_train.html").exists()


def test_sweep_checks_every_run_before_the_first_starts(tmp_path, monkeypatch):
    from helpers.workflow import sweep as sweep_module

    monkeypatch.setattr(sweep_module, "run_notebook", lambda *args, **kwargs: pytest.fail("a run started"))
    with pytest.raises(ParameterError, match=r"03_train parameter lr = -1\.0: allowed: a learning rate"):
        sweep([0.003, -1.0], {"config": DEMO_CONFIG}, tmp_path)
    assert not list(tmp_path.iterdir())


def test_sbatch_script_has_one_job_per_lr(tmp_path):
    script = write_sbatch(
        [0.01, 0.001, 0.0001], {"config": DEMO_CONFIG, "max_iters": 100}, tmp_path / "sweep.sbatch", gpus=2
    )
    text = script.read_text()
    assert "#SBATCH --array=0-2" in text and "#SBATCH --gres=gpu:2" in text
    assert "LRS=(0.01 0.001 0.0001)" in text and "-p max_iters=100" in text and "-p gpus=2" in text
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_cli_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "helpers", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("demo", "pipeline", "sweep", "predict", "demo-data", "download", "index"):
        assert command in out


PROGRESS_TEXT = re.compile(r"\d+%\|")  # tqdm's text bar: "predict test:  40%|####      | 8/20"


def _ran(reports) -> list[str]:
    return sorted(
        {
            r.html.stem if r.html.stem != "03_train" else f"03_train {r.html.parent.name}"
            for r in reports
            if not r.skipped
        }
    )


def _assert_index_agrees_with_its_csvs(outputs: Path) -> None:
    """The index's headline table is the one its linked comparison.csv and paired.csv make."""
    comparison, paired = (pd.read_csv(outputs / "eval" / name) for name in ("comparison.csv", "paired.csv"))
    table = headline_table(comparison, paired)
    assert table.to_html(index=False, border=0, classes="metrics", escape=True) in (outputs / "index.html").read_text()


@pytest.fixture(scope="module")
def demo_pipeline(demo_raw_dir, tmp_path_factory) -> tuple[Path, dict, list]:
    """The whole demo pipeline run once, with test-sized parameters: (outputs folder, overrides, reports). Generate ->
    01 -> 02 -> 03 (two lrs) -> 04 -> 05 -> index.html. The tests below read it in order, the last ones change it."""
    root = tmp_path_factory.mktemp("whole-demo")
    prepared = str(root / "prepared" / "patient-64")  # the demo's split mode
    overrides = {
        "01_explore": {"raw_root": str(demo_raw_dir), "workers": 1},
        "02_prepare": {"raw_root": str(demo_raw_dir), "prepared_root": prepared, "img_size": 64, "workers": 1},
        "03_train": {
            "lrs": [0.003, 0.001],
            "prepared_root": prepared,
            "img_size": 64,
            "max_iters": 30,
            "val_interval": 15,
        },
        "04_evaluate": {"prepared_root": prepared, "n_boot": 50},
    }
    reports = run_pipeline(paths.PIPELINE_PARAMS_DIR / "demo", root / "outputs", overrides=overrides)
    return root / "outputs", overrides, reports


def test_whole_demo_pipeline_produces_the_index(demo_pipeline):
    """Every stage ran and is linked from index.html with its figures, a stage title and no script from another
    host; the headline table, the paired verdicts, and 04's report free of progress, logs and stderr."""
    outputs, _, reports = demo_pipeline
    assert all(r.ok for r in reports)
    index = (outputs / "index.html").read_text()
    linked = re.findall(r'href="([^"]+\.html)"', index)
    for stage in STAGES:
        assert any(Path(link).stem == stage for link in linked), f"{stage} not linked from index.html"
    in_reports = {str(p.relative_to(outputs)) for p in (outputs / "reports").glob("*.html")}
    assert in_reports <= set(linked) and {Path(p).stem for p in in_reports} == set(STAGES) - {"03_train"}  # in runs/
    for link in linked:
        report = (outputs / link).read_text()
        figures = report.count(EMBEDDED_PNG)
        assert figures >= MIN_FIGURES[Path(link).stem], f"{link} embeds {figures} figures"
        assert re.search(rf"<title>{Path(link).stem[:2]} · [^<]+ · [^<]+</title>", report), f"{link}: no stage title"
        assert not SCRIPT_FROM_A_HOST.search(report), f"{link} loads a script from another host"
        # the page's width: at most 10 columns of short cells stay under 1,400 px at 1440x900
        assert widest_table(report) <= MAX_TABLE_COLUMNS, f"{link}: a table of {widest_table(report)} columns"
        assert not re.search(r">\s*-?\d+\.\d{4,}\s*<", report), f"{link}: a number printed with 4 or more decimals"
    assert "seed (reported)" in index and 'href="eval/comparison.csv"' in index and 'href="eval/paired.csv"' in index
    headline = re.search(r"<table.*?</table>", index, re.S).group(0)
    assert 0 < widest_table(headline) <= MAX_TABLE_COLUMNS
    seed_row = re.search(r"<tr>\s*<td>seed \(reported\) lr 0.01</td>.*?</tr>", headline, re.S).group(0)
    assert "<td>76.48</td>" in seed_row and "<td>84.68</td>" in seed_row, seed_row  # mIoU / mDice, as reported
    assert re.search(r'<img src="data:image/png;base64,[^"]+" alt="[^"]+"', index), "no figure with alt text"
    assert "best run (reference)" in index
    comparison = json.loads((outputs / "eval" / "comparison.json").read_text())
    ours = [row for row in comparison if row["config"] == DEMO_CONFIG]
    assert len(ours) == 2 and all(row["split_mode"] == "patient" and row["images_seen"] == 0 for row in ours)
    evaluation = (outputs / "reports" / "04_evaluate.html").read_text()
    assert not PROGRESS_TEXT.search(evaluation) and "Iter(" not in evaluation, "progress or log lines in 04's report"
    assert "No description has been provided" not in evaluation and 'alt="Figure 1 of the section' in evaluation
    assert "paired" in evaluation.lower() and 'data-mime-type="application/vnd.jupyter.stderr"' not in evaluation, (
        "stderr in 04's report"
    )
    _assert_index_agrees_with_its_csvs(outputs)


def test_a_rerun_skips_every_stage_also_once_lab_saved_every_notebook(demo_pipeline, tmp_path, monkeypatch):
    """Every notebook saved with its outputs as JupyterLab does: the pipeline again skips every stage, and its
    comparison stays byte for byte."""
    outputs, overrides, reports = demo_pipeline
    csv_before = (outputs / "eval" / "comparison.csv").read_bytes()
    shutil.copytree(paths.NOTEBOOKS_DIR, tmp_path / "notebooks")
    for stage in STAGES:
        save_as_lab_does(tmp_path / "notebooks" / f"{stage}.ipynb")
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", tmp_path / "notebooks")
    again = run_pipeline(paths.PIPELINE_PARAMS_DIR / "demo", outputs, overrides=overrides)
    assert all(r.ok and r.skipped for r in again) and len(again) == len(reports), _ran(again)
    assert (outputs / "eval" / "comparison.csv").read_bytes() == csv_before


def test_04_by_hand_keeps_its_record_and_the_index_true_and_the_pipeline_redoes_04_and_05_only(
    demo_pipeline, tmp_path, monkeypatch
):
    """04 run by hand (papermill from a shell, as in Lab) with another n_boot: its record, CSVs and the index agree;
    then the pipeline (its YAML's n_boot: a changed 04 parameter) redoes 04 and 05 only, and its numbers return."""
    outputs, overrides, _ = demo_pipeline
    csv_before = (outputs / "eval" / "comparison.csv").read_bytes()
    by_hand = {**overrides["04_evaluate"], "outputs_dir": str(outputs), "n_boot": 40}
    monkeypatch.delenv(PIPELINE_RUN_ENV, raising=False)
    notebook = str(paths.NOTEBOOKS_DIR / "04_evaluate.ipynb")
    papermill.execute_notebook(notebook, str(tmp_path / "by_hand.ipynb"), parameters=by_hand, cwd=str(paths.REPO_ROOT))
    record = json.loads((outputs / "records" / "04_evaluate.json").read_text())
    assert record["inputs"]["parameters"]["n_boot"] == 40 and not (outputs / "reports" / "04_evaluate.html").exists()
    assert (outputs / "eval" / "comparison.csv").read_bytes() != csv_before
    _assert_index_agrees_with_its_csvs(outputs)
    assert _ran(run_pipeline(paths.PIPELINE_PARAMS_DIR / "demo", outputs, overrides=overrides)) == [
        "04_evaluate",
        "05_visualize",
    ], "after 04 by hand, the pipeline redoes 04 (its parameters) and 05 (its input) only"
    assert json.loads((outputs / "records" / "04_evaluate.json").read_text())["inputs"]["parameters"]["n_boot"] == 50
    assert (outputs / "eval" / "comparison.csv").read_bytes() == csv_before, "the pipeline's parameters, its numbers"
    _assert_index_agrees_with_its_csvs(outputs)


def test_force_03_retrains_every_run_from_an_empty_folder_and_then_04_is_due(demo_pipeline, tmp_path, monkeypatch):
    """--force 03_train on a copy of the demo's outputs: each lr's notebook runs again from an emptied run folder
    (not resumed), and the next pipeline run evaluates again. The notebooks are spies: the behaviour under test is
    the pipeline's, and the demo above already trained and evaluated for real."""
    from helpers.workflow import pipeline as pipeline_module
    from helpers.workflow import sweep as sweep_module
    from helpers.workflow.notebook_runner import Report

    source, overrides, _ = demo_pipeline
    outputs = Path(shutil.copytree(source, tmp_path / "outputs"))
    started = []

    def spy(stage, parameters, output_dir, **kwargs):
        folder = Path(output_dir)
        left = sorted(p.name for p in folder.iterdir() if p.name != LOCK_FILE) if stage == "03_train" else []
        started.append((stage, parameters.get("lr"), parameters.get("resume"), left))
        return Report(notebook=folder / f"{stage}.ipynb", html=folder / f"{stage}.html", ok=True)

    monkeypatch.setattr(sweep_module, "run_notebook", spy)
    monkeypatch.setattr(pipeline_module, "run_notebook", spy)
    forced = run_pipeline(
        paths.PIPELINE_PARAMS_DIR / "demo", outputs, stages=("03_train",), overrides=overrides, force="03_train"
    )
    assert _ran(forced) == ["03_train lr0.001", "03_train lr0.003"]
    assert sorted(started) == [("03_train", lr, False, [run_folders.RECORD_FILE]) for lr in (0.001, 0.003)]
    started.clear()
    run_pipeline(paths.PIPELINE_PARAMS_DIR / "demo", outputs, stages=("04_evaluate",), overrides=overrides)
    assert [stage for stage, *_ in started] == ["04_evaluate"], "a retrained run is evaluated again"


def test_index_without_evaluation_says_so(tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "01_explore.html").write_text("<html></html>")
    text = write_index(tmp_path).read_text()
    assert 'href="reports/01_explore.html"' in text and "No evaluation yet" in text


@pytest.mark.parametrize(
    "profile", [paths.PIPELINE_PARAMS_DIR, paths.PIPELINE_PARAMS_DIR / "demo"], ids=["full", "demo"]
)
def test_each_profile_names_its_data_folders_once(profile):
    """shared.yaml names raw_root and prepared_root; each stage gets those its notebook declares, and no
    stage file repeats them."""
    shared = yaml.safe_load((profile / "shared.yaml").read_text())
    assert set(shared) == {"raw_root", "prepared_root"}
    for stage in STAGES:
        own = yaml.safe_load((profile / f"{stage}.yaml").read_text()) or {}
        assert not set(own) & set(shared), f"{profile / stage}.yaml repeats {set(own) & set(shared)}"
    given = {
        stage: {k for k in ("raw_root", "prepared_root") if k in stage_parameters(stage, profile)} for stage in STAGES
    }
    assert given == {
        "01_explore": {"raw_root"},
        "02_prepare": {"raw_root", "prepared_root"},
        "03_train": {"prepared_root"},
        "04_evaluate": {"prepared_root"},
        "05_visualize": set(),
    }
    assert stage_parameters("03_train", profile)["prepared_root"] == shared["prepared_root"]


def test_parameter_names_mean_one_thing_in_every_notebook():
    """raw_root: raw data (01, 02); prepared_root: a prepared folder (02, 03, 04); stages: Kaggle stages (01);
    split: train / val / test (04, 05); no notebook keeps the old data_root / splits / output_root."""
    import papermill

    declared = {nb.stem: set(papermill.inspect_notebook(str(nb))) for nb in NOTEBOOKS}
    for names in declared.values():
        assert not names & {"data_root", "splits", "output_root"}
    assert {nb for nb, names in declared.items() if "raw_root" in names} == {"01_explore", "02_prepare"}
    assert {nb for nb, names in declared.items() if "prepared_root" in names} == {
        "02_prepare",
        "03_train",
        "04_evaluate",
    }
    assert {nb for nb, names in declared.items() if "stages" in names} == {"01_explore"}
    assert {nb for nb, names in declared.items() if "split" in names} == {"04_evaluate", "05_visualize"}
