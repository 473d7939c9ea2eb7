"""Resolution: 02_prepare writes a larger size like any other, the fine-tune config starts from a smaller
run's best checkpoint and trains at the larger size, and a model is evaluated at its own size or against
larger masks (as the seed scored 512 models on the 1024 masks)."""

from __future__ import annotations

import pytest
import torch
from mmengine.hooks import Hook
from PIL import Image

from helpers.modeling.checkpoint import load_checkpoint_safely
from helpers.modeling.train import TrainParams, build_config, run_training
from helpers.workflow.evaluate_runs import evaluate_run

OURS = "ours_unet-s5-d16_ce-dice_oversample_adamw-20k_pneumothorax-512x512"
FINETUNE = "ours_unet-s5-d16_ce-dice_oversample_adamw-5k_finetune-1024x1024"


@pytest.fixture(scope="module")
def prepared_128(demo_raw_dir, tmp_path_factory):
    """The demo data prepared at 128x128: twice the 64x64 of ``demo_prepared`` (as 1024 is twice 512)."""
    from helpers.data.prepare import prepare_dataset

    return prepare_dataset(
        demo_raw_dir, tmp_path_factory.mktemp("prepared128"), img_size=128, split_mode="official", workers=1
    )


def test_prepare_writes_the_larger_size(prepared_128, demo_prepared):
    assert prepared_128.out_dir.name == "official-128"
    assert prepared_128.manifest["parameters"]["img_size"] == 128
    assert prepared_128.labels["name"].tolist() == demo_prepared.labels["name"].tolist()
    for folder in ("images", "masks"):
        path = next((prepared_128.out_dir / folder / "train").glob("*.png"))
        assert Image.open(path).size == (128, 128)


def test_finetune_config_defaults():
    cfg = build_config(TrainParams(config=FINETUNE, work_dir="unused"))
    assert cfg.model.data_preprocessor.size == (1024, 1024)
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        assert cfg[loader].dataset.data_root.endswith("data/prepared/patient-1024")
        resize = [t for t in cfg[loader].dataset.pipeline if t["type"] == "Resize"]
        assert [tuple(t["scale"]) for t in resize] == [(1024, 1024)]
    assert cfg.load_from is None


class FirstIteration(Hook):
    """Keeps the model's weights and the batch's image size as the first training iteration begins."""

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter == 0:
            self.state = {k: v.detach().clone() for k, v in runner.model.state_dict().items()}
            self.input_shape = tuple(data_batch["inputs"][0].shape[-2:])


@pytest.mark.slow
def test_finetune_starts_from_the_small_runs_best_checkpoint_and_trains_larger(demo_prepared, prepared_128, tmp_path):
    from mmengine.runner import Runner

    small = run_training(
        TrainParams(
            config=OURS,
            prepared_root=str(demo_prepared.out_dir),
            img_size=64,
            batch_size=2,
            max_iters=2,
            val_interval=2,
            workers=0,
            work_dir=str(tmp_path / "small"),
        )
    )
    assert small.best_checkpoint is not None
    cfg = build_config(
        TrainParams(
            config=FINETUNE,
            prepared_root=str(prepared_128.out_dir),
            img_size=128,
            batch_size=2,
            max_iters=2,
            val_interval=2,
            workers=0,
            work_dir=str(tmp_path / "finetune"),
            load_from=str(small.work_dir),
            seed=1,
        )
    )  # another seed: another fresh init
    assert cfg.load_from == str(small.best_checkpoint.resolve())
    runner = Runner.from_cfg(cfg)
    first = FirstIteration()
    runner.register_hook(first, priority="LOWEST")
    runner.train()
    loaded = load_checkpoint_safely(small.best_checkpoint)["state_dict"]
    assert first.input_shape == (128, 128)
    assert set(first.state) == set(loaded)
    for key, value in loaded.items():
        assert torch.equal(first.state[key], value), key
    trained = runner.model.state_dict()
    assert any(not torch.equal(trained[k], loaded[k]) for k in loaded if loaded[k].is_floating_point())


@pytest.mark.slow
def test_evaluation_at_the_models_size_or_against_larger_masks(trained_demo_run, demo_prepared, prepared_128, tmp_path):
    own = evaluate_run(
        trained_demo_run.work_dir, split="test", postprocess="none", n_boot=0, device="cpu", out_dir=tmp_path / "own"
    )
    larger = evaluate_run(
        trained_demo_run.work_dir,
        split="test",
        prepared_root=prepared_128.out_dir,
        postprocess="none",
        n_boot=0,
        device="cpu",
        out_dir=tmp_path / "larger",
    )
    assert own.metrics["resolution"]["model_input"] == larger.metrics["resolution"]["model_input"] == [64, 64]
    assert own.metrics["image_shape"] == own.metrics["resolution"]["evaluated_at"] == [64, 64]
    assert larger.metrics["image_shape"] == larger.metrics["resolution"]["evaluated_at"] == [128, 128]
    assert larger.metrics["resolution"]["masks"] == str(prepared_128.out_dir.resolve())
    labels = prepared_128.labels.set_index("name")
    areas = larger.per_image.set_index("name")["true_area"]
    assert (areas == labels.loc[areas.index, "fg_pixels"]).all()  # scored against the 128x128 masks
