"""The Kaggle dataset's layout: find it, read both CSVs, join them with the files, validate the pairs.

Layout (``siim-acr-pneumothorax/``): ``png_images/NAME``, ``png_masks/NAME`` (same name, 1024x1024,
mode L, masks {0, 255}), ``stage_1_train_images.csv`` and ``stage_1_test_images.csv`` with the columns
``new_filename,ImageId,has_pneumo``. The raw folder is only ever read.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from helpers.core import paths
from helpers.core.data_profile import DEMO, choose_profile
from helpers.core.parallel import parallel_map
from helpers.data import patients
from helpers.data.siim_layout import not_converted_message

log = logging.getLogger(__name__)

IMAGES_FOLDER = "png_images"
MASKS_FOLDER = "png_masks"
CSV_FILES = {"train": "stage_1_train_images.csv", "test": "stage_1_test_images.csv"}
CSV_COLUMNS = ["new_filename", "ImageId", "has_pneumo"]
SHOW_FIRST = 5


class RawDataError(ValueError):
    """A problem in the raw dataset; the message names each file and its problem."""

    def __init__(self, problems: list[tuple[Path | str, str]]):
        self.problems = problems
        lines = [f"{path}: {problem}" for path, problem in problems[:20]]
        if len(problems) > 20:
            lines.append(f"... and {len(problems) - 20} more problems")
        super().__init__("\n".join(lines))

    def __reduce__(self):
        """Pickle by the problems list, so the error crosses from a worker process to the parent intact."""
        return type(self), (self.problems,)


@dataclass
class RawIndex:
    """The pairs present under a dataset root, joined with the CSVs and the patient table.

    ``pairs`` has one row per present pair: ``name, image_id, has_pneumo, stage, patient, follow_up,
    image_path, mask_path``. ``missing`` holds the CSV rows whose files are absent (a partial download).
    ``listed`` holds every CSV row with its patient, files present or not (see :func:`read_listed`).
    """

    root: Path
    pairs: pd.DataFrame
    missing: pd.DataFrame = field(default_factory=pd.DataFrame)
    listed: pd.DataFrame = field(default_factory=pd.DataFrame)

    def describe(self) -> str:
        """One paragraph for a report."""
        text = f"{len(self.pairs)} image/mask pairs under {self.root}"
        if len(self.missing):
            first = ", ".join(self.missing["name"].head(SHOW_FIRST))
            text += f"; {len(self.missing)} CSV rows have no files here (first: {first})"
        return text


def find_dataset_root(root: Path | str = paths.RAW_DIR) -> Path:
    """Return the folder holding ``png_images/``, ``png_masks/`` and the CSVs.

    ``root`` may be that folder or its parent (``data/raw/`` holding ``siim-acr-pneumothorax/``).
    """
    root = paths.resolve(root)
    for candidate in (root, root / paths.KAGGLE_FOLDER):
        if (candidate / IMAGES_FOLDER).is_dir() and (candidate / MASKS_FOLDER).is_dir():
            return candidate
    release = not_converted_message(root) if root.is_dir() else None
    if release is not None:
        raise FileNotFoundError(release)
    raise FileNotFoundError(
        f"{root}: no Kaggle pneumothorax layout here (expected {IMAGES_FOLDER}/ and {MASKS_FOLDER}/ in it "
        f"or in {root / paths.KAGGLE_FOLDER}).\n{download_instructions()}"
    )


@dataclass(frozen=True)
class RawChoice:
    """The raw data a notebook reads, where 02_prepare writes from it by default, and why (``note``)."""

    root: Path
    prepared_parent: Path
    note: str | None = None


def choose_raw_root(raw_root: Path | str | None = None) -> RawChoice:
    """``raw_root`` as given (relative to the repository root); None means ``data/raw``, or the demo data
    (``data/demo``, which ``make demo`` writes) when ``data/raw`` holds no Kaggle download and the demo does."""
    if raw_root is not None:
        return RawChoice(paths.resolve(raw_root), paths.PREPARED_DIR)

    def has_dataset(root: Path) -> bool:
        try:
            find_dataset_root(root)
        except FileNotFoundError:
            return False
        return True

    chosen, note = choose_profile(
        "raw data",
        paths.RAW_DIR / paths.KAGGLE_FOLDER,
        paths.DEMO_DIR,
        lambda: has_dataset(paths.RAW_DIR),
        lambda: has_dataset(paths.DEMO_DIR),
    )
    if chosen == DEMO:
        return RawChoice(paths.DEMO_DIR, paths.DEMO_PREPARED_DIR, note)
    return RawChoice(paths.RAW_DIR, paths.PREPARED_DIR)  # reading it raises with the download instructions when missing


def read_csvs(root: Path) -> pd.DataFrame:
    """Both stage_1 CSVs as one table: ``name, image_id, has_pneumo, stage``."""
    tables = []
    for stage, filename in CSV_FILES.items():
        csv_path = root / filename
        if not csv_path.is_file():
            raise RawDataError([(csv_path, "CSV file is missing")])
        try:
            table = pd.read_csv(csv_path, dtype={"new_filename": str, "ImageId": str})
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
            raise RawDataError([(csv_path, f"unreadable CSV ({err})")]) from err
        if list(table.columns) != CSV_COLUMNS:
            raise RawDataError([(csv_path, f"columns are {list(table.columns)}, expected {CSV_COLUMNS}")])
        bad_flags = table[~table["has_pneumo"].isin([0, 1])]
        if len(bad_flags):
            row = bad_flags.iloc[0]
            raise RawDataError([(csv_path, f"has_pneumo must be 0 or 1, is {row.has_pneumo!r} for {row.new_filename}")])
        table = table.rename(columns={"new_filename": "name", "ImageId": "image_id"})
        table["has_pneumo"] = table["has_pneumo"].astype(int)
        table["stage"] = stage
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    repeated = table[table["name"].duplicated(keep=False)]
    if len(repeated):
        raise RawDataError(
            [(root, f"file {name} is listed more than once in the CSVs") for name in repeated["name"].unique()]
        )
    return table


def find_csv_root(root: Path | str = paths.RAW_DIR) -> Path:
    """The folder holding the two CSVs: ``root`` or ``root/siim-acr-pneumothorax`` (no images needed)."""
    root = Path(root)
    for candidate in (root, root / paths.KAGGLE_FOLDER):
        if (candidate / CSV_FILES["train"]).is_file():
            return candidate
    raise FileNotFoundError(f"{root}: no {CSV_FILES['train']} here or in {root / paths.KAGGLE_FOLDER}")


def read_listed(root: Path | str = paths.RAW_DIR, patient_table: Path | str | None = None) -> pd.DataFrame:
    """Every row of both CSVs with its patient: ``name, image_id, has_pneumo, stage, patient, follow_up``.

    Needs only the CSVs. ``patient_table``: None for the table beside the CSVs if there, else the shipped
    one (:func:`helpers.data.patients.table_path`).
    """
    root = find_csv_root(root)
    return _with_patients(read_csvs(root), root, patient_table)


def _with_patients(table: pd.DataFrame, root: Path, patient_table: Path | str | None) -> pd.DataFrame:
    table_file = patients.table_path(root, patient_table)
    return patients.attach_patients(table, patients.read_patient_table(table_file), table_file)


def read_index(
    root: Path | str = paths.RAW_DIR, *, strict: bool = False, patient_table: Path | str | None = None
) -> RawIndex:
    """Join the CSVs with the files present and with the patient table (see :func:`read_listed`).

    Raises :class:`RawDataError` for an image without its mask (or the reverse) and for a PNG that no CSV
    names. CSV rows with neither file are reported as missing (a partial download) or, with ``strict``,
    raised.
    """
    root = find_dataset_root(root)
    table = _with_patients(read_csvs(root), root, patient_table)
    images = {p.name for p in (root / IMAGES_FOLDER).glob("*.png")}
    masks = {p.name for p in (root / MASKS_FOLDER).glob("*.png")}
    listed = set(table["name"])

    problems: list[tuple[Path | str, str]] = []
    for name in sorted(images - masks):
        problems.append((root / MASKS_FOLDER / name, "mask is missing for this image"))
    for name in sorted(masks - images):
        problems.append((root / IMAGES_FOLDER / name, "image is missing for this mask"))
    for name in sorted((images | masks) - listed):
        folder = IMAGES_FOLDER if name in images else MASKS_FOLDER
        problems.append((root / folder / name, "PNG is not named in either CSV"))
    present = table["name"].isin(images & masks)
    missing = table[~present & ~table["name"].isin(images | masks)].reset_index(drop=True)
    if strict and len(missing):
        problems.extend((root / IMAGES_FOLDER / name, "listed in the CSVs but absent") for name in missing["name"])
    if problems:
        raise RawDataError(problems)

    pairs = table[present].copy()
    pairs["image_path"] = [str(root / IMAGES_FOLDER / n) for n in pairs["name"]]
    pairs["mask_path"] = [str(root / MASKS_FOLDER / n) for n in pairs["name"]]
    pairs = pairs.sort_values(["stage", "name"], key=_natural_key).reset_index(drop=True)
    index = RawIndex(root=root, pairs=pairs, missing=missing, listed=table)
    if len(missing):
        log.warning("%s", index.describe())
    return index


def _natural_key(column: pd.Series) -> pd.Series:
    """Sort file names by their leading index (``10_train_0_`` after ``9_train_0_``)."""
    if column.name != "name":
        return column
    return column.map(lambda n: (int(n.split("_", 1)[0]) if n.split("_", 1)[0].isdigit() else -1, n))


@dataclass
class PairScan:
    """What one pass over an image/mask pair finds: statistics, and the problems (empty when valid)."""

    name: str
    width: int = 0
    height: int = 0
    image_mode: str = ""
    mask_mode: str = ""
    mask_values: tuple[int, ...] = ()
    fg_pixels: int = 0
    components: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)


def read_png(path: Path | str) -> tuple[np.ndarray, str]:
    """Decode a PNG fully (a truncated file raises); return the array and the PIL mode."""
    try:
        with Image.open(path) as image:
            mode = image.mode
            image.load()
            array = np.asarray(image)
    except (OSError, SyntaxError, ValueError) as err:
        raise RawDataError([(path, f"unreadable or truncated PNG ({err})")]) from err
    return array, mode


def decode_png(path: Path | str) -> np.ndarray:
    """Decode a PNG with OpenCV as stored (a truncated or corrupt file raises); faster than :func:`read_png`."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise RawDataError([(path, f"unreadable file ({err})")]) from err
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if array is None:
        raise RawDataError([(path, "unreadable or truncated PNG")])
    return array


def mask_problems(
    mask: np.ndarray, image_shape: tuple[int, ...], has_pneumo: int, mask_path: Path | str
) -> list[tuple[str, str]]:
    """The checks of one mask, shared by validation and prepare: a single channel, the image's size, values
    within {0, 255} or {0, 1}, and has_pneumo agreeing with it. Empty when the mask is valid."""
    mask_path = str(mask_path)
    if mask.ndim != 2:
        return [(mask_path, f"mask has {mask.shape[2]} channels, expected a single channel (L)")]
    if mask.shape != tuple(image_shape[:2]):
        return [
            (
                mask_path,
                f"mask size {mask.shape[1]}x{mask.shape[0]} differs from the image's {image_shape[1]}x{image_shape[0]}",
            )
        ]
    top = int(mask.max())  # valid values: every non-zero pixel equals the maximum, and that is 1 or 255
    if top not in (0, 1, 255) or (top and np.count_nonzero(mask) != np.count_nonzero(mask == top)):
        return [(mask_path, f"mask values {np.unique(mask).tolist()[:8]} are not within {{0, 255}} or {{0, 1}}")]
    if bool(top) != bool(has_pneumo):
        return [
            (mask_path, f"has_pneumo is {int(has_pneumo)} in the CSV but the mask is {'not empty' if top else 'empty'}")
        ]
    return []


def scan_pair(row: tuple[str, str, str, int]) -> PairScan:
    """Decode one pair, check it (:func:`mask_problems`) and measure the mask: area, connected regions."""
    name, image_path, mask_path, has_pneumo = row
    scan = PairScan(name=name)
    try:
        image, scan.image_mode = read_png(image_path)
        mask, scan.mask_mode = read_png(mask_path)
    except RawDataError as err:
        scan.problems.extend((str(p), msg) for p, msg in err.problems)
        return scan
    scan.height, scan.width = image.shape[:2]
    scan.problems = mask_problems(mask, image.shape, has_pneumo, mask_path)
    if scan.problems:
        return scan
    scan.mask_values = tuple(int(v) for v in np.unique(mask))
    foreground = (mask > 0).astype(np.uint8)
    scan.fg_pixels = int(foreground.sum())
    if scan.fg_pixels:
        scan.components = int(cv2.connectedComponents(foreground, connectivity=8)[0]) - 1
    return scan


def scan_pairs(pairs: pd.DataFrame, *, workers: int | None = None, desc: str = "scan pairs") -> pd.DataFrame:
    """Scan every pair in parallel; one row of statistics per pair (``problems`` empty when valid)."""
    rows = list(zip(pairs["name"], pairs["image_path"], pairs["mask_path"], pairs["has_pneumo"], strict=True))
    scans = parallel_map(scan_pair, rows, workers=workers, desc=desc)
    table = pd.DataFrame([scan.__dict__ for scan in scans])
    return pairs.reset_index(drop=True).join(table.drop(columns="name"))


def validate_dataset(
    root: Path | str = paths.RAW_DIR, *, strict: bool = False, workers: int | None = None
) -> pd.DataFrame:
    """Read the index and scan every pair; raise :class:`RawDataError` listing every problem found.

    Returns the per-pair statistics of :func:`scan_pairs` when the dataset is valid.
    """
    index = read_index(root, strict=strict)
    scans = scan_pairs(index.pairs, workers=workers, desc="validate")
    problems = [problem for found in scans["problems"] for problem in found]
    if problems:
        raise RawDataError(problems)
    return scans


def download_instructions(dest: Path = paths.RAW_DIR) -> str:
    """Where to put the Kaggle zip, and how to unpack it."""
    return (
        f"Download the dataset from https://www.kaggle.com/datasets/{paths.KAGGLE_DATASET} (archive.zip) and unpack "
        f"it so that {dest / paths.KAGGLE_FOLDER}/png_images exists:\n"
        f"    mkdir -p {dest} && unzip archive.zip -d {dest}\n"
        f"or, with Kaggle credentials (~/.kaggle/kaggle.json) and `pip install kaggle`: python -m helpers download"
    )


def download_dataset(dest: Path | str = paths.RAW_DIR) -> Path:
    """Download and unpack the dataset with the ``kaggle`` package; explain the manual way without it."""
    dest = Path(dest)
    try:
        return find_dataset_root(dest)
    except FileNotFoundError:
        pass
    if shutil.which("kaggle") is None:
        raise RuntimeError("The `kaggle` command is not installed.\n" + download_instructions(dest))
    dest.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["kaggle", "datasets", "download", "-d", paths.KAGGLE_DATASET, "-p", str(dest)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kaggle download failed: {result.stderr.strip()}\n" + download_instructions(dest))
    archive = next(dest.glob("*.zip"))
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(dest)
    archive.unlink()
    return find_dataset_root(dest)
