"""Every default path of the repository, derived from its root in one place.

``PNEUMO_DATA_DIR`` and ``PNEUMO_OUTPUTS_DIR`` move the data and outputs folders (a scratch disk on a
GPU node, say); everything else follows from the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("PNEUMO_DATA_DIR", REPO_ROOT / "data"))
OUTPUTS_DIR = Path(os.environ.get("PNEUMO_OUTPUTS_DIR", REPO_ROOT / "outputs"))

RAW_DIR = DATA_DIR / "raw"
DEMO_DIR = DATA_DIR / "demo"
PREPARED_DIR = DATA_DIR / "prepared"
DEMO_PREPARED_DIR = DEMO_DIR / "prepared"
DEMO_OUTPUTS_DIR = OUTPUTS_DIR / "demo"  # where `make demo` writes its runs, evaluations and reports

CONFIGS_DIR = REPO_ROOT / "configs"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PIPELINE_PARAMS_DIR = REPO_ROOT / "pipeline"
DEMO_PARAMS_DIR = PIPELINE_PARAMS_DIR / "demo"  # the demo's YAML: `make demo`'s parameters, a notebook's on fallback

KAGGLE_DATASET = "vbookshelf/pneumothorax-chest-xray-images-and-masks"
KAGGLE_FOLDER = "siim-acr-pneumothorax"
KERNEL_NAME = "pneumothorax"

SEED_CONFIG = "fcn-unet-s5-d16_unet_1xb16-0.01-20k_pneumothorax-512x512"  # the seed's run: 03_train's default
SWEEP_CONFIG = "fcn_unet-s5-d16_1xb16-20k_pneumothorax-512x512"  # the seed's, without an lr in its name: the sweep's
DEMO_CONFIG = "demo_unet-s5-d16-c16_ce-dice_128x128"  # the CPU demo (make demo, the tests, the benchmarks)


def explore_dir(outputs: Path | str = OUTPUTS_DIR) -> Path:
    """Where 01_explore writes its statistics."""
    return resolve(outputs) / "explore"


def prepared_dir(split_mode: str, img_size: int, root: Path | str = PREPARED_DIR) -> Path:
    """The folder 02_prepare writes for one split mode and image size, by default."""
    return resolve(root) / f"{split_mode}-{img_size}"


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
