"""The mmseg dataset class for the prepared layout (registered in mmseg's DATASETS on import).

Configs name it as ``type='PneumothoraxDataset'`` and import it with
``custom_imports = dict(imports=['helpers.data.mmseg_dataset', 'helpers.modeling'])``.
"""

from __future__ import annotations

from pathlib import Path

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from helpers.data.prepared_folder import positive_names

CLASSES = ("background", "pneumothorax")
PALETTE = [[0, 0, 0], [255, 64, 64]]


@DATASETS.register_module()
class PneumothoraxDataset(BaseSegDataset):
    """Images and {0, 1} masks written by ``helpers.data.prepare``; entries come from ``train.txt`` etc.

    ``positive_repeats=k`` lists every image with pneumothorax k times (oversampling of the rare
    positives), read from the ``labels.csv`` that prepare writes beside the split files.
    """

    METAINFO = dict(classes=CLASSES, palette=PALETTE)

    def __init__(
        self,
        positive_repeats: int = 1,
        img_suffix: str = ".png",
        seg_map_suffix: str = ".png",
        reduce_zero_label: bool = False,
        **kwargs,
    ) -> None:
        if positive_repeats < 1:
            raise ValueError(f"positive_repeats must be >= 1, not {positive_repeats}")
        self.positive_repeats = positive_repeats
        super().__init__(
            img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, reduce_zero_label=reduce_zero_label, **kwargs
        )

    def load_data_list(self) -> list[dict]:
        data_list = super().load_data_list()
        if self.positive_repeats == 1:
            return data_list
        positive = positive_names(self.data_root, "positive_repeats")
        repeated = []
        for item in data_list:
            name = Path(item["img_path"]).name.removesuffix(self.img_suffix)
            repeated.extend([item] * (self.positive_repeats if name in positive else 1))
        return repeated
