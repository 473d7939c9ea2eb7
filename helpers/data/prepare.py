"""02_prepare: split, binarize masks to {0, 1}, resize once, and write mmseg's layout.

Output (``data/prepared/<split_mode>-<size>/``)::

    images/{train,val,test}/NAME.png     resized with area interpolation, single channel
    masks/{train,val,test}/NAME.png      values {0, 1} (mmseg ignores 255: the seed's trap), nearest
    train.txt, val.txt, test.txt         entries like ``train/NAME`` (mmseg appends ``.png``)
    fold{k}_train.txt, fold{k}_val.txt   with ``folds=K``: K-fold over train + val, stratified, grouped by patient
    labels.csv                           name, split, fold, has_pneumo, patient, fg_pixels, pixel_hash, ...
    manifest.json                        parameters, split source, counts, positive rates, duplicates, leakage,
                                         code version

The ``patient`` split with the default seed and fractions is the shipped benchmark split ``patient-v1``
(:mod:`helpers.data.patient_split`), read for the images present, never recomputed (:func:`split_pairs`); the
manifest's ``split_source`` names it and its sha256, or says that the split was computed.

A re-run with the same parameters writes nothing; changed split parameters move only what changed.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from helpers.core import paths
from helpers.core.fileio import CorruptFileError, atomic_write_json, atomic_write_text, read_json
from helpers.core.locks import folder_lock
from helpers.core.parallel import parallel_map
from helpers.core.parameters import PrepareParams
from helpers.core.provenance import code_version
from helpers.data import patient_split, patients
from helpers.data.images import IMAGE_PNG_PARAMS, write_png
from helpers.data.prepared_folder import (
    DEFAULT_SPLIT_MODE,
    FOLD_SPLIT_GLOB,
    LABELS_FILE,
    MANIFEST_FILE,
    fold_split_file,
    read_labels,
)
from helpers.data.rawdata import RawDataError, choose_raw_root, decode_png, mask_problems, read_index, read_listed

log = logging.getLogger(__name__)

SPLIT_MODES = ("patient", "official", "seed")
TEST_FRACTION = 0.11  # the patient split's default test share: stage_1_test is 1,372 of 12,047 images (11.4 %)
SPLITS = ("train", "val", "test")
FORMAT_VERSION = 4  # bump when the conversion or the encoding changes: every file is rewritten


@dataclass
class PrepareResult:
    """What a prepare run did, and where."""

    out_dir: Path
    labels: pd.DataFrame
    manifest: dict
    written: int = 0
    skipped: int = 0
    removed: int = 0
    duplicates: list[list[str]] = field(default_factory=list)


def grouped_holdout(has_pneumo: pd.Series, groups: pd.Series, fraction: float, seed: int = 0) -> pd.Index:
    """The rows of a held-out part of about ``fraction`` of the images that shares no group with the rest,
    stratified by ``has_pneumo``.

    Groups (patients) are visited in a seeded random order, larger ones first, and each goes to the part
    (held-out or rest) that keeps the two parts' fill levels closest, per class: positive and negative
    images held out over ``fraction`` of the pool's, against those in the rest over ``1 - fraction`` of
    them (the balancing of scikit-learn's ``StratifiedGroupKFold``, for two parts of unequal size). The
    small groups visited last even out what the large ones left, so each class lands within a group or so
    of its share. Deterministic for a seed.
    """
    per_group = pd.DataFrame({"positive": has_pneumo.astype(int), "group": groups.to_numpy()}, index=has_pneumo.index)
    sizes = per_group.groupby("group", sort=True)["positive"].agg(["sum", "size"])
    sizes["negative"] = sizes["size"] - sizes["sum"]
    order = np.random.default_rng(seed).permutation(len(sizes))
    sizes = sizes.iloc[order].sort_values("size", ascending=False, kind="stable")
    totals = np.maximum([sizes["sum"].sum(), sizes["negative"].sum()], 1)
    held_counts, rest_counts, held = np.zeros(2), np.zeros(2), []

    def imbalance(held_part: np.ndarray, rest_part: np.ndarray) -> float:
        """How far the two parts are from holding the same share of their targets, per class."""
        return float(np.abs(held_part / (fraction * totals) - rest_part / ((1 - fraction) * totals)).sum())

    for group, positive, negative in zip(sizes.index, sizes["sum"], sizes["negative"], strict=True):
        counts = np.array([positive, negative])
        if imbalance(held_counts + counts, rest_counts) < imbalance(held_counts, rest_counts + counts):
            held_counts += counts
            held.append(group)
        else:
            rest_counts += counts
    if not held and len(sizes) > 1:  # a tiny pool: hold out one group rather than nothing
        held.append(sizes.index[-1])
    return per_group.index[per_group["group"].isin(set(held))]


def assign_splits(
    pairs: pd.DataFrame,
    split_mode: str = DEFAULT_SPLIT_MODE,
    val_fraction: float = 0.2,
    seed: int = 0,
    folds: int = 0,
    test_fraction: float = TEST_FRACTION,
) -> pd.DataFrame:
    """Add a ``split`` column (train / val / test) and a ``fold`` column (-1 without ``folds``).

    ``patient``: test, val and train share no patient (``pairs['patient']``): test is ``test_fraction`` of all
    images, val ``val_fraction`` of the rest, each stratified by has_pneumo (:func:`grouped_holdout`).
    ``official``: stage_1_test is test; val is ``val_fraction`` of stage_1_train drawn by patient, so train
    and val share no patient (test does share patients with both: see the leakage report).
    ``seed``: the seed project's random 80/20 of all images (``train_test_split(random_state=seed)``) into
    train / val, names in sorted order, no test split; image-level, exactly as the seed did it.
    ``folds``: a k-fold over train + val, stratified and grouped by patient in every mode.
    """
    if split_mode not in SPLIT_MODES:
        raise ValueError(f"split_mode must be one of {SPLIT_MODES}, not {split_mode!r}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be between 0 and 1, not {value}")
    if (split_mode != "seed" or folds) and "patient" not in pairs:
        raise ValueError("the pairs have no patient column: read them with helpers.data.rawdata.read_index")
    table = pairs.copy()
    table["split"] = "train"
    if split_mode == "patient":
        test_rows = grouped_holdout(table["has_pneumo"], table["patient"], test_fraction, seed)
        table.loc[test_rows, "split"] = "test"
    elif split_mode == "official":
        table.loc[table["stage"] == "test", "split"] = "test"
    if split_mode == "seed":
        names = sorted(table["name"])
        _, val_names = train_test_split(names, test_size=val_fraction, random_state=seed)
        val_rows = table.index[table["name"].isin(set(val_names))]
    else:
        pool = table[table["split"] == "train"]
        val_rows = grouped_holdout(pool["has_pneumo"], pool["patient"], val_fraction, seed)
    table.loc[val_rows, "split"] = "val"
    return assign_folds(table, folds, seed)


def assign_folds(table: pd.DataFrame, folds: int, seed: int = 0) -> pd.DataFrame:
    """``table`` (with ``split``, ``has_pneumo``, ``patient``) with a ``fold`` column: a k-fold over train + val,
    stratified by has_pneumo and grouped by patient (scikit-learn's ``StratifiedGroupKFold``, shuffled with
    ``seed``); -1 for test, and everywhere with ``folds`` 0."""
    table = table.copy()
    table["fold"] = -1
    if folds:
        pool = table.index[table["split"] != "test"]
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        for fold, (_, held_out) in enumerate(
            splitter.split(pool, table.loc[pool, "has_pneumo"], table.loc[pool, "patient"])
        ):
            table.loc[pool[held_out], "fold"] = fold
    return table


def split_pairs(
    pairs: pd.DataFrame,
    split_mode: str = DEFAULT_SPLIT_MODE,
    val_fraction: float = 0.2,
    seed: int = 0,
    folds: int = 0,
    test_fraction: float = TEST_FRACTION,
) -> tuple[pd.DataFrame, dict]:
    """02_prepare's split: :func:`assign_splits`' table, and where the split comes from (the manifest's
    ``split_source``: ``version``, ``sha256``, ``file``, ``folds``, ``message``).

    ``patient`` mode with the default seed and fractions (those of ``patient-v1``) on images of the Kaggle dataset,
    all of them or part (a partial download), takes the shipped split's rows for the images present
    (:mod:`helpers.data.patient_split`), and its folds with ``folds`` 5; other fold counts are computed over the
    shipped train + val. Any other seed or fraction, other images, or another mode: computed by
    :func:`assign_splits` as before, and the message says that it is not the shipped split (``version`` None).
    """
    computed = {"version": None, "sha256": None, "file": None, "folds": "computed" if folds else "none"}
    if split_mode != "patient":
        table = assign_splits(pairs, split_mode, val_fraction, seed, folds, test_fraction)
        return table, {
            **computed,
            "message": f"split_mode {split_mode}: computed ({patient_split.VERSION} is the patient mode's)",
        }
    differ = patient_split.parameters_differ(seed, test_fraction, val_fraction)
    reason = ", ".join(differ)
    assignment = None
    if not differ and "patient" in pairs:  # without patients assign_splits says what is wrong
        assignment, reason = patient_split.shipped_assignment(pairs)
    if assignment is None:
        table = assign_splits(pairs, split_mode, val_fraction, seed, folds, test_fraction)
        message = f"patient split computed, not the shipped {patient_split.VERSION}: {reason}"
        log.info("%s", message)
        return table, {**computed, "message": message}
    table = pairs.copy()
    table["split"] = assignment["split"]
    if folds == patient_split.FOLDS:
        table["fold"] = assignment["fold"].astype(int)
        fold_source = "shipped"
    else:
        table = assign_folds(table, folds, seed)
        fold_source = "computed" if folds else "none"
    message = f"patient split: the shipped {patient_split.VERSION} ({reason})"
    if fold_source == "computed":
        message += (
            f"; its {folds} folds computed over its train + val ({patient_split.VERSION} ships {patient_split.FOLDS})"
        )
    log.info("%s", message)
    source = {
        "version": patient_split.VERSION,
        "sha256": patient_split.SHA256,
        "file": patient_split.PACKAGE_PATH,
        "folds": fold_source,
        "message": message,
    }
    return table, source


def build_patient_split(csv_root: Path | str = paths.RAW_DIR, patient_table: Path | str | None = None) -> pd.DataFrame:
    """The shipped split's table rebuilt with today's code: :func:`assign_splits` in ``patient`` mode with
    ``patient-v1``'s parameters and folds over every row of the two CSVs under ``csv_root`` (no image needed),
    their patients from ``patient_table`` (None: a ``patients.csv.gz`` beside the CSVs if there, else the shipped
    table: :func:`helpers.data.patients.table_path`), in the split file's form."""
    listed = read_listed(paths.resolve(csv_root), patient_table=patient_table)
    table = assign_splits(listed, "patient", folds=patient_split.FOLDS, **patient_split.PARAMETERS)
    return patient_split.split_file_table(table)


def convert_pair(job: tuple[str, str, str, str, int, bool, tuple[int, str] | None]) -> tuple[int, str, bool]:
    """Resize one pair into the prepared layout; return (fg_pixels, pixel_hash, written).

    A pair whose outputs exist and whose statistics a previous run recorded (``known``) is skipped
    without decoding anything.
    """
    image_src, mask_src, image_dst, mask_dst, size, has_pneumo, known = job
    done = Path(image_dst).exists() and Path(mask_dst).exists()
    if done and known is not None:
        return known[0], known[1], False
    image = decode_png(image_src)
    pixel_hash = hashlib.sha1(np.ascontiguousarray(image).data, usedforsecurity=False).hexdigest()
    if done:
        mask = cv2.imread(mask_dst, cv2.IMREAD_UNCHANGED)
        return int(np.count_nonzero(mask)), pixel_hash, False
    mask = decode_png(mask_src)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    problems = mask_problems(mask, image.shape, has_pneumo, mask_src)
    if problems:
        raise RawDataError(problems)
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    binary = cv2.resize((mask > 0).astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    write_png(mask_dst, binary)
    write_png(image_dst, resized, IMAGE_PNG_PARAMS)
    return int(np.count_nonzero(binary)), pixel_hash, True


def find_duplicates(labels: pd.DataFrame) -> list[list[str]]:
    """Groups of ``split/name`` whose source pixels are identical and that sit in more than one split."""
    groups = []
    for _, group in labels.groupby("pixel_hash"):
        if len(group) > 1 and group["split"].nunique() > 1:
            groups.append(sorted(f"{s}/{n}" for s, n in zip(group["split"], group["name"], strict=True)))
    return sorted(groups)


def _previous_statistics(out_dir: Path) -> dict[str, tuple[int, str]]:
    """``name -> (fg_pixels, pixel_hash)`` from an earlier run's labels.csv; a different format starts afresh."""
    manifest_path, labels_path = out_dir / MANIFEST_FILE, out_dir / LABELS_FILE
    if not manifest_path.exists() or not labels_path.exists():
        return {}
    try:
        format_version = read_json(manifest_path, "").get("format_version")
    except CorruptFileError:  # a truncated manifest: every pair's statistics are read again, the files kept
        return {}
    if format_version != FORMAT_VERSION:
        _remove_stale(out_dir, set())
        return {}
    previous = read_labels(out_dir)
    return {
        n: (int(f), h) for n, f, h in zip(previous["name"], previous["fg_pixels"], previous["pixel_hash"], strict=True)
    }


def _remove_stale(out_dir: Path, expected: set[Path]) -> int:
    """Delete prepared PNGs that the current plan does not contain (a changed split moves files)."""
    removed = 0
    for folder in ("images", "masks"):
        for path in (out_dir / folder).glob("*/*.png"):
            if path not in expected:
                path.unlink()
                removed += 1
    return removed


def prepare_dataset(
    raw_root: Path | str = paths.RAW_DIR,
    out_root: Path | str = paths.PREPARED_DIR,
    *,
    img_size: int = 512,
    val_fraction: float = 0.2,
    seed: int = 0,
    split_mode: str = DEFAULT_SPLIT_MODE,
    folds: int = 0,
    test_fraction: float = TEST_FRACTION,
    patient_table: Path | str | None = None,
    workers: int | None = None,
    out_dir: Path | str | None = None,
) -> PrepareResult:
    """Split the raw pairs and write them, resized and binarized, in mmseg's layout, into ``out_dir``
    (default ``<out_root>/<split_mode>-<img_size>``; relative paths are from the repository root).

    Idempotent and resumable: finished files are skipped, every file is written atomically, the raw data is
    only read. Raises :class:`RawDataError` naming the first file that cannot be converted.
    ``patient_table``: None for the one beside the raw CSVs if there, else the shipped one.
    One writer per prepared folder: another process writing it makes this one stop (helpers.core.locks).
    """
    out_dir = (
        paths.resolve(out_dir)
        if out_dir is not None
        else paths.prepared_dir(split_mode, img_size, paths.resolve(out_root))
    )
    with folder_lock(out_dir, "prepared folder"):
        return _prepare_into(
            out_dir,
            raw_root,
            img_size=img_size,
            val_fraction=val_fraction,
            seed=seed,
            split_mode=split_mode,
            folds=folds,
            test_fraction=test_fraction,
            patient_table=patient_table,
            workers=workers,
        )


def _prepare_into(
    out_dir: Path,
    raw_root: Path | str,
    *,
    img_size: int,
    val_fraction: float,
    seed: int,
    split_mode: str,
    folds: int,
    test_fraction: float,
    patient_table: Path | str | None,
    workers: int | None,
) -> PrepareResult:
    """:func:`prepare_dataset`'s work, its folder locked."""
    manifest_path = out_dir / MANIFEST_FILE
    known = _previous_statistics(out_dir)
    index = read_index(paths.resolve(raw_root), patient_table=patient_table)
    labels, split_source = split_pairs(index.pairs, split_mode, val_fraction, seed, folds, test_fraction)
    names = labels["name"].str.removesuffix(".png")
    image_dst = [out_dir / "images" / s / f"{n}.png" for s, n in zip(labels["split"], names, strict=True)]
    mask_dst = [out_dir / "masks" / s / f"{n}.png" for s, n in zip(labels["split"], names, strict=True)]
    removed = _remove_stale(out_dir, set(image_dst) | set(mask_dst))
    for split in SPLITS:
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        (out_dir / "masks" / split).mkdir(parents=True, exist_ok=True)
    jobs = [
        (src_i, src_m, str(dst_i), str(dst_m), img_size, bool(flag), known.get(name))
        for src_i, src_m, dst_i, dst_m, flag, name in zip(
            labels["image_path"], labels["mask_path"], image_dst, mask_dst, labels["has_pneumo"], names, strict=True
        )
    ]
    results = parallel_map(convert_pair, jobs, workers=workers, desc=f"prepare {out_dir.name}")
    labels["fg_pixels"] = [r[0] for r in results]
    labels["pixel_hash"] = [r[1] for r in results]
    written = sum(r[2] for r in results)
    labels["name"] = names
    labels = labels[
        ["name", "split", "fold", "stage", "image_id", "has_pneumo", "patient", "follow_up", "fg_pixels", "pixel_hash"]
    ]

    for split in SPLITS:
        entries = sorted(f"{split}/{n}" for n in labels.loc[labels["split"] == split, "name"])
        atomic_write_text(out_dir / f"{split}.txt", "".join(f"{e}\n" for e in entries), skip_if_same=True)
    for fold in range(folds):
        in_fold = labels["fold"] == fold
        pool = labels["split"] != "test"
        for part, rows in (("train", pool & ~in_fold), ("val", in_fold)):
            entries = sorted(
                f"{s}/{n}" for s, n in zip(labels.loc[rows, "split"], labels.loc[rows, "name"], strict=True)
            )
            atomic_write_text(
                out_dir / fold_split_file(fold, part), "".join(f"{e}\n" for e in entries), skip_if_same=True
            )
    fold_files = {fold_split_file(fold, part) for fold in range(folds) for part in ("train", "val")}
    for stale in out_dir.glob(FOLD_SPLIT_GLOB):  # an earlier run with more folds
        if stale.name not in fold_files:
            stale.unlink()
    atomic_write_text(out_dir / LABELS_FILE, labels.to_csv(index=False), skip_if_same=True)

    duplicates = find_duplicates(labels)
    counts = {}
    for split in SPLITS:
        rows = labels[labels["split"] == split]
        counts[split] = {
            "images": len(rows),
            "positive": int(rows["has_pneumo"].sum()),
            "positive_rate": float(rows["has_pneumo"].mean()) if len(rows) else 0.0,
            "positive_after_resize": int((rows["fg_pixels"] > 0).sum()),
        }
    manifest = {
        "format_version": FORMAT_VERSION,
        "parameters": {
            "raw_root": str(index.root),
            "img_size": img_size,
            "val_fraction": val_fraction,
            "seed": seed,
            "split_mode": split_mode,
            "folds": folds,
            "test_fraction": test_fraction,
            "patient_table": str(patients.table_path(index.root, patient_table)),
        },
        "split_source": split_source,
        "counts": counts,
        "csv_rows_without_files": len(index.missing),
        "duplicates_across_splits": duplicates,
        "leakage": patients.leakage_report(labels, SPLITS, duplicates),
        "code_version": code_version(),
    }
    atomic_write_json(manifest_path, manifest, skip_if_same=True)
    return PrepareResult(
        out_dir=out_dir,
        labels=labels,
        manifest=manifest,
        written=written,
        skipped=len(jobs) - written,
        removed=removed,
        duplicates=duplicates,
    )


def prepare(params: PrepareParams) -> PrepareResult:
    """02's step: the raw data of ``params.raw_root`` (data/raw, or the demo data when data/raw has none, said
    once) split, binarized and resized into ``params.prepared_root`` (default: by split mode and size)."""
    raw = choose_raw_root(params.raw_root)
    return prepare_dataset(
        raw.root,
        raw.prepared_parent,
        out_dir=params.prepared_root,
        img_size=params.img_size,
        val_fraction=params.val_fraction,
        seed=params.seed,
        split_mode=params.split_mode,
        folds=params.folds,
        test_fraction=params.test_fraction,
        patient_table=params.patient_table,
        workers=params.workers or None,
    )
