"""A prepared folder (02_prepare's output) as its readers see it: file names, its pairs with their patients,
and its manifest as the one source of the folder's image size and split mode.

03_train and 04_evaluate call :func:`check_prepared` before any work, so that a missing folder or one of
another size stops at once with one sentence naming what is missing and the 02_prepare command that makes it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from helpers.core import paths
from helpers.core.fileio import CorruptFileError, read_json

MANIFEST_FILE = "manifest.json"
LABELS_FILE = "labels.csv"
NOTEBOOK = "notebooks/02_prepare.ipynb"
FOLD_SPLIT_GLOB = "fold*_*.txt"  # every fold_split_file
DEFAULT_SPLIT_MODE = "patient"  # 02_prepare's default: no patient on both sides of a split (see the README)
FOLDER_NAME = re.compile(r"^(?P<mode>[a-z]+)-(?P<size>\d+)$")  # paths.prepared_dir's <split_mode>-<img_size>


def fold_split_file(fold: int, part: str) -> str:
    """The split file of one fold that 02_prepare writes with ``folds=K``:
    ``fold<k>_train.txt`` / ``fold<k>_val.txt``."""
    if part not in ("train", "val"):
        raise ValueError(f"a fold has a train and a val part, not {part!r}")
    return f"fold{int(fold)}_{part}.txt"


class PreparedDataError(FileNotFoundError):
    """No prepared data where it was expected, or data of another size than the config's."""


@dataclass(frozen=True)
class PreparedData:
    """A prepared folder: where it is, its image size (square) and split mode, and its whole manifest."""

    root: Path
    img_size: int
    split_mode: str
    manifest: dict


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (as a user types it there), else absolute."""
    try:
        return str(path.relative_to(paths.REPO_ROOT))
    except ValueError:
        return str(path)


def prepare_command(root: Path | str, img_size: int, split_mode: str = DEFAULT_SPLIT_MODE) -> str:
    """The papermill command that writes the prepared folder ``root`` at ``img_size``."""
    root = paths.resolve(root)
    raw = paths.DEMO_DIR if paths.DEMO_DIR in root.parents else paths.RAW_DIR
    parts = [
        "papermill",
        NOTEBOOK,
        "outputs/reports/02_prepare.ipynb",
        "-p",
        "raw_root",
        _shown(raw),
        "-p",
        "prepared_root",
        _shown(root),
        "-p",
        "img_size",
        str(img_size),
        "-p",
        "split_mode",
        split_mode,
    ]
    return " ".join(shlex.quote(part) for part in parts)


def remake_advice(root: Path | str) -> str:
    """What re-makes the prepared folder ``root``'s files: 02_prepare into it (the command, when the folder's
    name says its size)."""
    root = paths.resolve(root)
    match = FOLDER_NAME.match(root.name)
    if not match:
        return f"02_prepare writes it: re-run 02_prepare with prepared_root={_shown(root)}"
    return f"02_prepare writes it: re-run 02_prepare, e.g. `{prepare_command(root, int(match['size']), match['mode'])}`"


def read_prepared(root: Path | str) -> PreparedData:
    """The prepared folder ``root`` (relative paths from the repository root) as its manifest describes it; a
    manifest that does not read back raises :class:`helpers.core.fileio.CorruptFileError` naming it and the
    02_prepare command that re-makes it."""
    root = paths.resolve(root)
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise PreparedDataError(f"{manifest_path}: no prepared data here (02_prepare writes it)")
    remedy = remake_advice(root)
    manifest = read_json(manifest_path, remedy)
    parameters = manifest.get("parameters")
    if not isinstance(parameters, dict) or "img_size" not in parameters:
        raise CorruptFileError(f"{manifest_path}: no parameters.img_size (not a 02_prepare manifest); {remedy}")
    return PreparedData(
        root=root,
        img_size=int(parameters["img_size"]),
        split_mode=str(parameters.get("split_mode", "official")),
        manifest=manifest,
    )


def check_prepared(root: Path | str, img_size: int, larger_ok: bool = False) -> PreparedData:
    """:func:`read_prepared`, and the data's size must be ``img_size`` (the config's), or at least that with
    ``larger_ok`` (04 scoring a model against finer masks, as the seed scored 512 models on the 1024 masks);
    else one sentence saying what is wrong and the 02_prepare command that makes the right data."""
    root = paths.resolve(root)
    match = FOLDER_NAME.match(root.name)
    split_mode = match["mode"] if match else DEFAULT_SPLIT_MODE
    try:
        data = read_prepared(root)
    except PreparedDataError:
        raise PreparedDataError(
            f"No prepared data in {root} (no {MANIFEST_FILE}): run 02_prepare first, e.g. "
            f"`{prepare_command(root, img_size, split_mode)}`."
        ) from None
    if data.img_size != img_size and not (larger_ok and data.img_size > img_size):
        raise PreparedDataError(
            f"The config trains at {img_size}x{img_size} but {root} holds {data.img_size}x{data.img_size} data "
            f"(its {MANIFEST_FILE}): pass img_size={data.img_size}, or prepare {img_size}x{img_size} data with "
            f"`{prepare_command(root.with_name(f'{data.split_mode}-{img_size}'), img_size, data.split_mode)}`."
        )
    return data


def read_labels(root: Path | str, needed_by: str = "this step") -> pd.DataFrame:
    """A prepared folder's ``labels.csv`` (one row per pair: name, split, fold, has_pneumo, patient, fg_pixels,
    pixel_hash, ...), the only reader of that file; a missing one names ``needed_by`` and 02_prepare."""
    path = paths.resolve(root) / LABELS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {needed_by} needs the {LABELS_FILE} that 02_prepare writes")
    return pd.read_csv(path, dtype={"name": str, "pixel_hash": str, "patient": str})


def positive_names(root: Path | str, needed_by: str = "this step") -> set[str]:
    """The names of the prepared pairs whose mask has pneumothorax pixels."""
    labels = read_labels(root, needed_by)
    return set(labels.loc[labels["fg_pixels"] > 0, "name"])


def prepared_pairs(root: Path | str) -> pd.DataFrame:
    """The prepared pairs with their paths: ``labels.csv`` plus ``image_path`` and ``mask_path`` columns
    (relative ``root`` from the repository root)."""
    root = paths.resolve(root)
    labels = read_labels(root, "reading the prepared pairs")
    labels["image_path"] = [
        str(root / "images" / s / f"{n}.png") for s, n in zip(labels["split"], labels["name"], strict=True)
    ]
    labels["mask_path"] = [
        str(root / "masks" / s / f"{n}.png") for s, n in zip(labels["split"], labels["name"], strict=True)
    ]
    return labels
