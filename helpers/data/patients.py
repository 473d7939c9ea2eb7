"""The patient behind each image: the patient table, leakage between splits, each evaluated image's patient.

The Kaggle images are NIH ChestX-ray14 radiographs and many patients have several of them (often follow-up
films of the same pneumothorax). A split that puts one patient on both sides scores a model on patients it
trained on. This module owns the patient concept:

- the **patient table** (``image_id, patient, follow_up``): shipped with the package
  (``helpers/data/resources/patients.csv.gz``, from earhian/SIIM-ACR-Pneumothorax-Segmentation-5th,
  ``input/nih_id.csv``; see the README beside it), or a table of the same format beside a dataset's CSVs
  (the demo data writes one), or any file given as ``patient_table``;
- :func:`attach_patients`: the join to an index (an image the table does not know is its own patient);
- :func:`leakage_report`: the patients and images that two splits share, from a table of images alone;
- :func:`evaluation_patients`: each evaluated image's patient, and whether that patient has images in the
  train split (helpers.evaluation.seen_unseen scores both groups).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
from itertools import combinations
from pathlib import Path

import pandas as pd

from helpers.core import paths
from helpers.core.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

PATIENTS_FILE = "patients.csv.gz"
SHIPPED_TABLE = Path(__file__).resolve().parent / "resources" / PATIENTS_FILE
TABLE_SOURCE = "earhian/SIIM-ACR-Pneumothorax-Segmentation-5th, input/nih_id.csv"
TABLE_COLUMNS = ["image_id", "patient", "follow_up"]
UNKNOWN_PATIENT_PREFIX = "image:"  # an image the table does not know is the only image of patient image:<ImageId>
TRAINING_SPLIT = "train"


def table_path(dataset_root: Path | str | None = None, patient_table: Path | str | None = None) -> Path:
    """The patient table to use: ``patient_table`` when given, else ``patients.csv.gz`` beside the dataset's
    CSVs when there (the demo data writes one), else the table shipped with the package. A relative
    ``patient_table`` is from the repository root."""
    if patient_table:
        return paths.resolve(patient_table)
    if dataset_root is not None and (Path(dataset_root) / PATIENTS_FILE).is_file():
        return Path(dataset_root) / PATIENTS_FILE
    return SHIPPED_TABLE


def read_patient_table(path: Path | str = SHIPPED_TABLE) -> pd.DataFrame:
    """The table ``image_id, patient, follow_up`` (patient as text); a clear error naming the file if it is bad."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: patient table not found")
    try:
        table = pd.read_csv(path, comment="#", dtype={"image_id": str, "patient": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError, OSError) as err:
        raise ValueError(f"{path}: unreadable patient table ({err})") from err
    if list(table.columns) != TABLE_COLUMNS:
        raise ValueError(f"{path}: columns are {list(table.columns)}, expected {TABLE_COLUMNS}")
    if table[["image_id", "patient"]].isna().any().any():
        raise ValueError(
            f"{path}: empty image_id or patient in row "
            f"{int(table[['image_id', 'patient']].isna().any(axis=1).idxmax()) + 1}"
        )
    if not pd.api.types.is_integer_dtype(table["follow_up"]):
        raise ValueError(f"{path}: follow_up must be an integer in every row")
    repeated = table["image_id"][table["image_id"].duplicated()]
    if len(repeated):
        raise ValueError(f"{path}: image_id {repeated.iloc[0]} is listed more than once ({len(repeated)} repeats)")
    return table


def write_patient_table(table: pd.DataFrame, path: Path | str, source: str) -> Path:
    """Write ``table`` (``image_id, patient, follow_up``) in the shipped format: a ``#`` line naming its
    source, the CSV, gzip without a timestamp (equal tables give equal bytes); atomically."""
    text = io.StringIO()
    text.write(f"# {source}\n")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    writer.writerows(table[TABLE_COLUMNS].itertuples(index=False))
    packed = io.BytesIO()
    with gzip.GzipFile(filename="patients.csv", mode="wb", fileobj=packed, mtime=0) as handle:
        handle.write(text.getvalue().encode("utf-8"))
    atomic_write_bytes(Path(path), packed.getvalue())
    return Path(path)


def attach_patients(
    images: pd.DataFrame, table: pd.DataFrame, source: Path | str = "the patient table"
) -> pd.DataFrame:
    """``images`` (with an ``image_id`` column) plus ``patient`` and ``follow_up`` from ``table``.

    An image the table does not know becomes the only image of its own patient (``image:<ImageId>``,
    follow-up -1), with a warning that counts such images.
    """
    known = table.set_index("image_id")
    joined = images.copy()
    joined["patient"] = joined["image_id"].map(known["patient"])
    joined["follow_up"] = joined["image_id"].map(known["follow_up"])
    unknown = joined["patient"].isna()
    if unknown.any():
        log.warning(
            "%d of %d images are not in %s; each is counted as its own patient", int(unknown.sum()), len(joined), source
        )
        joined.loc[unknown, "patient"] = UNKNOWN_PATIENT_PREFIX + joined.loc[unknown, "image_id"]
        joined.loc[unknown, "follow_up"] = -1
    joined["follow_up"] = joined["follow_up"].astype(int)
    return joined


def patient_summary(images: pd.DataFrame) -> dict:
    """Patients, images per patient, and patients with both positive and negative images."""
    per_patient = images.groupby("patient")["has_pneumo"].agg(["size", "min", "max"])
    several = per_patient[per_patient["size"] > 1]
    return {
        "images": len(images),
        "patients": len(per_patient),
        "patients_with_several_images": len(several),
        "images_of_patients_with_several_images": int(several["size"].sum()),
        "most_images_of_one_patient": int(per_patient["size"].max()) if len(per_patient) else 0,
        "patients_with_mixed_labels": int((per_patient["min"] != per_patient["max"]).sum()),
    }


def images_per_patient(images: pd.DataFrame) -> pd.DataFrame:
    """How many patients have 1, 2, ... images (``images, patients``)."""
    counts = images.groupby("patient").size().value_counts().sort_index()
    return pd.DataFrame({"images": counts.index.astype(int), "patients": counts.values.astype(int)})


def leakage_report(
    labels: pd.DataFrame,
    splits: tuple[str, ...] = ("train", "val", "test"),
    pixel_duplicates: list[list[str]] | None = None,
) -> dict:
    """What the splits share, from a table of images (``name, split, patient, has_pneumo``; ``follow_up``).

    - ``pairs``: for each pair of splits, the patients in both and their images (and positives) on each side;
    - ``held_out``: for each split after the first, its patients that also have images in an earlier split
      (val against train, test against train and val), and their images and positive images;
    - ``same_image_across_splits``: ``split/name`` groups with the same patient and follow-up number (one
      radiograph listed twice) in more than one split;
    - ``pixel_duplicates_across_splits``: identical pixels in more than one split, when given.
    """
    present = [s for s in splits if (labels["split"] == s).any()]
    patients_of = {s: set(labels.loc[labels["split"] == s, "patient"]) for s in present}
    pairs = []
    for first, second in combinations(present, 2):
        shared = patients_of[first] & patients_of[second]
        entry: dict = {"splits": [first, second], "shared_patients": len(shared)}
        for split in (first, second):
            rows = labels[(labels["split"] == split) & labels["patient"].isin(shared)]
            entry[f"images_{split}"] = len(rows)
            entry[f"positive_{split}"] = int(rows["has_pneumo"].sum())
        pairs.append(entry)
    held_out = {}
    for position, split in enumerate(present[1:], start=1):
        earlier = set().union(*(patients_of[s] for s in present[:position]))
        rows = labels[labels["split"] == split]
        shared = rows["patient"].isin(earlier)
        held_out[split] = {
            "against": present[:position],
            "patients": int(rows["patient"].nunique()),
            "shared_patients": int(rows.loc[shared, "patient"].nunique()),
            "images": len(rows),
            "images_of_shared_patients": int(shared.sum()),
            "positive": int(rows["has_pneumo"].sum()),
            "positive_of_shared_patients": int(rows.loc[shared, "has_pneumo"].sum()),
        }
    report = {"pairs": pairs, "held_out": held_out, "same_image_across_splits": _same_image_across_splits(labels)}
    if pixel_duplicates is not None:
        report["pixel_duplicates_across_splits"] = pixel_duplicates
    return report


def _same_image_across_splits(labels: pd.DataFrame) -> list[list[str]]:
    if "follow_up" not in labels:
        return []
    known = labels[labels["follow_up"] >= 0]
    groups = []
    for _, group in known.groupby(["patient", "follow_up"]):
        if group["split"].nunique() > 1:
            groups.append(sorted(f"{s}/{n}" for s, n in zip(group["split"], group["name"], strict=True)))
    return sorted(groups)


def leakage_table(report: dict) -> pd.DataFrame:
    """One row per split against the splits before it, and per pair of splits: shared patients and images."""
    rows = [
        {
            "split": split,
            "against": " + ".join(entry["against"]),
            "patients": entry["patients"],
            "shared patients": entry["shared_patients"],
            "images": entry["images"],
            "images of shared patients": entry["images_of_shared_patients"],
            "positive": entry["positive"],
            "positive of shared patients": entry["positive_of_shared_patients"],
        }
        for split, entry in report["held_out"].items()
    ]
    for entry in report["pairs"]:
        first, second = entry["splits"]
        if [first] != report["held_out"].get(second, {}).get("against"):  # not already a row above
            rows.append(
                {
                    "split": second,
                    "against": first,
                    "shared patients": entry["shared_patients"],
                    "images of shared patients": entry[f"images_{second}"],
                    "positive of shared patients": entry[f"positive_{second}"],
                }
            )
    table = pd.DataFrame(rows)
    counts = [c for c in table.columns if c not in ("split", "against")]
    return table.astype({c: "Int64" for c in counts})  # counts stay integers where a row has none


def evaluation_patients(labels: pd.DataFrame, split: str, names: list[str]) -> pd.DataFrame:
    """``name, patient, seen`` for the evaluated images ``names`` (in that order), from the prepared labels;
    ``seen``: the patient also has images in the train split."""
    if "patient" not in labels:
        raise ValueError(
            "the prepared labels.csv has no patient column (prepared before patients were tracked): re-run 02_prepare"
        )
    rows = labels[labels["split"] == split].set_index("name")
    missing = [n for n in names if n not in rows.index]
    if missing:
        raise ValueError(f"{len(missing)} evaluated images are not in the prepared {split} split (first: {missing[0]})")
    trained = set(labels.loc[labels["split"] == TRAINING_SPLIT, "patient"])
    patient = rows.loc[list(names), "patient"].to_numpy()
    return pd.DataFrame({"name": list(names), "patient": patient, "seen": [p in trained for p in patient]})
