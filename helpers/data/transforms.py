"""Data transforms for single-channel X-rays (registered in mmseg's TRANSFORMS on import).

The training pipeline loads the grayscale PNGs as one channel instead of three identical ones. Resize,
RandomFlip and packing work on a third of the data, and the model's ``SegDataPreProcessor`` broadcasts
the channel against its three means and stds. The normalized batch is therefore the one the seed's
3-channel pipeline makes, bit for bit (``tests/test_transforms.py`` checks it).
"""

from __future__ import annotations

import cv2
import numpy as np
from mmseg.datasets.transforms import PhotoMetricDistortion
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class GrayPhotoMetricDistortion(PhotoMetricDistortion):
    """The seed's ``PhotoMetricDistortion``, for a single-channel image, with the same result and the same
    random draws.

    On a gray image the saturation is 0 in HSV. Scaling it keeps it 0, and shifting the hue then changes no
    pixel, so only brightness and contrast act. Both are fixed maps from uint8 to uint8. They are computed
    once on the 256 possible values by mmseg's own code and applied to the image as one lookup table. The
    saturation and hue steps still draw their random numbers, so the transforms after this one see the
    same random state as after mmseg's.
    """

    def saturation(self, img: np.ndarray) -> np.ndarray:
        if np.random.randint(2):
            np.random.uniform(self.saturation_lower, self.saturation_upper)
        return img

    def hue(self, img: np.ndarray) -> np.ndarray:
        if np.random.randint(2):
            np.random.randint(-self.hue_delta, self.hue_delta)
        return img

    def transform(self, results: dict) -> dict:
        img = results["img"]
        if img.ndim != 2 or img.dtype != np.uint8:
            raise ValueError(
                f"GrayPhotoMetricDistortion needs a 2-D uint8 image (LoadImageFromFile with "
                f"color_type='grayscale'); {results.get('img_path', 'the image')} is "
                f"{img.dtype} with shape {img.shape}"
            )
        lut = super().transform({"img": np.arange(256, dtype=np.uint8)})["img"]
        results["img"] = cv2.LUT(img, lut)
        return results


def seed_training_pipeline(pipeline: list[dict]) -> list[dict]:
    """The seed's 3-channel form of a training pipeline written for one channel: the default (color)
    ``LoadImageFromFile`` and mmseg's ``PhotoMetricDistortion``. Tests and benchmarks compare the two."""
    seed = []
    for transform in pipeline:
        transform = dict(transform)
        if transform["type"] == "GrayPhotoMetricDistortion":
            transform["type"] = "PhotoMetricDistortion"
        elif transform["type"] == "LoadImageFromFile":
            transform.pop("color_type", None)
        seed.append(transform)
    return seed
