"""The embedded demo dataset: generated chest radiographs in exactly the Kaggle layout.

Each image has two darker lung fields with vessel texture, the mediastinum and spine, ribs and noise.
About 22 % are positive: a pneumothorax drawn as a crescent along a lung's outer edge, darker than the
lung and without its texture, and the mask is exactly that crescent. Everything is deterministic from the
seed (each image from its own generator, so the worker count does not change the output).

Patients: about two thirds of the images belong to a synthetic patient with several images (up to
``max_images_per_patient``, in either stage), as 65 % of the real images do. A patient's images share
their anatomy (body, lungs, their brightness) and the side of any pneumothorax; noise, texture, ribs and
the lesion differ. The generator writes the patient table beside the CSVs (``patients.csv.gz``, in the
format of the table shipped with the package), where :func:`helpers.data.patients.table_path` finds it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from helpers.core import paths
from helpers.core.parallel import parallel_map
from helpers.data.demo_spec import DemoSpec
from helpers.data.patients import PATIENTS_FILE, write_patient_table
from helpers.data.rawdata import CSV_FILES, IMAGES_FOLDER, MASKS_FOLDER

PARAMS_FILE = "demo_params.json"


def _smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Zero-mean, unit-variance noise blurred to features about ``scale`` pixels wide."""
    noise = rng.standard_normal((size, size)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=scale)
    return noise / (noise.std() + 1e-6)


def _ellipse_mask(size: int, center: tuple[float, float], axes: tuple[float, float]) -> np.ndarray:
    """A filled ellipse as a boolean mask."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return ((xx - center[0]) / axes[0]) ** 2 + ((yy - center[1]) / axes[1]) ** 2 <= 1.0


def draw_radiograph(
    size: int, positive: bool, rng: np.random.Generator, anatomy_rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic frontal chest radiograph (uint8) and its pneumothorax mask ({0, 255}).

    ``anatomy_rng`` draws the anatomy (body, lungs, lung brightness, the side of a pneumothorax): the same
    seed gives a patient's images the same anatomy. Without it, ``rng`` draws everything.
    """
    anatomy_rng = anatomy_rng if anatomy_rng is not None else rng
    s = float(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # Body: a bright thorax on a dark background, brighter towards the bottom (abdomen).
    body = _ellipse_mask(size, (s * 0.5, s * 0.58), (s * anatomy_rng.uniform(0.44, 0.48), s * 0.62))
    image = np.where(body, 150.0 + 40.0 * yy / s, 25.0).astype(np.float32)
    # Lungs: two darker fields with branching vessel texture.
    lungs = []
    for side in (-1, 1):
        center = (s * (0.5 + side * anatomy_rng.uniform(0.19, 0.23)), s * anatomy_rng.uniform(0.45, 0.5))
        axes = (s * anatomy_rng.uniform(0.13, 0.16), s * anatomy_rng.uniform(0.28, 0.32))
        lungs.append((center, axes))
    lung_level = anatomy_rng.uniform(78.0, 95.0)
    lesion_side = int(anatomy_rng.integers(2))
    lung_mask = _ellipse_mask(size, *lungs[0]) | _ellipse_mask(size, *lungs[1])
    texture = 14.0 * np.abs(_smooth_noise(rng, size, s / 90.0)) + 6.0 * _smooth_noise(rng, size, s / 40.0)
    image = np.where(lung_mask, lung_level + texture, image)
    # Pneumothorax: a crescent between a lung's outer edge and the collapsed lung, no texture, darker.
    mask = np.zeros((size, size), dtype=bool)
    if positive:
        side = lesion_side
        (cx, cy), (ax, ay) = lungs[side]
        outward = -1.0 if side == 0 else 1.0
        shrink = rng.uniform(0.55, 0.8)
        collapsed = _ellipse_mask(
            size,
            (cx - outward * ax * (1 - shrink) * 0.9, cy + ay * rng.uniform(0.0, 0.15)),
            (ax * shrink, ay * rng.uniform(0.8, 0.92)),
        )
        upper = yy < cy + ay * rng.uniform(0.1, 0.6)
        crescent = (_ellipse_mask(size, (cx, cy), (ax, ay)) & ~collapsed & upper).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(crescent, connectivity=8)
        mask = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])) if count > 1 else crescent > 0
        image = np.where(mask, rng.uniform(35.0, 48.0) + 3.0 * _smooth_noise(rng, size, 2.0), image)
    # Mediastinum and spine in the middle, ribs across the chest (over the pneumothorax too).
    mediastinum = np.exp(-(((xx - s * 0.5) / (s * 0.07)) ** 2)) * (yy > s * 0.15)
    image += 70.0 * mediastinum * (1.0 - 0.5 * lung_mask)
    phase = rng.uniform(0, 2 * np.pi)
    ribs = np.sin(2 * np.pi * (yy + 0.25 * np.abs(xx - s * 0.5) ** 1.1) / (s * 0.085) + phase)
    image += 18.0 * np.clip(ribs, 0, None) ** 3 * body
    # Film grain and a slight blur, as a radiograph would have.
    image += rng.normal(0.0, 6.0, size=(size, size)).astype(np.float32)
    image = cv2.GaussianBlur(image, (0, 0), sigmaX=0.6)
    return np.clip(image, 0, 255).astype(np.uint8), (mask * 255).astype(np.uint8)


def _stage_plan(spec: DemoSpec) -> pd.DataFrame:
    """Which images are positive, per stage, with their Kaggle-style names."""
    rows = []
    for stage_code, (stage, count) in enumerate((("train", spec.n_train), ("test", spec.n_test))):
        rng = np.random.default_rng([spec.seed, stage_code])
        flags = np.zeros(count, dtype=int)
        flags[: int(round(count * spec.positive_rate))] = 1
        rng.shuffle(flags)
        for i, flag in enumerate(flags):
            rows.append(
                {
                    "new_filename": f"{i}_{stage}_{flag}_.png",
                    "ImageId": f"1.2.276.0.7230010.3.1.4.{spec.seed}.{stage_code}.{i}",
                    "has_pneumo": int(flag),
                    "stage": stage,
                    "index": i,
                    "stage_code": stage_code,
                }
            )
    return _assign_patients(pd.DataFrame(rows), spec)


def _assign_patients(plan: pd.DataFrame, spec: DemoSpec) -> pd.DataFrame:
    """Group the images into patients: visited in a seeded random order across both stages, each patient
    takes the next 2..max_images_per_patient images (30 % of patients) or 1; follow-up numbers in that order."""
    rng = np.random.default_rng([spec.seed, 2])
    order = rng.permutation(len(plan))
    patient = np.zeros(len(plan), dtype=int)
    follow_up = np.zeros(len(plan), dtype=int)
    start, number = 0, 0
    while start < len(order):
        several = spec.max_images_per_patient > 1 and rng.random() < 0.3
        count = int(rng.integers(2, spec.max_images_per_patient + 1)) if several else 1
        visit = order[start : start + count]
        patient[visit], follow_up[visit] = number, np.arange(len(visit))
        start, number = start + count, number + 1
    return plan.assign(patient_number=patient, patient=[f"{p + 1:08d}" for p in patient], follow_up=follow_up)


def _write_pair(job: tuple[str, int, int, int, int, int, int, str]) -> None:
    name, size, positive, seed, stage_code, index, patient_number, folder = job
    image, mask = draw_radiograph(
        size,
        bool(positive),
        np.random.default_rng([seed, stage_code, index, 1]),
        np.random.default_rng([seed, 3, patient_number]),
    )
    cv2.imwrite(str(Path(folder) / IMAGES_FOLDER / name), image)
    cv2.imwrite(str(Path(folder) / MASKS_FOLDER / name), mask)


def generate_demo_dataset(
    dest: Path | str = paths.DEMO_DIR, spec: DemoSpec | None = None, *, workers: int | None = None
) -> Path:
    """Write the demo dataset to ``dest/siim-acr-pneumothorax/`` unless it is there with the same spec
    (``spec`` None: the default ``DemoSpec()``).

    The dataset is generated in a temporary folder beside ``dest`` and renamed into place, so an
    interrupted run leaves nothing half-written. Returns the dataset folder.
    """
    spec = DemoSpec() if spec is None else spec
    dest = Path(dest)
    target = dest / paths.KAGGLE_FOLDER
    params_path = dest / PARAMS_FILE
    if target.is_dir() and params_path.is_file() and json.loads(params_path.read_text()) == asdict(spec):
        return target
    dest.mkdir(parents=True, exist_ok=True)
    plan = _stage_plan(spec)
    with tempfile.TemporaryDirectory(prefix=".demo-", dir=dest) as tmp:
        folder = Path(tmp) / paths.KAGGLE_FOLDER
        (folder / IMAGES_FOLDER).mkdir(parents=True)
        (folder / MASKS_FOLDER).mkdir()
        jobs = [
            (r.new_filename, spec.size, r.has_pneumo, spec.seed, r.stage_code, r.index, r.patient_number, str(folder))
            for r in plan.itertuples()
        ]
        parallel_map(_write_pair, jobs, workers=workers, desc="demo dataset")
        for stage, filename in CSV_FILES.items():
            rows = plan[plan["stage"] == stage]
            rows[["new_filename", "ImageId", "has_pneumo"]].to_csv(folder / filename, index=False)
        patients = plan.rename(columns={"ImageId": "image_id"})
        write_patient_table(
            patients,
            folder / PATIENTS_FILE,
            f"Synthetic patients of the demo dataset ({DemoSpec.__name__} {asdict(spec)}), "
            "written by helpers.data.demo_dataset.",
        )
        if target.exists():
            shutil.rmtree(target)
        folder.rename(target)
    params_path.write_text(json.dumps(asdict(spec), indent=2) + "\n")
    return target
