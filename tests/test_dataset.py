"""The mmseg dataset built from the demo config on prepared data: labels reach the model as 1, never 255."""

from __future__ import annotations

import copy
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS
from PIL import Image

import helpers.data.mmseg_dataset  # noqa: F401  (registers PneumothoraxDataset)
import helpers.modeling  # noqa: F401  (registers the project's metric and loss)
from helpers.core import paths
from helpers.core.paths import DEMO_CONFIG

IGNORE_INDEX = 255  # mmseg's default ignore_index in its losses and IoUMetric


@pytest.fixture(scope="module")
def config() -> Config:
    init_default_scope("mmseg")
    return Config.fromfile(paths.config_path(DEMO_CONFIG))


def build(config: Config, loader: str, data_root: Path, **overrides):
    dataset_cfg = copy.deepcopy(config[loader]["dataset"])
    dataset_cfg.update(data_root=str(data_root), **overrides)
    return DATASETS.build(dataset_cfg)


def positive_stems(out_dir: Path, split: str) -> set[str]:
    """Names whose prepared mask holds any 1, read from the PNGs."""
    return {p.stem for p in (out_dir / "masks" / split).glob("*.png") if (np.asarray(Image.open(p)) == 1).any()}


def stem(item: dict) -> str:
    return Path(item["img_path"]).stem


def test_training_pipeline_gives_label_1_for_pneumothorax(config, demo_prepared):
    out_dir = demo_prepared.out_dir
    dataset = build(config, "train_dataloader", out_dir, positive_repeats=1)
    assert dataset.metainfo["classes"] == ("background", "pneumothorax")
    assert sorted(stem(dataset.get_data_info(i)) for i in range(len(dataset))) == sorted(
        p.stem for p in (out_dir / "images" / "train").glob("*.png")
    )
    positives = positive_stems(out_dir, "train")
    assert positives
    negatives_checked = 0
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        name = stem(info)
        if name not in positives and negatives_checked >= 5:
            continue
        assert Path(info["seg_map_path"]) == out_dir / "masks" / "train" / f"{name}.png"
        results = copy.deepcopy(info)
        for transform in dataset.pipeline.transforms[:-1]:  # everything before PackSegInputs
            results = transform(results)
        values = set(np.unique(results["gt_seg_map"]).tolist())
        packed = dataset[index]["data_samples"].gt_sem_seg.data
        assert tuple(packed.shape) == (1, 128, 128)
        packed_values = set(packed.unique().tolist())
        assert IGNORE_INDEX not in values | packed_values
        if name in positives:
            assert values == packed_values == {0, 1}, name
        else:
            assert values == packed_values == {0}, name
            negatives_checked += 1


def test_validation_dataset_reads_val_txt_with_labels(config, demo_prepared):
    out_dir = demo_prepared.out_dir
    dataset = build(config, "val_dataloader", out_dir)
    assert len(dataset) == len(list((out_dir / "images" / "val").glob("*.png")))
    positives = positive_stems(out_dir, "val")
    index = next(i for i in range(len(dataset)) if stem(dataset.get_data_info(i)) in positives)
    assert 1 in dataset[index]["data_samples"].gt_sem_seg.data.unique().tolist()


def test_positive_repeats_lists_positives_three_times(config, demo_prepared):
    out_dir = demo_prepared.out_dir
    assert config.train_dataloader.dataset.positive_repeats == 3
    dataset = build(config, "train_dataloader", out_dir)
    counts = Counter(stem(dataset.get_data_info(i)) for i in range(len(dataset)))
    positives = positive_stems(out_dir, "train")
    all_train = {p.stem for p in (out_dir / "images" / "train").glob("*.png")}
    assert set(counts) == all_train
    assert {n for n, c in counts.items() if c == 3} == positives
    assert {n for n, c in counts.items() if c == 1} == all_train - positives
    assert len(dataset) == len(all_train) + 2 * len(positives)


def test_positive_repeats_needs_labels_csv_and_a_positive_count(config, demo_prepared, tmp_path):
    copied = Path(shutil.copytree(demo_prepared.out_dir, tmp_path / "prepared"))
    (copied / "labels.csv").unlink()
    with pytest.raises(FileNotFoundError, match="labels.csv"):
        build(config, "train_dataloader", copied, positive_repeats=3)
    assert len(build(config, "train_dataloader", copied, positive_repeats=1)) == len(
        list((copied / "images" / "train").glob("*.png"))
    )
    with pytest.raises(ValueError, match="positive_repeats"):
        build(config, "train_dataloader", demo_prepared.out_dir, positive_repeats=0)
