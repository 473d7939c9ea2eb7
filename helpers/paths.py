"""Every default path of the repository, derived from its root in one place.

``PNEUMO_DATA_DIR`` and ``PNEUMO_OUTPUTS_DIR`` move the data and outputs folders (a scratch disk on a
GPU node, say); everything else follows from the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("PNEUMO_DATA_DIR", REPO_ROOT / "data"))
OUTPUTS_DIR = Path(os.environ.get("PNEUMO_OUTPUTS_DIR", REPO_ROOT / "outputs"))

RAW_DIR = DATA_DIR / "raw"
DEMO_DIR = DATA_DIR / "demo"
PREPARED_DIR = DATA_DIR / "prepared"
DEMO_PREPARED_DIR = DEMO_DIR / "prepared"

CONFIGS_DIR = REPO_ROOT / "configs"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PIPELINE_PARAMS_DIR = REPO_ROOT / "pipeline"

KAGGLE_DATASET = "vbookshelf/pneumothorax-chest-xray-images-and-masks"
KAGGLE_FOLDER = "siim-acr-pneumothorax"
KERNEL_NAME = "pneumothorax"


def explore_dir(outputs: Path = OUTPUTS_DIR) -> Path:
    """Where 01_explore writes its statistics."""
    return Path(outputs) / "explore"


def prepared_dir(split_mode: str, img_size: int, root: Path = PREPARED_DIR) -> Path:
    """The folder 02_prepare writes for one split mode and image size."""
    return Path(root) / f"{split_mode}-{img_size}"


def run_dir(config: str, lr: float, outputs: Path = OUTPUTS_DIR) -> Path:
    """The work_dir of one training run: ``outputs/runs/<config>/lr<lr>/``."""
    return Path(outputs) / "runs" / config_name(config) / f"lr{lr:g}"


def fold_run_dir(config: str, lr: float, fold: int, outputs: Path = OUTPUTS_DIR) -> Path:
    """The work_dir of one fold's run in a k-fold sweep: ``outputs/runs/<config>/lr<lr>_fold<k>/``."""
    single = run_dir(config, lr, outputs)
    return single.with_name(f"{single.name}_fold{int(fold)}")


def fold_split_file(fold: int, part: str) -> str:
    """The split file of one fold that 02_prepare writes with ``folds=K``: ``fold<k>_train.txt`` / ``fold<k>_val.txt``."""
    if part not in ("train", "val"):
        raise ValueError(f"a fold has a train and a val part, not {part!r}")
    return f"fold{int(fold)}_{part}.txt"


def eval_dir(run: Path, split: str, outputs: Path = OUTPUTS_DIR) -> Path:
    """Where 04_evaluate writes the results of one run on one split."""
    run = Path(run)
    return Path(outputs) / "eval" / f"{run.parent.name}_{run.name}" / split


def config_name(config: str | Path) -> str:
    """A config's name: its file name without ``.py`` (names hold dots, as in ``...-0.01-20k...``)."""
    return Path(config).name.removesuffix(".py")


def config_path(config: str | Path) -> Path:
    """Resolve a config given by name (``demo_unet-...``) or path."""
    candidate = Path(config)
    if candidate.suffix == ".py" and candidate.exists():
        return candidate.resolve()
    named = CONFIGS_DIR / f"{config_name(config)}.py"
    if named.exists():
        return named
    raise FileNotFoundError(f"{config}: no such config (looked for it as a path and in {CONFIGS_DIR})")


def resolve(path: str | Path) -> Path:
    """A path as given when absolute, else relative to the repository root (not the kernel's cwd)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def trained_runs(outputs: Path = OUTPUTS_DIR) -> list[Path]:
    """Every finished run folder under ``outputs/runs/`` (one with a metrics.json)."""
    return sorted(p.parent for p in (Path(outputs) / "runs").glob("*/lr*/metrics.json"))


def evaluations(outputs: Path = OUTPUTS_DIR, split: str = "test") -> list[Path]:
    """Every 04_evaluate folder of ``split`` under ``outputs/eval/``."""
    return sorted(p.parent for p in (Path(outputs) / "eval").glob(f"*/{split}/eval.json"))
