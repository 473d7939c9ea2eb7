"""Where the original SIIM-ACR release is: its folders, found under a root, and what to tell a notebook given it.

Apart from :mod:`helpers.data.siim_convert` (the conversion) so that :mod:`helpers.data.rawdata` can point a user who
gives the release as ``raw_root`` to ``convert-siim`` without importing the conversion (which imports ``rawdata``).
"""

from __future__ import annotations

from pathlib import Path

RELEASE_FOLDERS = {"train": "dicom-images-train", "test": "dicom-images-test"}


def find_release(src: str | Path) -> Path | None:
    """The folder holding ``dicom-images-train/`` or ``dicom-images-test/``: ``src`` or one folder below it
    (copies add ``siim/``); None when neither is there."""
    src = Path(src)
    candidates = [src] + (sorted(p for p in src.iterdir() if p.is_dir()) if src.is_dir() else [])
    for candidate in candidates:
        if any((candidate / folder).is_dir() for folder in RELEASE_FOLDERS.values()):
            return candidate
    return None


def not_converted_message(root: str | Path) -> str | None:
    """For a notebook given the release instead of the Kaggle layout: what to run, or None if not a release."""
    release = find_release(root)
    if release is None:
        return None
    return (
        f"{root} is the original SIIM-ACR release (DICOM files and RLE masks), which the notebooks read once "
        f"it is converted to the Kaggle PNG layout:\n    python -m helpers convert-siim {release} OUT "
        f"[--kaggle-csvs FOLDER_WITH_THE_KAGGLE_CSVS]\nthen set raw_root to OUT."
    )
