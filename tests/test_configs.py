"""Every config in configs/: it resolves, loads, builds its model and datasets, and computes its loss;
the configs are plain mmseg configs that mmseg's own tools/train.py and tools/test.py accept."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

from helpers.core import paths
from helpers.core.paths import DEMO_CONFIG, SEED_CONFIG
from helpers.modeling.train import TrainParams, build_config

CONFIGS = sorted(paths.CONFIGS_DIR.glob("*.py"))
LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")
SIGMOID = "fcn-unet-s5-d16_unet-sigmoid_1xb16-0.01-20k_pneumothorax-512x512"
OURS = "ours_unet-s5-d16_ce-dice_oversample_adamw-20k_pneumothorax-512x512"
# Backbones initialized from published weights: init_weights() would download them, which tests never do
# (tests/test_pretrained.py loads a test-written file into them instead).
FROM_SCRATCH = [c for c in CONFIGS if not c.stem.startswith("pretrained")]


@pytest.fixture(scope="module", autouse=True)
def mmseg_scope():
    """mmseg's registry scope with the project's dataset, metric and loss registered."""
    from mmengine.registry import init_default_scope

    import helpers.data.mmseg_dataset  # noqa: F401
    import helpers.modeling  # noqa: F401

    init_default_scope("mmseg")


def small_config(config: Path, data_root: Path):
    """``config`` with 64x64 images on the prepared demo data, through the project's config surgery."""
    return build_config(TrainParams(config=str(config), img_size=64, prepared_root=str(data_root), workers=0))


def batch(dataset, model, n_positive: int = 2, n_negative: int = 2, training: bool = True) -> dict:
    """A preprocessed batch of the first positive and negative images of ``dataset``."""
    from mmengine.dataset import pseudo_collate

    positive, negative = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        (positive if item["data_samples"].gt_sem_seg.data.any() else negative).append(item)
        if len(positive) >= n_positive and len(negative) >= n_negative:
            break
    return model.data_preprocessor(pseudo_collate(positive[:n_positive] + negative[:n_negative]), training=training)


def test_the_configs_the_project_names_are_found_by_name():
    """Every config that code, pipeline files or the seed's lr sweep name resolves to its file in configs/."""
    from helpers.workflow.sweep import SEED_LRS

    named = {DEMO_CONFIG, SEED_CONFIG, SIGMOID, OURS}
    named |= {SEED_CONFIG.replace("-0.01-", f"-{lr:g}-") for lr in SEED_LRS}
    for profile in (paths.PIPELINE_PARAMS_DIR, paths.PIPELINE_PARAMS_DIR / "demo"):
        named.add(yaml.safe_load((profile / "03_train.yaml").read_text())["config"])
    for name in named:
        assert paths.config_path(name) == paths.CONFIGS_DIR / f"{name}.py"
    assert named <= {p.stem for p in CONFIGS}


def test_the_seeds_per_lr_files_are_the_sweep_config_at_their_lr_and_reproduce_the_seeds_settings():
    """``mim train mmseg configs/<seed file>`` loads the sweep config with the file's lr: mmseg's schedule_20k
    (SGD, momentum 0.9, weight decay 0.0005, poly to 1e-4 over 20k iterations), batch 16, 512x512, whole-image
    test, no auxiliary head; and the sweep config itself names no lr."""
    from helpers.workflow.sweep import SEED_LRS

    assert not re.search(r"\d\.\d", paths.SWEEP_CONFIG)
    sweep = Config.fromfile(str(paths.config_path(paths.SWEEP_CONFIG))).to_dict()
    for lr in SEED_LRS:
        name = SEED_CONFIG.replace("-0.01-", f"-{lr:g}-")
        cfg = Config.fromfile(str(paths.CONFIGS_DIR / f"{name}.py"))
        assert cfg._cfg_dict.to_dict() == {
            **sweep,
            "optim_wrapper": {**sweep["optim_wrapper"], "optimizer": {**sweep["optim_wrapper"]["optimizer"], "lr": lr}},
        }, name
        assert dict(cfg.optim_wrapper.optimizer) == {"type": "SGD", "lr": lr, "momentum": 0.9, "weight_decay": 0.0005}
        assert [(s.type, s.eta_min, s.power, s.end) for s in cfg.param_scheduler] == [("PolyLR", 1e-4, 0.9, 20000)]
        assert (cfg.train_cfg.max_iters, cfg.train_dataloader.batch_size, cfg.model.data_preprocessor.size) == (
            20000,
            16,
            (512, 512),
        )
        assert cfg.model.test_cfg == {"mode": "whole"} and cfg.model.auxiliary_head is None
        assert (paths.CONFIGS_DIR / f"{name}.py").read_text().count("\n") <= 3  # a thin child: comment, base, lr


def inheritance_depth(config: Path | str) -> int:
    """How many files deep ``config`` inherits: 1 for a file with no ``_base_``, else 1 + its deepest base's
    (mmseg's own ``mmseg::`` bases counted like ours)."""
    return 1 + max(
        (inheritance_depth(Config._get_cfg_path(base, str(config))[0]) for base in Config._get_base_files(str(config))),
        default=0,
    )


def test_every_config_inherits_at_most_three_levels():
    """mmseg's guide: at most three levels of inheritance; ours and pretrained share one AdamW schedule file."""
    depths = {
        str(p.relative_to(paths.CONFIGS_DIR)): inheritance_depth(p) for p in sorted(paths.CONFIGS_DIR.rglob("*.py"))
    }
    assert (
        depths[f"{DEMO_CONFIG}.py"] == 3 and depths["_base_/datasets/pneumothorax_512x512.py"] == 1
    )  # counted as said
    assert {name: depth for name, depth in depths.items() if depth > 3} == {}
    adamw = "./_base_/schedules/schedule_20k_adamw.py"
    assert all(
        adamw in Config._get_base_files(str(paths.CONFIGS_DIR / f"{name}.py"))
        for name in (OURS, "pretrained-r50_deeplabv3plus_ce-dice_oversample_adamw-20k_pneumothorax-512x512")
    )


def test_ours_is_the_seeds_run_but_for_its_loss_oversampling_and_adamw_schedule():
    """Ours no longer inherits the sweep config (so that the demo can inherit ours' bases within three levels):
    everything else it declares again must stay the seed's."""
    sweep = Config.fromfile(str(paths.config_path(paths.SWEEP_CONFIG))).to_dict()
    ours = Config.fromfile(str(paths.config_path(OURS))).to_dict()
    assert (
        ours["optim_wrapper"]["optimizer"]["type"] == "AdamW"
        and ours["train_dataloader"]["dataset"]["positive_repeats"] == 3
    )
    for cfg in (sweep, ours):
        cfg["model"]["decode_head"].pop("loss_decode")
        cfg["train_dataloader"]["dataset"].pop("positive_repeats", None)
        cfg.pop("optim_wrapper"), cfg.pop("param_scheduler")
    assert ours == sweep


def test_the_test_loader_is_the_val_loader_on_the_test_list():
    for name in (SEED_CONFIG, DEMO_CONFIG):
        cfg = Config.fromfile(str(paths.config_path(name)))
        val, test = cfg.val_dataloader.to_dict(), cfg.test_dataloader.to_dict()
        assert (val["dataset"].pop("ann_file"), test["dataset"].pop("ann_file")) == ("val.txt", "test.txt")
        assert val == test, name


def test_the_demo_config_is_the_base_pipelines_at_128_without_photometric_distortion():
    base = Config.fromfile(str(paths.config_path(SEED_CONFIG)))
    demo = Config.fromfile(str(paths.config_path(DEMO_CONFIG)))

    def at_128(pipeline, drop=()):
        return [
            dict(t, scale=(128, 128)) if t["type"] == "Resize" else dict(t) for t in pipeline if t["type"] not in drop
        ]

    assert [dict(t) for t in demo.train_dataloader.dataset.pipeline] == at_128(
        base.train_dataloader.dataset.pipeline, drop=("GrayPhotoMetricDistortion",)
    )
    assert [dict(t) for t in demo.test_dataloader.dataset.pipeline] == at_128(base.test_dataloader.dataset.pipeline)
    assert demo.train_dataloader.dataset.pipeline[0]["color_type"] == "grayscale"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_resolves_by_name(config):
    """03_train names a config without '.py'; names hold dots (lr 0.01), which are no file suffix."""
    assert paths.config_path(config.name.removesuffix(".py")) == config
    assert paths.config_path(str(config)) == config


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_model_and_datasets(config, demo_prepared):
    from mmseg.registry import DATASETS, MODELS

    cfg = small_config(config, demo_prepared.out_dir)
    assert cfg.model.data_preprocessor.size == (64, 64)
    labels = demo_prepared.labels
    expected = {}
    for loader, split in zip(LOADERS, ("train", "val", "test"), strict=True):
        rows = labels[labels["split"] == split]
        repeats = cfg[loader].dataset.get("positive_repeats", 1)
        expected[loader] = len(rows) + (repeats - 1) * int((rows["fg_pixels"] > 0).sum())
    model = MODELS.build(cfg.model)
    for loader in LOADERS:
        resizes = [t for t in cfg[loader].dataset.pipeline if t["type"] in ("Resize", "RandomResize")]
        assert resizes and all(tuple(t["scale"]) == (64, 64) for t in resizes)
        dataset = DATASETS.build(cfg[loader].dataset)
        assert len(dataset) == expected[loader]
        item = dataset[0]
        assert item["inputs"].shape in ((1, 64, 64), (3, 64, 64))  # one gray channel, or the seed's three
        assert set(item["data_samples"].gt_sem_seg.data.unique().tolist()) <= {0, 1}
        inputs = model.data_preprocessor(pseudo_collate([item]), training=loader == "train_dataloader")["inputs"]
        assert inputs.shape == (1, 3, 64, 64)
    assert model.decode_head.num_classes == 2
    assert model.decode_head.out_channels == (1 if config.stem == SIGMOID else 2)


@pytest.mark.parametrize("config", FROM_SCRATCH, ids=lambda p: p.stem)
def test_model_loss_and_prediction_on_one_batch(config, demo_prepared):
    """Finite losses whose gradients reach the backbone; the loss is the one the config names."""
    from mmseg.registry import DATASETS, MODELS

    torch.manual_seed(0)
    cfg = small_config(config, demo_prepared.out_dir)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    model.decode_head.dropout.eval()  # so that the logits recomputed below are the ones the loss saw
    data = batch(dataset, model)
    losses = model(**data, mode="loss")
    loss_names = {k for k in losses if "loss" in k}
    if config.stem.startswith("ours") or config.stem == DEMO_CONFIG:  # ours and the 1024 fine-tune of ours
        assert loss_names == {"decode.loss_ce", "decode.loss_fg_dice"}
    else:
        assert loss_names == {"decode.loss_ce"}
    total = sum(losses[k] for k in loss_names)
    assert torch.isfinite(total)
    total.backward()
    first_conv = model.backbone.encoder[0][0].convs[0].conv.weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0

    # the same losses, recomputed by hand from the head's logits and the {0, 1} masks
    with torch.no_grad():
        logits = model.decode_head(model.extract_feat(data["inputs"]))
        logits = F.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False)
    target = torch.stack([s.gt_sem_seg.data[0] for s in data["data_samples"]]).long()
    assert target.any() and not target.all()
    if config.stem == SIGMOID:
        expected_ce = F.binary_cross_entropy_with_logits(logits[:, 0], target.float())
    else:  # mmseg 1.2.2 divides the class-weighted sum by the sum of the pixels' weights, as torch does
        loss_cfg = cfg.model.decode_head.loss_decode
        weight = (loss_cfg[0] if isinstance(loss_cfg, list) else loss_cfg).get("class_weight")
        weight = None if weight is None else torch.tensor(weight)
        expected_ce = F.cross_entropy(logits, target, weight=weight)
    assert losses["decode.loss_ce"].item() == pytest.approx(expected_ce.item(), rel=1e-4)
    if "decode.loss_fg_dice" in losses:
        prob = logits.softmax(dim=1)[:, 1]
        dice = (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
        assert losses["decode.loss_fg_dice"].item() == pytest.approx(1 - dice.item(), rel=1e-4)

    model.eval()
    with torch.no_grad():
        predictions = model(**batch(dataset, model, training=False), mode="predict")
        for sample in predictions:
            assert sample.pred_sem_seg.data.shape == (1, 64, 64)
            assert set(sample.pred_sem_seg.data.unique().tolist()) <= {0, 1}
        if config.stem == SIGMOID:
            scores = predictions[0].seg_logits.data  # sigmoid probabilities, thresholded at 0.3
            assert model.decode_head.threshold == 0.3
            assert torch.equal(predictions[0].pred_sem_seg.data.bool(), scores > 0.3)


def _mmseg_tool(name: str) -> Path:
    import mmseg

    return Path(mmseg.__file__).parent / ".mim" / "tools" / name


def _tool_options(config: Path, data_root: Path) -> list[str]:
    """--cfg-options: the prepared demo data, 64x64 images, 4 iterations with a checkpoint at 4."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(config))
    options = [f"{loader}.dataset.data_root={data_root}" for loader in LOADERS]
    for loader in LOADERS:
        for index, transform in enumerate(cfg[loader].dataset.pipeline):
            if transform["type"] == "Resize":
                options.append(f"{loader}.dataset.pipeline.{index}.scale=(64,64)")
    options += [
        "model.data_preprocessor.size=(64,64)",
        "train_cfg.max_iters=4",
        "train_cfg.val_interval=4",
        "default_hooks.checkpoint.interval=4",
        "default_hooks.logger.interval=1",
    ]
    return options


def _run_tool(args: list[str], cwd: Path, **env_vars: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | env_vars
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


@pytest.mark.slow
def test_mmseg_tools_train_and_test_accept_the_demo_config(demo_prepared, tmp_path):
    """mmseg's own tools/train.py (from a temporary folder) then tools/test.py (from the repository root),
    without PYTHONPATH; test.py loads the project-written checkpoint with weights_only forced on."""
    config = paths.CONFIGS_DIR / f"{DEMO_CONFIG}.py"
    options = _tool_options(config, Path(demo_prepared.out_dir).resolve())
    assert sum(".scale=(64,64)" in option for option in options) == 3
    work_dir = tmp_path / "work"
    train_log = _run_tool(
        [str(_mmseg_tool("train.py")), str(config), "--work-dir", str(work_dir), "--cfg-options", *options],
        cwd=tmp_path,
    )
    checkpoint = work_dir / "iter_4.pth"
    assert checkpoint.is_file(), train_log[-4000:]
    assert "Iter(train) [4/4]" in train_log
    assert "Dice.pneumothorax" in train_log

    test_log = _run_tool(
        [
            str(_mmseg_tool("test.py")),
            str(config),
            str(checkpoint),
            "--work-dir",
            str(tmp_path / "test"),
            "--cfg-options",
            *options,
        ],
        cwd=paths.REPO_ROOT,
        TORCH_FORCE_WEIGHTS_ONLY_LOAD="1",
    )
    assert "Load checkpoint from" in test_log
    match = re.search(r"Iter\(test\) \[\d+/\d+\].*mIoU: ([\d.]+)", test_log)
    assert match, test_log[-4000:]
    assert 0.0 <= float(match.group(1)) <= 100.0
    assert "Dice.pneumothorax" in test_log
