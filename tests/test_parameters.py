"""helpers.core.parameters: each notebook's parameters declared once (the cells agree with the dataclasses), YAML
keys and ``-p`` names checked against them, sbatch flags derived from them, and every value checked before
any work, naming the parameter, its value and what is allowed."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.core import paths
from helpers.core.parameters import (
    NOTEBOOK_PARAMETERS,
    STAGES,
    ParameterError,
    TrainParams,
    check_notebook,
    check_parameters,
    declared_names,
    defaults,
)
from helpers.core.paths import DEMO_CONFIG
from helpers.workflow import notebook_runner, parameter_files, pipeline, slurm


def _cell(stage: str) -> dict[str, object]:
    """The notebook's parameters cell (its .py twin, which the .ipynb matches): name -> default value."""
    text = (paths.NOTEBOOKS_DIR / f"{stage}.py").read_text()
    cell = text.split('# %% tags=["parameters"]\n', 1)[1].split("\n# %%", 1)[0]
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in ast.parse(cell).body
        if isinstance(node, ast.Assign)
    }


@pytest.mark.parametrize("stage", list(NOTEBOOK_PARAMETERS))
def test_each_parameters_cell_is_its_dataclass_name_for_name_and_default_for_default(stage):
    cell = _cell(stage)
    assert list(cell) == declared_names(stage)
    assert cell == defaults(stage)


def test_train_params_is_the_parameters_cell_of_03():
    assert NOTEBOOK_PARAMETERS["03_train"] is TrainParams
    assert (
        TrainParams().config == paths.SEED_CONFIG
    )  # None in the cell: the seed's config (03 picks the demo's without data)


@pytest.fixture
def extra_field(monkeypatch):
    """TrainParams with one more field, as a contributor would add it (one field, no other edit)."""
    extended = dataclasses.make_dataclass(
        "ExtendedTrainParams",
        [
            (
                "warmup_iters",
                int,
                dataclasses.field(
                    default=0, metadata={"rule": TrainParams.__dataclass_fields__["seed"].metadata["rule"]}
                ),
            )
        ],
        bases=(TrainParams,),
    )
    monkeypatch.setitem(NOTEBOOK_PARAMETERS, "03_train", extended)
    return "warmup_iters"


def test_a_field_added_to_train_params_is_a_yaml_key_and_an_sbatch_flag(extra_field, tmp_path):
    (tmp_path / "03_train.yaml").write_text(f"lrs: [0.01]\nconfig: {DEMO_CONFIG}\n{extra_field}: 50\n")
    parameters = parameter_files.stage_parameters("03_train", tmp_path)
    assert parameters[extra_field] == 50
    lrs = parameters.pop(parameter_files.SWEEP_KEY)
    script = slurm.write_sbatch(lrs, parameters, tmp_path / "sweep.sbatch").read_text()
    assert f"-p {extra_field}=50" in script


def test_the_sbatch_flags_read_back_as_the_parameters_given_lists_included(tmp_path):
    """The script's ``-p name=value`` flags, parsed as the sweep's command line parses them, are the 03_train
    parameters given (minus what each job sets itself), in their declared order."""
    import shlex

    from helpers.__main__ import _key_values

    given = {
        "config": DEMO_CONFIG,
        "positive_rate": [0.8, 0.3, 100],
        "max_iters": 100,
        "prepared_root": "data/x y",
        "amp": False,
        "load_from": None,
    }
    script = slurm.write_sbatch([0.01], given, tmp_path / "sweep.sbatch", gpus=0).read_text()
    words = shlex.split(script[script.index("-m helpers sweep") :].replace("\\\n", " "))
    flags = [words[i + 1] for i, word in enumerate(words) if word == "-p"]
    read_back = _key_values(flags)
    assert read_back == {"gpus": 0, **{k: v for k, v in given.items() if k not in slurm.SET_PER_JOB}}
    assert list(read_back)[1:] == [k for k in declared_names("03_train") if k in given and k not in slurm.SET_PER_JOB]


def test_a_typo_in_a_yaml_key_fails_before_any_notebook_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "run_notebook", lambda *args, **kwargs: pytest.fail("a notebook started"))
    monkeypatch.setattr(pipeline, "sweep", lambda *args, **kwargs: pytest.fail("a sweep started"))
    (tmp_path / "03_train.yaml").write_text("lrs: [0.01]\nmax_iter: 100\n")
    with pytest.raises(
        ParameterError, match=r"03_train\.yaml: unknown 03_train parameter 'max_iter'; known: .*max_iters"
    ):
        pipeline.run_pipeline(tmp_path, tmp_path / "outputs")
    assert not (tmp_path / "outputs").exists()
    (tmp_path / "03_train.yaml").write_text("lrs: [0.01]\n")
    (tmp_path / "shared.yaml").write_text("prepared_rot: data/prepared\n")
    with pytest.raises(
        ParameterError, match=r"shared\.yaml: 'prepared_rot' is no notebook's parameter; known: .*prepared_root"
    ):
        pipeline.run_pipeline(tmp_path, tmp_path / "outputs")


def test_an_unknown_p_name_is_refused_naming_the_known_ones(tmp_path):
    from helpers.__main__ import main

    # the command line says it in one line (SystemExit's message), not a traceback
    with pytest.raises(SystemExit, match=r"-p: unknown 03_train parameter 'learning_rate'; known: config, lr, "):
        main(
            ["sweep", "-p", "learning_rate=0.1", "--params-dir", str(tmp_path), "--sbatch", str(tmp_path / "x.sbatch")]
        )
    assert not (tmp_path / "x.sbatch").exists()


@pytest.mark.parametrize(
    ("stage", "name", "value", "allowed"),
    [
        ("03_train", "lr", "abc", "a learning rate: a finite number > 0, or null"),
        ("03_train", "lr", 0, "a learning rate"),
        ("03_train", "lr", float("nan"), "a learning rate"),
        ("02_prepare", "img_size", -5, "a positive multiple of 16"),
        ("02_prepare", "img_size", 100, "a positive multiple of 16"),
        ("02_prepare", "test_fraction", 2, "a fraction in (0, 1)"),
        ("02_prepare", "val_fraction", 0, "a fraction in (0, 1)"),
        ("02_prepare", "split_mode", "patients", "one of 'patient', 'official', 'seed'"),
        ("03_train", "config", "no-such-config", "a config name in configs/"),
        ("03_train", "positive_rate", [0.5], "[start, end]"),
        ("03_train", "batch_size", True, "an integer >= 1"),
        ("03_train", "amp", "yes", '"auto", true or false'),
        ("04_evaluate", "postprocess", "dual", '"tune", "none"'),
        ("05_visualize", "n_examples", 0, "an image count >= 1"),
        ("01_explore", "stages", ["train", "val"], '"train" and "test"'),
    ],
)
def test_a_bad_value_is_refused_naming_the_parameter_its_value_and_what_is_allowed(stage, name, value, allowed):
    with pytest.raises(ParameterError) as err:
        check_parameters(stage, {name: value})
    message = str(err.value)
    assert message.startswith(f"{stage} parameter {name} = {value!r}: ") and allowed in message, message


def test_input_paths_must_exist_output_paths_need_not(tmp_path):
    with pytest.raises(ParameterError, match=r"02_prepare parameter raw_root = .*does not exist"):
        check_parameters("02_prepare", {"raw_root": str(tmp_path / "missing")})
    check_parameters("02_prepare", {"raw_root": str(tmp_path), "prepared_root": str(tmp_path / "new")})
    check_parameters("03_train", {"prepared_root": str(tmp_path / "later")}, paths_exist=False)  # written by 02 first
    check_parameters("03_train", {"lr": 1, "max_iters": 10, "positive_rate": [0.8, 0.3, 100], "amp": False})


@pytest.mark.parametrize(
    ("stage", "given"),
    [("03_train", {"lr": "abc"}), ("02_prepare", {"img_size": -5}), ("02_prepare", {"test_fraction": 2})],
)
def test_the_pipeline_refuses_a_bad_value_before_creating_any_folder(stage, given, tmp_path):
    out = tmp_path / "reports"
    with pytest.raises(ParameterError, match=f"{stage} parameter {next(iter(given))} = "):
        notebook_runner.run_notebook(
            stage, {**given, **({"prepared_root": str(tmp_path / "prepared")} if stage == "02_prepare" else {})}, out
        )
    assert not list(tmp_path.iterdir())


def test_the_notebook_checks_its_own_parameters():
    """papermill without helpers: the notebook's first step checks its globals (notebook_parameters: check_notebook,
    after the demo's values on the demo fallback)."""
    namespace = {**defaults("02_prepare"), "img_size": -5}
    with pytest.raises(ParameterError, match=r"notebooks/02_prepare|02_prepare parameter img_size = -5"):
        check_notebook("02_prepare", namespace)
    params = check_notebook("03_train", {**defaults("03_train"), "config": DEMO_CONFIG, "lr": 0.01})
    assert isinstance(params, TrainParams) and params.lr == 0.01
    for stage in NOTEBOOK_PARAMETERS:
        assert f'notebook_parameters("{stage}", globals())' in (paths.NOTEBOOKS_DIR / f"{stage}.py").read_text()


@pytest.mark.slow
def test_papermill_with_a_bad_img_size_fails_naming_it_and_writes_nothing(tmp_path):
    """``papermill notebooks/02_prepare.ipynb -p img_size -5``: the error names img_size, no folder is made."""
    prepared = tmp_path / "prepared"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            str(paths.NOTEBOOKS_DIR / "02_prepare.ipynb"),
            str(tmp_path / "out.ipynb"),
            "-p",
            "img_size",
            "-5",
            "-p",
            "prepared_root",
            str(prepared),
        ],
        capture_output=True,
        text=True,
        cwd=paths.REPO_ROOT,
    )
    assert run.returncode != 0
    assert "02_prepare parameter img_size = -5: allowed: a positive multiple of 16" in run.stderr + run.stdout
    assert not prepared.exists()


def test_the_shipped_yaml_files_hold_only_declared_parameters():
    for profile in (paths.PIPELINE_PARAMS_DIR, paths.PIPELINE_PARAMS_DIR / "demo"):
        for stage in STAGES:
            values = {
                k: v
                for k, v in parameter_files.stage_parameters(stage, profile).items()
                if k != parameter_files.SWEEP_KEY
            }
            check_parameters(stage, values, source=str(profile), paths_exist=False)
        assert all(yaml.safe_load(Path(p).read_text()) is not None for p in profile.glob("*.yaml"))
