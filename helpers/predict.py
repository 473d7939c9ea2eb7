"""Segment new radiographs with a trained checkpoint: ``python -m helpers predict --checkpoint CKPT IMAGES...``.

Each input (PNG or JPEG, any size, grayscale or colour, 8- or 16-bit) is converted to 8-bit grayscale
like the training data, resized to the model's input size as 02_prepare does (area interpolation), and
fed to the model as the 3-channel image mmseg makes of a grayscale PNG. The pneumothorax probability is
resized back to the input's size (bilinear) and thresholded; ``<stem>_mask.png`` ({0, 255}, the input's
size) and ``<stem>_overlay.png`` (the prediction in colour over the image) are written to ``out_dir``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from mmengine.config import Config

from helpers import evaluate
from helpers.fileio import atomic_write_bytes
from helpers.plots import overlay
from helpers.progress import tqdm
from helpers.rawdata import read_gray8

PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1]
COLUMNS = ["input", "mask_path", "overlay_path", "width", "height", "predicted_area", "max_prob"]


def model_input_size(cfg: Config) -> tuple[int, int]:
    """(width, height) the model was trained on: the test pipeline's Resize scale, else the preprocessor's size."""
    pipelines = [cfg.get("test_dataloader", {}).get("dataset", {}).get("pipeline"), cfg.get("test_pipeline")]
    for pipeline in pipelines:
        for transform in pipeline or []:
            if transform.get("type") == "Resize" and transform.get("scale"):
                width, height = transform["scale"]
                return int(width), int(height)
    size = cfg.model.get("data_preprocessor", {}).get("size")
    if size:
        height, width = size
        return int(width), int(height)
    raise ValueError("the config names no input size (no Resize in the test pipeline, no data_preprocessor.size)")


@dataclass
class LoadedModel:
    """A segmentor in eval mode, its input size (width, height), and its own decision threshold."""

    net: torch.nn.Module
    size: tuple[int, int]
    threshold: float  # on the pneumothorax probability: 0.5 (argmax of 2 classes) or decode_head.threshold
    sigmoid: bool


def load_model(checkpoint: str | Path, config: str | Path | None = None, device: str | None = None) -> LoadedModel:
    """Build the model from its config (default: the ``config.py`` beside the checkpoint) and load the weights."""
    net, cfg, _ = evaluate.load_model(checkpoint, device=device, config=config)
    head = net.decode_head
    sigmoid = head.out_channels == 1
    if not sigmoid and head.out_channels != 2:
        raise ValueError(f"{checkpoint}: expected a binary model (2 classes, or 1 sigmoid channel), not {head.out_channels} outputs")
    return LoadedModel(net=net, size=model_input_size(cfg), threshold=float(head.threshold) if sigmoid else 0.5, sigmoid=sigmoid)


def probability_maps(model: LoadedModel, images: list[np.ndarray]) -> list[np.ndarray]:
    """Pneumothorax probability maps (float32, model size) for 8-bit grayscale images already at model size."""
    inputs = [torch.from_numpy(np.ascontiguousarray(np.repeat(image[None], 3, axis=0))) for image in images]
    with torch.no_grad():
        samples = model.net.test_step(dict(inputs=inputs))
    logits = torch.stack([sample.seg_logits.data.float() for sample in samples])
    return list(evaluate.foreground_probability(logits).cpu().numpy().astype(np.float32))


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", image, PNG_PARAMS)
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, encoded.tobytes())


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
    model = load_model(checkpoint, config, device)
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
                _write_png(mask_path, mask.astype(np.uint8) * 255)
                _write_png(overlay_path, cv2.cvtColor(overlay(image, None, mask), cv2.COLOR_RGB2BGR))
                rows.append({"input": str(path), "mask_path": str(mask_path), "overlay_path": str(overlay_path),
                             "width": width, "height": height, "predicted_area": int(mask.sum()),
                             "max_prob": float(prob.max())})
                bar.update(1)
    return pd.DataFrame(rows, columns=COLUMNS)
