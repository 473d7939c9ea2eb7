"""The one-channel training pipeline gives the model exactly the batch of the seed's 3-channel pipeline."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmseg.datasets.transforms import PhotoMetricDistortion
from mmseg.registry import DATASETS, MODELS

import helpers.modeling  # noqa: F401  (registers the dataset and the transform)
from helpers.core.paths import SEED_CONFIG
from helpers.data.transforms import GrayPhotoMetricDistortion, seed_training_pipeline
from helpers.modeling.train import TrainParams, build_config


def gray_image(seed: int, size: int = 96) -> np.ndarray:
    """A random gray image holding every value 0..255, so every clipping branch is hit."""
    image = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    image.flat[:256] = np.arange(256)
    return image


@pytest.mark.parametrize("seed", range(40))
def test_gray_distortion_equals_mmseg_distortion_on_gray_images(seed):
    image = gray_image(seed)
    np.random.seed(seed)
    expected = PhotoMetricDistortion().transform({"img": cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)})["img"]
    after_mmseg = np.random.random()
    np.random.seed(seed)
    result = GrayPhotoMetricDistortion().transform({"img": image.copy()})["img"]
    after_ours = np.random.random()
    assert result.shape == image.shape and result.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(result, expected[:, :, channel])
    assert after_ours == after_mmseg, "the transform must draw the same random numbers as mmseg's"


def test_gray_distortion_changes_images():
    """Across seeds the distortion is not the identity (guards against a lookup table that never changes)."""
    image = gray_image(0)
    changed = 0
    for seed in range(20):
        np.random.seed(seed)
        changed += not np.array_equal(GrayPhotoMetricDistortion().transform({"img": image.copy()})["img"], image)
    assert changed >= 10


def test_gray_distortion_refuses_a_color_image():
    color = cv2.cvtColor(gray_image(0), cv2.COLOR_GRAY2BGR)
    with pytest.raises(ValueError, match=r"2-D uint8 image.*x\.png.*\(96, 96, 3\)"):
        GrayPhotoMetricDistortion().transform({"img": color, "img_path": "x.png"})


def test_training_batches_equal_the_seed_pipeline(real_sample_dir, tmp_path):
    """Real images through the configured pipeline and through the seed's, with the same random state,
    normalized by the model's data preprocessor: identical inputs and labels."""
    from helpers.data.prepare import prepare_dataset

    prepared = prepare_dataset(real_sample_dir, tmp_path / "prepared", img_size=128, workers=1)
    init_default_scope("mmseg")
    cfg = build_config(
        TrainParams(
            config=SEED_CONFIG, prepared_root=str(prepared.out_dir), img_size=128, work_dir=str(tmp_path / "run")
        )
    )
    ours_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    assert [t["type"] for t in ours_cfg.pipeline] == [
        "LoadImageFromFile",
        "LoadAnnotations",
        "Resize",
        "RandomFlip",
        "GrayPhotoMetricDistortion",
        "PackSegInputs",
    ]
    seed_cfg = copy.deepcopy(ours_cfg)
    seed_cfg.pipeline = seed_training_pipeline(ours_cfg.pipeline)
    ours, seed = DATASETS.build(ours_cfg), DATASETS.build(seed_cfg)
    preprocessor = MODELS.build(copy.deepcopy(cfg.model.data_preprocessor))
    items = {"ours": [], "seed": []}
    for index in range(len(ours)):
        for name, dataset in (("ours", ours), ("seed", seed)):
            np.random.seed(index)
            items[name].append(dataset[index])
    assert items["ours"][0]["inputs"].shape == (1, 128, 128)
    assert items["seed"][0]["inputs"].shape == (3, 128, 128)
    batches = {name: preprocessor(pseudo_collate(batch), training=True) for name, batch in items.items()}
    assert batches["ours"]["inputs"].shape == (len(ours), 3, 128, 128)
    assert torch.equal(batches["ours"]["inputs"], batches["seed"]["inputs"])
    for mine, theirs in zip(batches["ours"]["data_samples"], batches["seed"]["data_samples"], strict=True):
        assert torch.equal(mine.gt_sem_seg.data, theirs.gt_sem_seg.data)
    flipped = sum(s.flip for s in batches["ours"]["data_samples"])
    assert 0 < flipped < len(ours), "both flip branches should be exercised"
