"""Corrupt or foreign checkpoints get one message naming the file in every entry point: 04 (evaluation),
predict, export, the ensemble's checkpoint averaging, a resumed training and a fine-tune's load_from."""

from __future__ import annotations

import shutil

import pytest
import torch

from helpers.core import paths, run_folders
from helpers.modeling.checkpoint import CheckpointError, read_checkpoint


@pytest.fixture(scope="module")
def bad_checkpoints(trained_demo_run, tmp_path_factory):
    """{kind: path} of unusable checkpoints, each in a folder with the run's config.py."""
    folder = tmp_path_factory.mktemp("bad")
    shutil.copy(trained_demo_run.work_dir / run_folders.CONFIG_FILE, folder / run_folders.CONFIG_FILE)
    data = trained_demo_run.best_checkpoint.read_bytes()
    made = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "text": b"not a checkpoint\n",
    }
    paths_by_kind = {}
    for kind, content in made.items():
        paths_by_kind[kind] = folder / f"{kind}.pth"
        paths_by_kind[kind].write_bytes(content)
    paths_by_kind["other_model"] = folder / "other_model.pth"
    torch.save({"state_dict": torch.nn.Linear(3, 2).state_dict(), "meta": {}}, paths_by_kind["other_model"])
    paths_by_kind["not_weights"] = folder / "not_weights.pth"
    torch.save({"state_dict": {"w": "a string"}}, paths_by_kind["not_weights"])
    return paths_by_kind


MESSAGES = {
    "truncated": "unreadable checkpoint, truncated or corrupted",
    "empty": "unreadable checkpoint, truncated or corrupted",
    "text": "unreadable checkpoint, truncated or corrupted",
    "other_model": "not a checkpoint of the model",
    "not_weights": "not a model checkpoint",
}


@pytest.mark.parametrize("kind", sorted(MESSAGES))
def test_load_model_names_the_file_and_the_problem(bad_checkpoints, kind):
    from helpers.modeling.inference import load_model

    path = bad_checkpoints[kind]
    with pytest.raises(CheckpointError) as raised:
        load_model(path, device="cpu")
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and MESSAGES[kind] in message
    assert "\n" not in message


def test_a_pickle_of_other_objects_is_foreign(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": shutil.copy}, path)
    with pytest.raises(CheckpointError, match=rf"^{path}: not a checkpoint this project can load"):
        read_checkpoint(path)


def test_predict_export_and_evaluation_name_the_truncated_file(bad_checkpoints, demo_prepared, tmp_path):
    from helpers.modeling.export import export_onnx
    from helpers.predict import predict_images
    from helpers.workflow.evaluate_runs import evaluate_run_folders

    path = bad_checkpoints["truncated"]
    image = next((demo_prepared.out_dir / "images" / "test").glob("*.png"))
    with pytest.raises(CheckpointError, match=str(path)):
        predict_images(path, [image], tmp_path / "predictions")
    with pytest.raises(CheckpointError, match=str(path)):
        export_onnx(path, tmp_path / "model.onnx")
    results, failures = evaluate_run_folders([path], split="test", outputs=tmp_path, postprocess="none", n_boot=10)
    assert results == [] and failures[0].error.startswith(f"CheckpointError: {path}: unreadable checkpoint")


def test_the_cli_says_one_line(bad_checkpoints, tmp_path, capsys):
    from helpers.__main__ import main

    path = bad_checkpoints["text"]
    with pytest.raises(SystemExit) as raised:
        main(["export", "--checkpoint", str(path), "--out", str(tmp_path / "model.onnx")])
    assert str(raised.value).startswith(f"error: {path}: unreadable checkpoint")


def test_checkpoint_averaging_names_the_file(trained_demo_run, tmp_path):
    from helpers.modeling.ensemble import write_averaged_checkpoint

    run = tmp_path / "run"
    shutil.copytree(trained_demo_run.work_dir, run)
    best = next(run.glob(f"best_{run_folders.BEST_METRIC}_iter_*.pth"))
    best.write_bytes(best.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=rf"^{best}: unreadable checkpoint"):
        write_averaged_checkpoint(run, 1)


def test_resume_and_load_from_name_the_file_before_writing(trained_demo_run, demo_prepared, bad_checkpoints, tmp_path):
    from helpers.modeling.train import TrainParams, run_training

    work_dir = tmp_path / "resumed"
    work_dir.mkdir()
    last = work_dir / "iter_60.pth"
    last.write_bytes(bad_checkpoints["truncated"].read_bytes())
    (work_dir / run_folders.LAST_CHECKPOINT_FILE).write_text(str(last))
    common = dict(
        config=paths.DEMO_CONFIG, prepared_root=str(demo_prepared.out_dir), img_size=64, max_iters=2, val_interval=2
    )
    with pytest.raises(CheckpointError, match=rf"^{last}: unreadable checkpoint"):
        run_training(TrainParams(**common, work_dir=str(work_dir), resume=True))
    assert sorted(p.name for p in work_dir.iterdir()) == sorted([last.name, run_folders.LAST_CHECKPOINT_FILE])
    fresh = tmp_path / "finetune"
    with pytest.raises(CheckpointError, match=rf"^{bad_checkpoints['text']}: unreadable checkpoint"):
        run_training(TrainParams(**common, work_dir=str(fresh), load_from=str(bad_checkpoints["text"])))
    assert not fresh.exists()
