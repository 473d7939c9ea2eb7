"""Segment new radiographs with a trained model: ``python -m helpers predict --checkpoint MODEL INPUTS...``.

``MODEL`` is a checkpoint (``.pth`` or a run folder) or an exported ``.onnx`` (run through onnxruntime).
``INPUTS`` are files or folders of PNG, JPEG and DICOM files, mixed. Each input is converted to 8-bit
grayscale like the training data (DICOM through :mod:`helpers.dicom`), resized to the model's input size
as 02_prepare does (area interpolation), and fed to the model as the 3-channel image mmseg makes of a
grayscale PNG. The pneumothorax probability is resized back to the input's size (bilinear) and
post-processed: by default with the run's post-processing tuned on val (04_evaluate), its areas scaled to
the image's size; else with the model's own decision. ``<stem>_mask.png`` ({0, 255}, the input's size),
``<stem>_overlay.png`` and ``predictions.csv`` are written to ``out_dir``; an input that cannot be read
gets its error in the table and the others go on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from mmengine.config import Config
from tqdm.auto import tqdm

from helpers import evaluate, paths
from helpers.dicom import is_dicom, read_dicom
from helpers.evaluate import EVAL_FILE, METRICS_FILE, PostProcess, apply_postprocess
from helpers.fileio import atomic_write_bytes, atomic_write_text
from helpers.plots import overlay
from helpers.rawdata import read_gray8

PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1]
COLUMNS = ["input", "mask_path", "overlay_path", "width", "height", "predicted_area", "area_cm2", "pneumothorax",
           "max_prob", "error"]
PREDICTIONS_FILE = "predictions.csv"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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


@dataclass
class TunedPostProcess:
    """The run's post-processing tuned on val, with the image shape its areas (pixels) were tuned at."""

    postprocess: PostProcess
    image_shape: tuple[int, int]  # (height, width) of the evaluated images
    source: str  # the eval.json it came from

    def for_shape(self, height: int, width: int) -> PostProcess:
        """The same post-processing for an image of another size: areas scaled by the ratio of pixel counts."""
        ratio = (height * width) / (self.image_shape[0] * self.image_shape[1])
        pp = self.postprocess
        return PostProcess(pp.threshold, int(round(pp.min_component_area * ratio)), int(round(pp.min_total_area * ratio)))

    def describe(self) -> str:
        """One line for the user."""
        pp = self.postprocess
        return (f"post-processing tuned on val: probability > {pp.threshold:g}, components >= {pp.min_component_area} px, "
                f"total >= {pp.min_total_area} px at {self.image_shape[1]}x{self.image_shape[0]} (scaled to each "
                f"image's size), from {self.source}")

    def as_dict(self) -> dict:
        """For JSON (the ONNX side-car)."""
        return {**self.postprocess.as_dict(), "image_shape": list(self.image_shape), "source": self.source}

    @classmethod
    def from_dict(cls, data: dict) -> TunedPostProcess:
        """The inverse of :meth:`as_dict`."""
        pp = PostProcess(float(data["threshold"]), int(data["min_component_area"]), int(data["min_total_area"]))
        return cls(pp, (int(data["image_shape"][0]), int(data["image_shape"][1])), str(data["source"]))


def find_tuned_postprocess(checkpoint: str | Path, config: str | Path | None = None) -> TunedPostProcess | None:
    """The post-processing 04_evaluate tuned on val for this checkpoint, from the run's evaluation folders
    (``<outputs>/eval/<config>_lr<lr>/<split>/``, the test split's first); None when there is none."""
    run_dir, checkpoint, _ = evaluate.resolve_run(checkpoint, config)
    run_dir = run_dir.resolve()
    if len(run_dir.parents) < 3:
        return None
    eval_root = paths.eval_dir(run_dir, "test", outputs=run_dir.parents[2]).parent  # runs/<config>/lr<lr> -> outputs
    candidates = sorted(eval_root.glob(f"*/{EVAL_FILE}"), key=lambda p: (p.parent.name != "test", p.parent.name))
    for eval_path in candidates:
        info = json.loads(eval_path.read_text())
        metrics_path = eval_path.parent / METRICS_FILE
        if Path(info.get("checkpoint", "")).name != Path(checkpoint).name or not metrics_path.is_file():
            continue
        metrics = json.loads(metrics_path.read_text())
        if metrics.get("postprocess", {}).get("tuned_on") != "val":
            continue
        height, width = metrics["image_shape"]
        return TunedPostProcess(PostProcess(**info["postprocess"]), (int(height), int(width)), str(eval_path))
    return None


def collect_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given; a folder gives its PNG, JPEG and DICOM files (DICOM by extension or by its ``DICM``
    marker), sorted by name, not recursing."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files.extend(p for p in sorted(item.iterdir())
                         if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or is_dicom(p)))
        else:
            files.append(item)
    return files


def read_radiograph(path: Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    """(8-bit gray image, pixel spacing (row, column) in mm or None) of a PNG, JPEG or DICOM file."""
    if path.suffix.lower() not in IMAGE_SUFFIXES and is_dicom(path):
        image = read_dicom(path)
        return image.gray8, image.spacing_mm
    return read_gray8(path), None


def predict_images(
    checkpoint: str | Path,
    images: list[str | Path],
    out_dir: str | Path,
    *,
    config: str | Path | None = None,
    threshold: float | None = None,
    postprocess: bool = True,
    device: str | None = None,
    batch_size: int = 4,
) -> pd.DataFrame:
    """Segment each image; write ``<stem>_mask.png``, ``<stem>_overlay.png`` and ``predictions.csv``; one
    table row per input, in order (see the module doc).

    ``checkpoint``: a ``.pth``, a run folder or an exported ``.onnx``. ``images``: files or folders.
    The mask is, in this order of precedence: ``p > threshold`` when ``threshold`` is given; the run's
    post-processing tuned on val when ``postprocess`` and the run has one; the model's own decision
    (argmax, i.e. 0.5 for two classes, or ``decode_head.threshold`` for a sigmoid head). The line saying
    which is printed. ``area_cm2`` needs the DICOM's PixelSpacing (or ImagerPixelSpacing); a row whose
    input could not be read has its ``error`` and no prediction.
    """
    from helpers.modeling.export import ONNX_SUFFIX, load_onnx

    images = collect_inputs(images)
    stems = [image.stem for image in images]
    repeated = sorted({stem for stem in stems if stems.count(stem) > 1})
    if repeated:
        raise ValueError(f"several inputs share a file stem, their outputs would collide: {repeated}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    if Path(checkpoint).suffix == ONNX_SUFFIX:
        onnx_model = load_onnx(checkpoint)
        size, own_threshold, maps = onnx_model.size, onnx_model.threshold, onnx_model.probability_maps
        tuned = onnx_model.postprocess
    else:
        model = load_model(checkpoint, config, device)
        size, own_threshold = model.size, model.threshold
        maps = partial(probability_maps, model)
        tuned = find_tuned_postprocess(checkpoint, config) if postprocess and threshold is None else None
    if threshold is not None:
        tuned, fixed, message = None, PostProcess(float(threshold), 0, 0), f"post-processing: none, probability > {threshold:g} (given)"
    elif postprocess and tuned is not None:
        fixed, message = None, tuned.describe()
    else:
        tuned, fixed = None, PostProcess(own_threshold, 0, 0)
        message = f"post-processing: none, the model's own decision (probability > {own_threshold:g})"
    print(message)
    out_dir = Path(out_dir)
    rows = []
    with tqdm(total=len(images), desc="predict", disable=not images) as bar:
        for start in range(0, len(images), batch_size):
            read = []
            for path in images[start:start + batch_size]:
                try:
                    read.append((path, *read_radiograph(path)))
                except (OSError, ValueError) as err:  # DicomError is a ValueError; each names the file
                    rows.append({"input": str(path), "pneumothorax": None, "error": str(err)})
                    bar.update(1)
            if not read:
                continue
            resized = [cv2.resize(image, size, interpolation=cv2.INTER_AREA) for _, image, _ in read]
            for (path, image, spacing), prob in zip(read, maps(resized)):
                height, width = image.shape
                prob = cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
                mask = apply_postprocess(prob, tuned.for_shape(height, width) if tuned is not None else fixed)
                area = int(mask.sum())
                mask_path = out_dir / f"{path.stem}_mask.png"
                overlay_path = out_dir / f"{path.stem}_overlay.png"
                _write_png(mask_path, mask.astype(np.uint8) * 255)
                _write_png(overlay_path, cv2.cvtColor(overlay(image, None, mask), cv2.COLOR_RGB2BGR))
                rows.append({"input": str(path), "mask_path": str(mask_path), "overlay_path": str(overlay_path),
                             "width": width, "height": height, "predicted_area": area,
                             "area_cm2": area * spacing[0] * spacing[1] / 100.0 if spacing else np.nan,
                             "pneumothorax": area > 0, "max_prob": float(prob.max()), "error": ""})
                bar.update(1)
    order = {str(path): index for index, path in enumerate(images)}
    table = pd.DataFrame(sorted(rows, key=lambda row: order[row["input"]]), columns=COLUMNS)
    table["error"] = table["error"].fillna("")
    atomic_write_text(out_dir / PREDICTIONS_FILE, table.to_csv(index=False))
    return table
