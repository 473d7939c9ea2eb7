"""The shipped benchmark split ``patient-v1``: the whole Kaggle dataset's patient-disjoint train / val / test and its
patient-grouped 5 folds, as a file that another release of scikit-learn, or another repository, reads as it is.

``resources/split-patient-v1.csv`` (package data, beside the patient table; its sha256 is :data:`SHA256`): one row
per image of the two Kaggle CSVs, in their order (``stage_1_train_images.csv`` then ``stage_1_test_images.csv``),
with the columns

    new_filename, ImageId, has_pneumo   as in the Kaggle CSVs
    patient                             the NIH ChestX-ray14 patient (the shipped patient table's)
    split                               train, val or test: no patient in two of them
    fold                                0..4 over train + val (5 folds, no patient in two), -1 for test

It is what 02_prepare's ``patient`` mode computes on the full CSVs with its default parameters
(:data:`PARAMETERS`: seed 0, test_fraction 0.11, val_fraction 0.2, and 5 folds) and the shipped patient table;
``python -m helpers patient-split --csvs DIR`` rebuilds it with today's code and compares
(:func:`helpers.data.prepare.build_patient_split`). 02_prepare takes its rows whenever it is asked for that split
(:func:`shipped_assignment`); a file that does not hash to :data:`SHA256` is refused, never used.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.core.fileio import atomic_write_bytes

VERSION = "patient-v1"
FILE_NAME = f"split-{VERSION}.csv"
SHIPPED_FILE = Path(__file__).resolve().parent / "resources" / FILE_NAME
SHA256 = "69bb494cbec097b3706c796a1cac2be7fb2308434be69709688b6e2694cb4626"
PARAMETERS = {"seed": 0, "test_fraction": 0.11, "val_fraction": 0.2}  # 02_prepare's defaults (pipeline/02_prepare.yaml)
FOLDS = 5
COLUMNS = ["new_filename", "ImageId", "has_pneumo", "patient", "split", "fold"]
SPLITS = ("train", "val", "test")
PACKAGE_PATH = f"helpers/data/resources/{FILE_NAME}"  # as the manifest and the docs name it


class SplitFileError(ValueError):
    """The split file is not the one shipped (another sha256) or not in its format."""


def file_sha256(path: Path | str) -> str:
    """The sha256 of a file's bytes, as ``sha256sum`` prints it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_split(path: Path | str = SHIPPED_FILE, sha256: str | None = SHA256) -> pd.DataFrame:
    """The split file as a table (its columns, :data:`COLUMNS`); with ``sha256`` (default: the shipped one's), a
    file of other bytes raises :class:`SplitFileError` before anything reads it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split file not found")
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise SplitFileError(
            f"{path}: sha256 {hashlib.sha256(data).hexdigest()} is not {VERSION}'s {sha256}: the file was changed "
            "(rebuild it with `python -m helpers patient-split --csvs DIR --out FILE`, or restore it from git)"
        )
    table = pd.read_csv(io.BytesIO(data), dtype={"new_filename": str, "ImageId": str, "patient": str, "split": str})
    if list(table.columns) != COLUMNS:
        raise SplitFileError(f"{path}: columns are {list(table.columns)}, expected {COLUMNS}")
    return table


def split_file_table(assigned: pd.DataFrame) -> pd.DataFrame:
    """The split file's rows from a table of :func:`helpers.data.prepare.assign_splits` over the CSVs' rows
    (``name, image_id, has_pneumo, stage, patient, split, fold``): the Kaggle CSVs' order and column names."""
    stage_order = assigned["stage"].map({"train": 0, "test": 1})
    index = assigned["name"].str.split("_", n=1).str[0].astype(int)
    order = np.lexsort((index.to_numpy(), stage_order.to_numpy()))
    rows = assigned.iloc[order]
    table = pd.DataFrame(
        {
            "new_filename": rows["name"].to_numpy(),
            "ImageId": rows["image_id"].to_numpy(),
            "has_pneumo": rows["has_pneumo"].astype(int).to_numpy(),
            "patient": rows["patient"].astype(str).to_numpy(),
            "split": rows["split"].to_numpy(),
            "fold": rows["fold"].astype(int).to_numpy(),
        }
    )
    return table


def split_file_bytes(table: pd.DataFrame) -> bytes:
    """The file's bytes: plain CSV, UTF-8, ``\\n`` line ends, no index (equal tables give equal bytes)."""
    return table[COLUMNS].to_csv(index=False, lineterminator="\n").encode("utf-8")


def write_split(table: pd.DataFrame, path: Path | str) -> str:
    """Write the split file (atomically); return its sha256."""
    data = split_file_bytes(table)
    atomic_write_bytes(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def parameters_differ(seed: int, test_fraction: float, val_fraction: float) -> list[str]:
    """The split parameters that are not :data:`PARAMETERS` (``"seed 1 (patient-v1: 0)"``), empty when all are."""
    given = {"seed": seed, "test_fraction": test_fraction, "val_fraction": val_fraction}
    return [f"{k} {given[k]:g} ({VERSION}: {v:g})" for k, v in PARAMETERS.items() if not np.isclose(given[k], v)]


def shipped_assignment(pairs: pd.DataFrame, path: Path | str = SHIPPED_FILE) -> tuple[pd.DataFrame | None, str]:
    """The shipped split's rows for ``pairs`` (``name, image_id, has_pneumo, patient``: the images present, all of the
    dataset's or part of them), as ``split`` and ``fold`` columns aligned with ``pairs``; or None and why, when an
    image is not in the file (no row with its file name and ImageId: another dataset, the demo's) or the file says
    otherwise of it (its has_pneumo, its patient)."""
    shipped = read_split(path)
    keys = pd.MultiIndex.from_arrays([shipped["new_filename"], shipped["ImageId"]])
    known = pd.MultiIndex.from_arrays([pairs["name"], pairs["image_id"].astype(str)]).isin(keys)
    if not known.all():
        first = pairs["name"].to_numpy()[~known][0]
        return None, f"{int((~known).sum())} of {len(pairs)} images are not in {VERSION} (first: {first})"
    shipped = shipped.set_index("new_filename")
    rows = shipped.loc[pairs["name"].to_numpy()]
    for column, ours, what in (
        ("has_pneumo", "has_pneumo", "another has_pneumo"),
        ("patient", "patient", "another patient (the patient table in use is not the shipped one)"),
    ):
        differ = rows[column].astype(str).to_numpy() != pairs[ours].astype(str).to_numpy()
        if differ.any():
            first = pairs["name"].to_numpy()[differ][0]
            return None, f"{int(differ.sum())} images have {what} than in {VERSION} (first: {first})"
    assignment = pd.DataFrame({"split": rows["split"].to_numpy(), "fold": rows["fold"].to_numpy()}, index=pairs.index)
    if len(pairs) == len(shipped):
        return assignment, f"all {len(shipped)} images"
    return assignment, f"the {len(pairs)} images present of its {len(shipped)}: a partial download"


def describe(table: pd.DataFrame) -> pd.DataFrame:
    """Images, patients and positive images per split, and per fold of train + val (the docs' table)."""
    rows = []
    parts = [(split, table["split"] == split) for split in SPLITS]
    parts.append(("train + val", table["split"] != "test"))
    parts += [(f"fold {k}", table["fold"] == k) for k in sorted(table.loc[table["fold"] >= 0, "fold"].unique())]
    parts.append(("all", pd.Series(True, index=table.index)))
    for name, rows_of in parts:
        part = table[rows_of]
        rows.append(
            {
                "part": name,
                "images": len(part),
                "patients": part["patient"].nunique(),
                "positive": int(part["has_pneumo"].sum()),
                "positive %": round(100 * float(part["has_pneumo"].mean()), 2) if len(part) else 0.0,
            }
        )
    return pd.DataFrame(rows)
