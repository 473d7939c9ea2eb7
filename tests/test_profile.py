"""helpers.core.data_profile: the one full-data / demo rule, announced once per process in the same words everywhere."""

from __future__ import annotations

import json

from mmengine.config import Config

from helpers.core import data_profile, paths, run_folders
from helpers.core.paths import DEMO_CONFIG, SEED_CONFIG
from helpers.modeling.train import choose_config


def test_two_fallbacks_in_one_process_announce_the_demo_once(tmp_path, monkeypatch, capsys):
    """04's and 05's outputs and 03's config all fall back on the demo here: one sentence is printed, by the first."""
    monkeypatch.setattr(data_profile, "_announced", [])  # a fresh process
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)  # the configs' relative data_roots now point under tmp_path
    outputs, demo = tmp_path / "outputs", tmp_path / "outputs" / "demo"
    monkeypatch.setattr(paths, "OUTPUTS_DIR", outputs)
    monkeypatch.setattr(paths, "DEMO_OUTPUTS_DIR", demo)
    run = run_folders.run_dir("demo", 0.003, demo)
    run.mkdir(parents=True)
    (run / run_folders.METRICS_FILE).write_text("{}")
    evaluation = run_folders.eval_dir(run, "test", demo)
    evaluation.mkdir(parents=True)
    (evaluation / run_folders.EVAL_INFO_FILE).write_text("{}")
    demo_root = paths.resolve(Config.fromfile(str(paths.config_path(DEMO_CONFIG))).train_dataloader.dataset.data_root)
    demo_root.mkdir(parents=True)
    (demo_root / "manifest.json").write_text(json.dumps({"parameters": {"img_size": 128}}))

    chosen, first = run_folders.choose_outputs()
    assert chosen == demo and capsys.readouterr().out == f"{first}\n"  # the first fallback announced it, word for word
    second = run_folders.choose_outputs(split="test")
    third = choose_config()
    assert second[0] == demo and third[:2] == (DEMO_CONFIG, None)
    assert capsys.readouterr().out == ""  # later fallbacks in this process say nothing more ...
    for note in (first, second[1], third[2]):  # ... though each still returns its reason, in the same words
        assert note.startswith("Using the demo profile: the demo's ") and note.endswith("(README, 'Data').")

    monkeypatch.setattr(data_profile, "_announced", [])
    (outputs / "runs" / SEED_CONFIG / "lr0.01").mkdir(parents=True)
    (outputs / "runs" / SEED_CONFIG / "lr0.01" / run_folders.METRICS_FILE).write_text("{}")
    assert run_folders.choose_outputs() == (outputs, None)  # the full profile: nothing announced
    assert capsys.readouterr().out == ""
