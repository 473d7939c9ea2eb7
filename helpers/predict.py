"""Segment new radiographs with a trained model: ``python -m helpers predict --checkpoint MODEL INPUTS...``.

``MODEL`` is a checkpoint (``.pth`` or a run folder) or an exported ``.onnx`` (run through onnxruntime).
``INPUTS`` are files or folders of PNG, JPEG and DICOM files, mixed. Each input is converted to 8-bit
grayscale like the training data (DICOM through :mod:`helpers.dicom`), resized to the model's input size
as 02_prepare does (area interpolation), and fed to the model as the 3-channel image mmseg makes of a
grayscale PNG. The pneumothorax probability is resized back to the input's size (bilinear) and
post-processed: by default with the scheme that won on val for the run (04_evaluate; ``postprocess``
chooses ``triplet``, ``dual`` or ``none``), its areas scaled to the image's size; else with the model's own
decision. ``<stem>_mask.png`` ({0, 255}, the input's size),
``<stem>_overlay.png`` and ``predictions.csv`` are written to ``out_dir``; an input that cannot be read
gets its error in the table and the others go on.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from helpers.dicom import is_dicom
from helpers.fileio import atomic_write_text
from helpers.images import IMAGE_SUFFIXES, overlay, read_radiograph, write_png
from helpers.modeling.inference import load_model, probability_maps
from helpers.postprocessing import PostProcess, find_tuned_postprocess, scheme_name
from helpers.progress import tqdm

COLUMNS = ["input", "mask_path", "overlay_path", "width", "height", "predicted_area", "area_cm2", "pneumothorax",
           "max_prob", "error"]
PREDICTIONS_FILE = "predictions.csv"


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


def predict_images(
    checkpoint: str | Path,
    images: list[str | Path],
    out_dir: str | Path,
    *,
    config: str | Path | None = None,
    threshold: float | None = None,
    postprocess: str = "winner",
    device: str | None = None,
    batch_size: int = 4,
) -> pd.DataFrame:
    """Segment each image; write ``<stem>_mask.png``, ``<stem>_overlay.png`` and ``predictions.csv``; one
    table row per input, in order (see the module doc).

    ``checkpoint``: a ``.pth``, a run folder or an exported ``.onnx``. ``images``: files or folders.
    The mask is, in this order of precedence: ``p > threshold`` when ``threshold`` is given; the run's
    scheme tuned on val when the run has one: the val winner (``postprocess='winner'``), or ``'triplet'`` or
    ``'dual'`` (``'none'``: no post-processing); the model's own decision
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
    choice = scheme_name(postprocess)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    if Path(checkpoint).suffix == ONNX_SUFFIX:
        onnx_model = load_onnx(checkpoint)
        size, own_threshold, maps = onnx_model.size, onnx_model.threshold, onnx_model.probability_maps
        tuned = onnx_model.postprocess if choice != "none" else None
        if tuned is not None and choice not in ("winner", tuned.scheme.name):
            raise ValueError(f"{checkpoint}: its side-car holds the {tuned.scheme.name} post-processing, not {choice} "
                             f"(export again with --postprocess {postprocess})")
    else:
        model = load_model(checkpoint, device=device, config=config)
        size, own_threshold = model.size, model.threshold
        maps = partial(probability_maps, model)
        tuned = find_tuned_postprocess(model.run_dir, model.checkpoint, choice) if threshold is None else None
    if threshold is not None:
        tuned, fixed, message = None, PostProcess(float(threshold), 0, 0), f"post-processing: none, probability > {threshold:g} (given)"
    elif tuned is not None:
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
                mask = (tuned.for_shape(height, width) if tuned is not None else fixed).apply(prob)
                area = int(mask.sum())
                mask_path = out_dir / f"{path.stem}_mask.png"
                overlay_path = out_dir / f"{path.stem}_overlay.png"
                write_png(mask_path, mask.astype(np.uint8) * 255)
                write_png(overlay_path, cv2.cvtColor(overlay(image, None, mask), cv2.COLOR_RGB2BGR))
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
