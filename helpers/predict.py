"""Segment new radiographs with a trained model: ``python -m helpers predict --checkpoint MODEL INPUTS...``.

``MODEL`` is a checkpoint (``.pth`` or a run folder) or an exported ``.onnx`` (run through onnxruntime).
``INPUTS`` are files or folders of PNG, JPEG and DICOM files, mixed. Each input is converted to 8-bit
grayscale like the training data (DICOM through :mod:`helpers.data.dicom`), resized to the model's input size
as 02_prepare does (area interpolation), and fed to the model as the 3-channel image mmseg makes of a
grayscale PNG. The pneumothorax probability is resized back to the input's size (bilinear) and
post-processed: by default with the scheme that won on val for the run (04_evaluate; ``postprocess``
chooses ``triplet``, ``dual`` or ``none``), its areas scaled to the image's size; else with the model's own
decision. ``<name>_mask.png`` ({0, 255}, the input's size), ``<name>_overlay.png`` and ``predictions.csv``
are written to ``out_dir``, where ``<name>`` is a file's stem when given directly, and its path below the
folder given, without the suffix, for a folder's entries (``series1/IM000001`` for a PACS export's
``series1/IM000001.dcm``): equal file names in two sub-folders never collide (:func:`collect_inputs`).

Every file given, and every entry of a folder given and of its sub-folders, has one row in ``predictions.csv``,
its ``status``: ``predicted``; ``error`` (unreadable: any decoder error, named with the file, in ``error``);
``skipped: not an image`` (neither PNG/JPEG by name or signature nor DICOM); ``skipped: dangling link``,
``skipped: symlink loop`` or ``skipped: not a file`` (a FIFO, socket or device: never opened), the reason in
``error``; ``refused`` (``strict`` and warnings); or ``not done`` (after a fatal error such as a full disk,
which stops the run: the table is still written for what was done, and no mask or overlay is left without its
row). Inputs the model was not made for are predicted but flagged in ``warnings`` (see :func:`input_warnings`).
"""

from __future__ import annotations

import errno
import stat
from collections import Counter
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from helpers.core.fileio import atomic_write_text
from helpers.core.progress import tqdm
from helpers.data.dicom import is_dicom, read_dicom
from helpers.data.images import IMAGE_SUFFIXES, ImageTooLarge, overlay, read_gray8, write_png
from helpers.data.rle import encode_siim
from helpers.modeling.inference import load_model, probability_maps
from helpers.postprocessing import PostProcess, find_tuned_postprocess, scheme_name

COLUMNS = [
    "input",
    "status",
    "mask_path",
    "overlay_path",
    "width",
    "height",
    "predicted_area",
    "area_cm2",
    "pneumothorax",
    "max_prob",
    "warnings",
    "error",
]
PREDICTIONS_FILE = "predictions.csv"
PREDICTED, ERROR, SKIPPED, REFUSED, NOT_DONE = "predicted", "error", "skipped: not an image", "refused", "not done"
# directory entries that name no file to read (the reason, with the path, in ``error``)
SKIPPED_LINK, SKIPPED_LOOP, SKIPPED_SPECIAL = "skipped: dangling link", "skipped: symlink loop", "skipped: not a file"
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
RADIOGRAPH_MODALITIES = ("CR", "DX")
FRONTAL_VIEWS = ("PA", "AP")
CHEST_PARTS = ("CHEST", "THORAX", "LUNG")
DX_FOR_PROCESSING_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1.1"
MIN_SIDE = 256
# Pixels an image may have (predict_images' max_pixels, --max-pixels): 50 MP, about 7,000 x 7,000, above the
# largest flat-panel detectors (4,300 x 4,300 is 18.5 MP). predict holds about 20 bytes a pixel of an image at
# its peak (the probability map at the input's size, the mask, the uint8 overlay): about 1 GB at the limit.
MAX_PIXELS = 50_000_000


class NoInputsError(ValueError):
    """Predict was given nothing to read (empty folders, no files)."""


@dataclass(frozen=True)
class Entry:
    """One input of a prediction run: its path, the name its outputs take (``<name>_mask.png``: the path below
    the folder it was found in, without its suffix; a file given directly, its stem) and, for a directory entry
    that is no file to read, why it is skipped."""

    path: Path
    name: str
    skipped: str | None = None  # SKIPPED_LINK, SKIPPED_LOOP or SKIPPED_SPECIAL
    why: str = ""


def _unreadable_entry(path: Path) -> tuple[str, str] | None:
    """(status, why) for a directory entry that names no file to read: a dangling link, a symlink loop, a FIFO,
    socket or device; None for a file (or a link to one) and a folder."""
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (RuntimeError, OSError) as err:  # RuntimeError or ELOOP: a loop (by the Python version)
            if isinstance(err, RuntimeError) or err.errno == errno.ELOOP:
                return SKIPPED_LOOP, f"{path}: a symbolic link loop (to {path.readlink()}, which leads back)"
            return SKIPPED_LINK, f"{path}: a symbolic link to {path.readlink()}, which does not exist"
        path = target
    try:
        mode = path.stat().st_mode
    except OSError as err:
        return SKIPPED_SPECIAL, f"{path}: cannot be examined ({err.strerror})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return SKIPPED_SPECIAL, f"{path}: {kind}, not a regular file"


def _walk(folder: Path, below: Path, seen: set[Path], entries: list[Entry]) -> None:
    """Every entry of ``folder`` and its sub-folders, sorted by name, named by its path below ``below``; a link
    to a folder already walked (an ancestor: a loop) is a skipped entry, not walked again."""
    for path in sorted(folder.iterdir()):
        name = path.relative_to(below).with_suffix("").as_posix()
        problem = _unreadable_entry(path)
        if problem:
            entries.append(Entry(path, name, *problem))
        elif path.is_dir():
            real = path.resolve()
            if real in seen:
                entries.append(Entry(path, name, SKIPPED_LOOP, f"{path}: a link to {real}, a folder it is in (a loop)"))
                continue
            _walk(path, below, seen | {real}, entries)
        else:
            entries.append(Entry(path, name))


def _unique_names(entries: list[Entry]) -> list[Entry]:
    """Entries whose output names are all different: inputs that would share one (``x.png`` beside ``x.jpg``,
    one file given twice, files of the same name given from two folders) keep their suffix in it
    (``x_png``), then a count (``x_png_2``)."""
    count = Counter(e.name for e in entries)
    named = [
        replace(e, name=f"{e.name}_{e.path.suffix.lstrip('.')}") if count[e.name] > 1 and e.path.suffix else e
        for e in entries
    ]
    taken: set[str] = set()
    result = []
    for entry in named:
        name, n = entry.name, 1
        while name in taken:
            n += 1
            name = f"{entry.name}_{n}"
        taken.add(name)
        result.append(replace(entry, name=name))
    return result


def collect_inputs(inputs: list[str | Path]) -> list[Entry]:
    """Every input, each to have a row: a file as given (its outputs named by its stem); a folder gives every
    entry in it and in its sub-folders, sorted (PACS exports: ``series1/IM000001.dcm``), each named by its
    path below the folder (outputs ``series1/IM000001_mask.png``) so that equal file names in two folders
    never collide; dangling links, symlink loops, FIFOs, sockets and devices are skipped entries with the
    reason. Raises :class:`NoInputsError` when there is no entry at all."""
    entries: list[Entry] = []
    for item in map(Path, inputs):
        problem = _unreadable_entry(item) if item.is_symlink() or item.exists() else None
        if problem:
            entries.append(Entry(item, item.stem, *problem))
        elif item.is_dir():
            _walk(item, item, {item.resolve()}, entries)
        else:
            entries.append(Entry(item, item.stem))
    if not entries:
        raise NoInputsError(
            f"no input files: {', '.join(map(str, inputs)) or 'nothing'} "
            f"{'holds' if len(inputs) == 1 else 'hold'} no file to predict"
        )
    return _unique_names(entries)


def input_kind(path: Path) -> str:
    """``image`` (PNG/JPEG by suffix or signature), ``dicom`` (:func:`helpers.data.dicom.is_dicom`), ``missing``,
    or ``other`` (to be skipped)."""
    if not path.is_file():
        return "missing"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    if is_dicom(path):
        return "dicom"
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError:
        return "image"  # unreadable: reading it gives the named error
    return "image" if head.startswith(IMAGE_SIGNATURES) else "other"


def input_warnings(
    gray: np.ndarray, spacing: tuple[float, float] | None, attributes: dict[str, str] | None
) -> list[str]:
    """Why an input may be outside what the model was made for (frontal chest radiographs):

    - any image under 256 px on a side;
    - DICOM only (``attributes`` from :func:`helpers.data.dicom.describe`; None for PNG/JPEG, whose files say
      nothing of this): a Modality other than CR/DX, DX "FOR PROCESSING" (raw detector data), a ViewPosition
      other than PA/AP, a BodyPartExamined that is not the chest, and a missing pixel spacing
      (``area_cm2`` then empty).
    """
    found = []
    height, width = gray.shape[:2]
    if min(height, width) < MIN_SIDE:
        found.append(f"small image {width}x{height} (under {MIN_SIDE} px on a side)")
    if attributes is None:
        return found
    modality = attributes.get("Modality", "").upper()
    if modality not in RADIOGRAPH_MODALITIES:
        found.append(f"modality {modality or 'missing'}, not a radiograph (CR/DX)")
    elif modality == "DX" and (
        attributes.get("PresentationIntentType", "").upper() == "FOR PROCESSING"
        or attributes.get("SOPClassUID", "") == DX_FOR_PROCESSING_SOP_CLASS
    ):
        found.append("DX FOR PROCESSING (raw detector data, not for presentation)")
    view = attributes.get("ViewPosition", "").upper()
    if view and view not in FRONTAL_VIEWS:
        found.append(f"view position {view}, not frontal (PA/AP)")
    part = attributes.get("BodyPartExamined", "").upper()
    if part and not any(chest in part for chest in CHEST_PARTS):
        found.append(f"body part {part}, not the chest")
    if spacing is None:
        found.append("no pixel spacing (area_cm2 left empty)")
    return found


def read_input(
    path: Path, kind: str, max_pixels: int | None = MAX_PIXELS
) -> tuple[np.ndarray, tuple[float, float] | None, list[str]]:
    """(8-bit gray image, pixel spacing or None, warnings) of one PNG/JPEG or DICOM input. An image of more
    than ``max_pixels`` raises :class:`helpers.data.images.ImageTooLarge` (before decoding when its header
    says its size); any other failure, from any decoder, is raised as a ValueError naming the file."""
    try:
        if kind == "missing":
            raise FileNotFoundError(f"{path}: no such file")
        if kind == "dicom":
            image = read_dicom(path, max_pixels)
            return image.gray8, image.spacing_mm, input_warnings(image.gray8, image.spacing_mm, image.attributes)
        gray = read_gray8(path, max_pixels)
        return gray, None, input_warnings(gray, None, None)
    except ImageTooLarge:
        raise
    except MemoryError as err:  # a decoder's buffer: this file's problem, not the run's
        raise ValueError(f"{path}: not enough memory to decode it ({err or 'MemoryError'})") from err
    except Exception as err:  # a decoder's own exception (cv2.error, RuntimeError, ...) is this file's error
        message = str(err)
        if str(path) not in message:
            message = f"{path}: {type(err).__name__}: {message}"
        raise ValueError(message) from err


def summary_line(table: pd.DataFrame) -> str:
    """One line counting every input (each file and directory entry) and each outcome: predicted (with
    warnings), errors, refused, each kind of skipped, not done."""
    counts = table["status"].value_counts()
    warned = int(((table["status"] == PREDICTED) & (table["warnings"] != "")).sum())
    parts = [
        f"{len(table)} files: {counts.get(PREDICTED, 0)} predicted ({warned} with warnings)",
        f"{counts.get(ERROR, 0)} errors",
    ]
    shown = (REFUSED, SKIPPED, SKIPPED_LINK, SKIPPED_LOOP, SKIPPED_SPECIAL, NOT_DONE)
    parts += [f"{counts[status]} {status}" for status in shown if counts.get(status, 0)]
    return ", ".join(parts)


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
    strict: bool = False,
    rle: bool = False,
    max_pixels: int | None = MAX_PIXELS,
) -> pd.DataFrame:
    """Segment each image; write ``<name>_mask.png``, ``<name>_overlay.png`` and ``predictions.csv``; one
    table row per input, in order (see the module doc), and print :func:`summary_line`.

    ``checkpoint``: a ``.pth``, a run folder or an exported ``.onnx``. ``images``: files or folders.
    The mask is, in this order of precedence: ``p > threshold`` when ``threshold`` is given; the run's
    scheme tuned on val when the run has one: the val winner (``postprocess='winner'``), or ``'triplet'`` or
    ``'dual'`` (``'none'``: no post-processing); the model's own decision
    (argmax, i.e. 0.5 for two classes, or ``decode_head.threshold`` for a sigmoid head). The line saying
    which is printed. ``area_cm2`` needs the DICOM's PixelSpacing (or ImagerPixelSpacing). ``strict``
    refuses the inputs :func:`input_warnings` flags instead of predicting them; ``rle`` adds the column
    ``rle``, the mask in the SIIM release's form (:func:`helpers.data.rle.encode_siim`). An image of more than
    ``max_pixels`` pixels (:data:`MAX_PIXELS`; None: no limit) is ``refused`` with its size and the limit,
    before it is decoded when its header (PNG, JPEG, DICOM) says its size, so that one image cannot take the
    machine's memory.

    Raises :class:`NoInputsError` when there is no file; a fatal error (a full disk, a failing model) is raised
    after ``predictions.csv`` is written for what was done.
    """
    from helpers.modeling.export import ONNX_SUFFIX, load_onnx

    entries = collect_inputs(images)
    images = [entry.path for entry in entries]
    kinds = [entry.skipped or input_kind(entry.path) for entry in entries]
    choice = scheme_name(postprocess)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1 (or None: no limit), not {max_pixels}")
    if Path(checkpoint).suffix == ONNX_SUFFIX:
        onnx_model = load_onnx(checkpoint)
        size, own_threshold, maps = onnx_model.size, onnx_model.threshold, onnx_model.probability_maps
        tuned = onnx_model.postprocess if choice != "none" else None
        if tuned is not None and choice not in ("winner", tuned.scheme.name):
            raise ValueError(
                f"{checkpoint}: its side-car holds the {tuned.scheme.name} post-processing, not {choice} "
                f"(export again with --postprocess {postprocess})"
            )
    else:
        model = load_model(checkpoint, device=device, config=config)
        size, own_threshold = model.size, model.threshold
        maps = partial(probability_maps, model)
        tuned = find_tuned_postprocess(model.run_dir, model.checkpoint, choice) if threshold is None else None
    if threshold is not None:
        tuned, fixed, message = (
            None,
            PostProcess(float(threshold), 0, 0),
            f"post-processing: none, probability > {threshold:g} (given)",
        )
    elif tuned is not None:
        fixed, message = None, tuned.describe()
    else:
        tuned, fixed = None, PostProcess(own_threshold, 0, 0)
        message = f"post-processing: none, the model's own decision (probability > {own_threshold:g})"
    print(message)
    out_dir = Path(out_dir)
    rows: dict[int, dict] = {}
    written: list[Path] = []
    todo = [(index, path, kind) for index, (path, kind) in enumerate(zip(images, kinds, strict=True))]
    for index, path, kind in todo:
        if kind == "other":
            rows[index] = {"input": str(path), "status": SKIPPED}
        elif entries[index].skipped:
            rows[index] = {"input": str(path), "status": entries[index].skipped, "error": entries[index].why}
    todo = [item for item in todo if item[2] in ("image", "dicom", "missing")]
    try:
        with tqdm(total=len(todo), desc="predict", disable=not todo) as bar:
            for start in range(0, len(todo), batch_size):
                read = []
                for index, path, kind in todo[start : start + batch_size]:
                    try:
                        image, spacing, warnings = read_input(path, kind, max_pixels)
                    except ImageTooLarge as err:
                        rows[index] = {"input": str(path), "status": REFUSED, "error": str(err)}
                        bar.update(1)
                        continue
                    except ValueError as err:
                        rows[index] = {"input": str(path), "status": ERROR, "error": str(err)}
                        bar.update(1)
                        continue
                    if strict and warnings:
                        rows[index] = {
                            "input": str(path),
                            "status": REFUSED,
                            "warnings": "; ".join(warnings),
                            "error": f"{path}: refused (strict): {'; '.join(warnings)}",
                        }
                        bar.update(1)
                        continue
                    read.append((index, path, image, spacing, warnings))
                if not read:
                    continue
                resized = [cv2.resize(image, size, interpolation=cv2.INTER_AREA) for _, _, image, _, _ in read]
                for (index, path, image, spacing, warnings), prob in zip(read, maps(resized), strict=True):
                    rows[index] = _write_prediction(
                        path, entries[index].name, image, spacing, warnings, prob, out_dir, written, tuned, fixed, rle
                    )
                    bar.update(1)
    except BaseException as fatal:  # a full disk, a failing model, Ctrl-C: the table for what was done, no orphans
        for index, path, _ in todo:
            rows.setdefault(
                index,
                {
                    "input": str(path),
                    "status": NOT_DONE,
                    "error": f"{path}: not predicted, the run stopped ({type(fatal).__name__}: {fatal})",
                },
            )
        try:
            _write_table(images, rows, out_dir, rle)
        except BaseException:
            for output in written:
                output.unlink(missing_ok=True)
            raise
        raise
    table = _write_table(images, rows, out_dir, rle)
    print(summary_line(table))
    return table


def _write_prediction(
    path: Path,
    name: str,
    image: np.ndarray,
    spacing,
    warnings: list[str],
    prob: np.ndarray,
    out_dir: Path,
    written: list[Path],
    tuned,
    fixed,
    rle: bool,
) -> dict:
    """Post-process one probability map, write its mask and overlay (both or neither), return its row."""
    height, width = image.shape
    prob = cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
    mask = (tuned.for_shape(height, width) if tuned is not None else fixed).apply(prob)
    area = int(mask.sum())
    mask_path = out_dir / f"{name}_mask.png"
    overlay_path = out_dir / f"{name}_overlay.png"
    try:
        write_png(mask_path, mask.astype(np.uint8) * 255)
        written.append(mask_path)
        write_png(overlay_path, overlay(image, None, mask)[:, :, ::-1])  # BGR, as OpenCV encodes
        written.append(overlay_path)
    except BaseException:
        mask_path.unlink(missing_ok=True)
        raise
    row = {
        "input": str(path),
        "status": PREDICTED,
        "mask_path": str(mask_path),
        "overlay_path": str(overlay_path),
        "width": width,
        "height": height,
        "predicted_area": area,
        "area_cm2": area * spacing[0] * spacing[1] / 100.0 if spacing else np.nan,
        "pneumothorax": area > 0,
        "max_prob": float(prob.max()),
        "warnings": "; ".join(warnings),
        "error": "",
    }
    if rle:
        row["rle"] = encode_siim(mask)
    return row


def _write_table(images: list[Path], rows: dict[int, dict], out_dir: Path, rle: bool) -> pd.DataFrame:
    """``predictions.csv``: one row per input, in the inputs' order."""
    columns = COLUMNS + (["rle"] if rle else [])
    table = pd.DataFrame([rows[index] for index in range(len(images)) if index in rows], columns=columns)
    for column in ("warnings", "error") + (("rle",) if rle else ()):
        table[column] = table[column].fillna("")
    atomic_write_text(out_dir / PREDICTIONS_FILE, table.to_csv(index=False))
    return table
