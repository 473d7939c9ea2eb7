"""The pretrained-encoder config: it names the published ImageNet weights, and the ``pretrained`` parameter
loads a local file into its backbone instead (written here; nothing downloads), then it trains."""

from __future__ import annotations

import pytest
import torch
from mmengine.hooks import Hook

from helpers.modeling.train import TrainParams, build_config

PRETRAINED = "pretrained-r50_deeplabv3plus_ce-dice_oversample_adamw-20k_pneumothorax-512x512"


def test_config_names_the_published_weights():
    cfg = build_config(TrainParams(config=PRETRAINED, work_dir="unused"))
    assert cfg.model.backbone.type == "ResNetV1c" and cfg.model.backbone.depth == 50
    assert cfg.model.backbone.init_cfg == dict(type="Pretrained", checkpoint="open-mmlab://resnet50_v1c")
    assert cfg.model.decode_head.num_classes == cfg.model.auxiliary_head.num_classes == 2


def test_missing_pretrained_file_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such.pth"):
        build_config(TrainParams(config=PRETRAINED, work_dir="unused", pretrained=str(tmp_path / "no-such.pth")))


class FirstIteration(Hook):
    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter == 0:
            self.backbone = {k: v.detach().clone() for k, v in runner.model.backbone.state_dict().items()}


@pytest.mark.slow
def test_local_pretrained_file_loads_into_the_backbone_and_trains(demo_prepared, tmp_path):
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmseg.registry import MODELS

    params = TrainParams(
        config=PRETRAINED,
        prepared_root=str(demo_prepared.out_dir),
        img_size=64,
        batch_size=2,
        max_iters=3,
        val_interval=100,
        workers=0,
        work_dir=str(tmp_path / "run"),
    )  # no val: mechanics only
    # an ImageNet-like backbone file: the config's backbone with seeded random weights, BatchNorm statistics too
    init_default_scope("mmseg")
    backbone_cfg = build_config(params).model.backbone
    backbone = MODELS.build({**backbone_cfg, "init_cfg": None, "norm_cfg": dict(type="BN", requires_grad=True)})
    generator = torch.Generator().manual_seed(7)
    weights = {}
    for key, value in backbone.state_dict().items():
        if value.is_floating_point():
            noise = torch.randn(value.shape, generator=generator) * 0.05
            value = (value + noise).abs() if key.endswith("running_var") else value + noise
        weights[key] = value
    checkpoint = tmp_path / "resnet50_v1c-local.pth"
    torch.save({"state_dict": weights}, checkpoint)

    cfg = build_config(TrainParams(**{**params.__dict__, "pretrained": str(checkpoint)}))
    assert cfg.model.backbone.init_cfg == dict(type="Pretrained", checkpoint=str(checkpoint.resolve()))
    runner = Runner.from_cfg(cfg)
    first = FirstIteration()
    runner.register_hook(first, priority="LOWEST")
    runner.train()
    assert set(first.backbone) == set(weights)
    for key, value in weights.items():
        assert torch.equal(first.backbone[key], value), key
    after = runner.model.backbone.state_dict()
    assert not torch.equal(after["stem.0.weight"], weights["stem.0.weight"])  # it trained
    assert runner.iter == 3
