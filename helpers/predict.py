"""Segment new radiographs with a trained checkpoint: ``python -m helpers predict --checkpoint CKPT IMAGES...``.

Each input (PNG or JPEG, any size, grayscale or colour, 8- or 16-bit) is converted to 8-bit grayscale
like the training data, resized to the model's input size as 02_prepare does (area interpolation), and
fed to the model as the 3-channel image mmseg makes of a grayscale PNG. The pneumothorax probability is
resized back to the input's size (bilinear) and thresholded; ``<stem>_mask.png`` ({0, 255}, the input's
size) and ``<stem>_overlay.png`` (the prediction in colour over the image) are written to ``out_dir``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers.images import overlay, read_gray8, write_png
from helpers.modeling.inference import load_model, probability_maps

COLUMNS = ["input", "mask_path", "overlay_path", "width", "height", "predicted_area", "max_prob"]


def predict_images(
    checkpoint: str | Path,
    images: list[str | Path],
    out_dir: str | Path,
    *,
    config: str | Path | None = None,
    threshold: float | None = None,
    device: str | None = None,
    batch_size: int = 4,
) -> pd.DataFrame:
    """Segment each image; write ``<stem>_mask.png`` and ``<stem>_overlay.png``; one table row per image.

    ``threshold`` applies to the pneumothorax probability; None keeps the model's own decision (argmax,
    i.e. 0.5 for two classes, or ``decode_head.threshold`` for a sigmoid head).
    """
    images = [Path(image) for image in images]
    stems = [image.stem for image in images]
    repeated = sorted({stem for stem in stems if stems.count(stem) > 1})
    if repeated:
        raise ValueError(f"several inputs share a file stem, their outputs would collide: {repeated}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    model = load_model(checkpoint, device=device, config=config)
    cut = model.threshold if threshold is None else float(threshold)
    out_dir = Path(out_dir)
    rows = []
    with tqdm(total=len(images), desc="predict", disable=not images) as bar:
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            originals = [read_gray8(path) for path in batch]
            resized = [cv2.resize(image, model.size, interpolation=cv2.INTER_AREA) for image in originals]
            for path, image, prob in zip(batch, originals, probability_maps(model, resized)):
                height, width = image.shape
                prob = cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
                mask = prob > cut
                mask_path = out_dir / f"{path.stem}_mask.png"
                overlay_path = out_dir / f"{path.stem}_overlay.png"
                write_png(mask_path, mask.astype(np.uint8) * 255)
                write_png(overlay_path, cv2.cvtColor(overlay(image, None, mask), cv2.COLOR_RGB2BGR))
                rows.append({"input": str(path), "mask_path": str(mask_path), "overlay_path": str(overlay_path),
                             "width": width, "height": height, "predicted_area": int(mask.sum()),
                             "max_prob": float(prob.max())})
                bar.update(1)
    return pd.DataFrame(rows, columns=COLUMNS)
