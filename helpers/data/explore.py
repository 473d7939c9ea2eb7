"""01_explore: class pixel statistics, split counts, mask areas and components, computed from the data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.core import paths
from helpers.core.fileio import atomic_write_json
from helpers.core.parameters import ExploreParams
from helpers.data import patients
from helpers.data.rawdata import RawDataError, RawIndex, choose_raw_root, read_index, scan_pairs

CLASS_NAMES = ("background", "pneumothorax")
STATS_FILE = "explore_stats.json"


@dataclass
class ExploreResult:
    """The tables 01_explore shows; ``scans`` has one row per pair."""

    index: RawIndex
    scans: pd.DataFrame
    class_table: pd.DataFrame
    split_table: pd.DataFrame
    area_summary: pd.DataFrame
    components_table: pd.DataFrame
    sizes_table: pd.DataFrame
    patient_summary: dict = field(default_factory=dict)
    images_per_patient: pd.DataFrame = field(default_factory=pd.DataFrame)
    official_overlap: dict = field(default_factory=dict)
    stats_path: Path | None = None


def select_pairs(
    pairs: pd.DataFrame, stages: list[str] | None = None, max_images: int | None = None, seed: int = 0
) -> pd.DataFrame:
    """Keep the given stages; cap the count with a random sample (never the first N: positives are front-loaded)."""
    if stages:
        unknown = set(stages) - set(pairs["stage"].unique()) - {"train", "test"}
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)}; the Kaggle splits are 'train' and 'test'")
        pairs = pairs[pairs["stage"].isin(stages)]
    if max_images and len(pairs) > max_images:
        pairs = pairs.sample(n=max_images, random_state=seed).sort_index()
    return pairs.reset_index(drop=True)


def class_pixel_table(scans: pd.DataFrame) -> pd.DataFrame:
    """The seed's table: per class, the percentage of all pixels and the number of images containing it."""
    total = (scans["width"] * scans["height"]).astype(np.int64)
    fg = scans["fg_pixels"].astype(np.int64)
    pixels = {"background": int((total - fg).sum()), "pneumothorax": int(fg.sum())}
    images = {"background": int(((total - fg) > 0).sum()), "pneumothorax": int((fg > 0).sum())}
    all_pixels = int(total.sum())
    return pd.DataFrame(
        {
            "class name": list(CLASS_NAMES),
            "pixel percentage": [100.0 * pixels[c] / all_pixels for c in CLASS_NAMES],
            "num. images in this category": [images[c] for c in CLASS_NAMES],
            "pixels": [pixels[c] for c in CLASS_NAMES],
        }
    )


def split_table(scans: pd.DataFrame) -> pd.DataFrame:
    """Per official split (the CSV it comes from): images, positives, positive rate."""
    grouped = scans.groupby("stage")["has_pneumo"]
    table = pd.DataFrame({"images": grouped.size(), "positive": grouped.sum()})
    table.loc["all"] = table.sum()
    table["positive rate"] = table["positive"] / table["images"]
    return table.rename_axis("split").reset_index()


def positive_area_fractions(scans: pd.DataFrame) -> pd.Series:
    """Mask area as a fraction of the image, for positive masks only."""
    positive = scans[scans["fg_pixels"] > 0]
    return (positive["fg_pixels"] / (positive["width"] * positive["height"])).rename("area fraction")


def area_summary(scans: pd.DataFrame) -> pd.DataFrame:
    """Quantiles of the positive mask area (fraction of the image)."""
    fractions = positive_area_fractions(scans)
    if fractions.empty:
        return pd.DataFrame(columns=["statistic", "area fraction"])
    quantiles = {"min": 0.0, "p05": 0.05, "p25": 0.25, "median": 0.5, "p75": 0.75, "p95": 0.95, "max": 1.0}
    return pd.DataFrame(
        {"statistic": list(quantiles), "area fraction": [float(fractions.quantile(q)) for q in quantiles.values()]}
    )


def components_table(scans: pd.DataFrame) -> pd.DataFrame:
    """How many positive masks have 1, 2, ... connected regions (8-connectivity)."""
    positive = scans[scans["fg_pixels"] > 0]
    counts = positive["components"].value_counts().sort_index()
    return pd.DataFrame({"components": counts.index.astype(int), "masks": counts.values.astype(int)})


def sizes_table(scans: pd.DataFrame) -> pd.DataFrame:
    """Image sizes and modes as found (the Kaggle data is 1024x1024 mode L throughout)."""
    grouped = scans.groupby(["width", "height", "image_mode", "mask_mode"]).size()
    return grouped.rename("images").reset_index()


def official_overlap(listed: pd.DataFrame) -> dict:
    """The leakage report of the official split (stage_1_train against stage_1_test), from the CSV rows."""
    return patients.leakage_report(listed.assign(split=listed["stage"]), splits=("train", "test"))


def explore_dataset(
    root: Path | str = paths.RAW_DIR,
    *,
    stages: list[str] | None = None,
    max_images: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    out_dir: Path | str | None = None,
    patient_table: Path | str | None = None,
) -> ExploreResult:
    """Scan the pairs (in parallel, validating each), build every table, write them as JSON to ``out_dir``.

    The patient tables (images per patient, mixed labels, the official split's patient overlap) come from
    every row of the CSVs, whatever the files present or the sample; ``patient_table`` as in
    :func:`helpers.data.rawdata.read_listed`.

    Raises :class:`RawDataError` naming each file with a problem.
    """
    index = read_index(root, patient_table=patient_table)
    pairs = select_pairs(index.pairs, stages, max_images, seed)
    scans = scan_pairs(pairs, workers=workers, desc="explore")
    problems = [problem for found in scans["problems"] for problem in found]
    if problems:
        raise RawDataError(problems)
    result = ExploreResult(
        index=index,
        scans=scans,
        class_table=class_pixel_table(scans),
        split_table=split_table(scans),
        area_summary=area_summary(scans),
        components_table=components_table(scans),
        sizes_table=sizes_table(scans),
        patient_summary=patients.patient_summary(index.listed),
        images_per_patient=patients.images_per_patient(index.listed),
        official_overlap=official_overlap(index.listed),
    )
    if out_dir is not None:
        result.stats_path = Path(out_dir) / STATS_FILE
        atomic_write_json(
            result.stats_path,
            {
                "dataset_root": str(index.root),
                "pairs_present": len(index.pairs),
                "csv_rows_without_files": len(index.missing),
                "images_scanned": len(scans),
                "stages": stages or ["train", "test"],
                "max_images": max_images,
                "class_table": result.class_table.to_dict(orient="records"),
                "split_table": result.split_table.to_dict(orient="records"),
                "positive_area_fraction": result.area_summary.to_dict(orient="records"),
                "components": result.components_table.to_dict(orient="records"),
                "sizes": result.sizes_table.to_dict(orient="records"),
                "patients": {
                    **result.patient_summary,
                    "images_per_patient": result.images_per_patient.to_dict(orient="records"),
                    "official_overlap": result.official_overlap,
                },
            },
        )
    return result


def explore(params: ExploreParams) -> ExploreResult:
    """01's step: the raw data of ``params.raw_root`` (data/raw, or the demo data when data/raw has none, said
    once), every table, the JSON in the outputs' explore folder."""
    raw = choose_raw_root(params.raw_root)
    return explore_dataset(
        raw.root,
        stages=params.stages,
        max_images=params.max_images or None,
        seed=params.seed,
        workers=params.workers or None,
        out_dir=paths.explore_dir(params.outputs_dir),
        patient_table=params.patient_table,
    )
