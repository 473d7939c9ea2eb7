"""The original SIIM-ACR 2019 release (DICOM + RLE) -> the Kaggle PNG layout: ``python -m helpers convert-siim``.

The release: ``dicom-images-train/<Study>/<Series>/<SOPInstanceUID>.dcm``, the same under
``dicom-images-test/``, and one or several RLE CSVs (``train-rle.csv``, the later stage-1 test labels; see
:mod:`helpers.data.rle`), possibly under one top folder (``siim/``). The ImageId is a DICOM file's stem.

The output is the Kaggle dataset's layout (:mod:`helpers.data.rawdata`), which 01..05 read unchanged:
``png_images/NAME`` (the DICOM's 8-bit pixels exactly), ``png_masks/NAME`` (the union of the image's RLE
rows, {0, 255}), ``stage_1_train_images.csv`` and ``stage_1_test_images.csv`` (``new_filename, ImageId,
has_pneumo``), listing the converted images only.

Names: with ``kaggle_csvs`` (a folder holding the Kaggle dataset's two CSVs) each image gets its Kaggle name
and stage (``10_train_1_.png``) and the written CSVs are the Kaggle CSVs' own lines for the converted images
(the full release gives them byte for byte). Without it: ``<ImageId>_<stage>_<has_pneumo>_.png``, the stage
being the release folder's (``dicom-images-train`` -> train, ``dicom-images-test`` -> test) and the rows
sorted by ImageId.

Images without an RLE row, RLE rows without an image, RLE CSVs that disagree about an image, images missing
from the Kaggle CSVs and files that cannot be decoded are counted, listed in ``siim_conversion_report.csv``
(``path, image_id, problem``) and skipped; the others go on. Every file is written atomically and only when
its bytes change, so an interrupted run resumes and a re-run writes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.core.fileio import atomic_write_bytes, atomic_write_text
from helpers.core.parallel import parallel_map
from helpers.data.dicom import DicomError, gray8_of, is_dicom, read_dataset, stored_pixels
from helpers.data.images import encode_png
from helpers.data.rawdata import CSV_COLUMNS, CSV_FILES, IMAGES_FOLDER, MASKS_FOLDER
from helpers.data.rle import EMPTY, RleError, is_rle_csv, read_rle_csv, union_mask
from helpers.data.siim_layout import RELEASE_FOLDERS, find_release

REPORT_FILE = "siim_conversion_report.csv"
REPORT_COLUMNS = ["path", "image_id", "problem"]


class SiimError(ValueError):
    """A source that is not the SIIM release, or a problem that stops the whole conversion; names the path."""


@dataclass
class ConversionResult:
    """What one conversion did: ``converted`` images, ``written`` files whose bytes changed (image/mask pairs
    and CSVs; 0 on a re-run), and the ``problems`` table (``path, image_id, problem``) also written to
    ``report_path``."""

    out_dir: Path
    converted: int
    written: int
    problems: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=REPORT_COLUMNS))
    report_path: Path | None = None

    @property
    def unreadable(self) -> int:
        """Files that could not be converted (decoder errors, bad RLE, not DICOM, not writable): the command
        then exits 1."""
        kinds = self.problems["problem"].map(_problem_kind)
        return int(kinds.isin(["unreadable", "not a DICOM file", "RLE CSVs disagree", "cannot be written"]).sum())

    def summary(self) -> str:
        """One line: converted, written, and each kind of problem counted."""
        text = (
            f"{self.converted} images converted into {self.out_dir} ({self.written} files written, the rest unchanged)"
        )
        if len(self.problems):
            kinds = self.problems["problem"].map(_problem_kind).value_counts()
            text += "; skipped: " + ", ".join(f"{count} {kind}" for kind, count in kinds.items())
            text += f" (listed in {self.report_path})"
        return text


def _problem_kind(problem: str) -> str:
    for kind in (
        "no RLE row",
        "no DICOM image",
        "RLE CSVs disagree",
        "not in the Kaggle CSVs",
        "has_pneumo",
        "not a DICOM file",
        "duplicate",
        "cannot be written",
    ):
        if kind in problem:
            return kind
    return "unreadable"


def find_rle_csvs(src: Path, release: Path) -> list[Path]:
    """The RLE CSVs (by their header) in ``src`` and in the release folder, sorted by name."""
    found = {p for folder in {src, release} for p in folder.glob("*.csv") if is_rle_csv(p)}
    return sorted(found)


def find_dicoms(release: Path) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    """``image_id, stage, path`` of every DICOM file under the release folders, and the problems (other files,
    an ImageId found twice)."""
    rows, problems = [], []
    for stage, folder in RELEASE_FOLDERS.items():
        for path in sorted(p for p in (release / folder).rglob("*") if p.is_file()):
            if path.name.startswith("."):
                continue
            if path.suffix.lower() != ".dcm" and not is_dicom(path):
                problems.append((str(path), "", "not a DICOM file (skipped)"))
                continue
            rows.append(
                {
                    "image_id": path.stem if path.suffix.lower() == ".dcm" else path.name,
                    "stage": stage,
                    "path": str(path),
                }
            )
    table = pd.DataFrame(rows, columns=["image_id", "stage", "path"])
    repeated = table["image_id"].duplicated(keep=False)
    for row in table[repeated].itertuples():
        problems.append((row.path, row.image_id, "duplicate ImageId: several DICOM files have this name (skipped)"))
    return table[~repeated].reset_index(drop=True), problems


def read_labels(csvs: list[Path]) -> tuple[dict[str, list[tuple[str, ...]]], dict[str, str]]:
    """Per ImageId, the RLE rows of each CSV that names it (a tuple per CSV, in CSV order) and the first CSV's
    path (for reports)."""
    labels: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    source: dict[str, str] = {}
    for csv in csvs:
        table = read_rle_csv(csv)
        for image_id, group in table.groupby("image_id", sort=False):
            labels[image_id].append(tuple(group["rle"]))
            source.setdefault(image_id, str(csv))
    return dict(labels), source


def _has_pneumo(rles: tuple[str, ...]) -> int:
    return int(any(rle not in ("", EMPTY) for rle in rles))


def convert_image(job: tuple[str, str, str, str, list[tuple[str, ...]]]) -> tuple[str, str, bool]:
    """Convert one DICOM and its RLE rows: ``(image_id, problem, written)``, ``problem`` empty on success.

    Every failure (unreadable file, any decoder error, a bad RLE, CSVs that disagree) becomes the problem,
    naming the file or the ImageId, and leaves no output for the image.
    """
    dicom_path, image_id, image_out, mask_out, label_sets = job
    try:
        ds = read_dataset(dicom_path)
        stored = stored_pixels(dicom_path, ds)
        exact = (
            stored.dtype == np.uint8
            and str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME2"
            and "WindowCenter" not in ds
            and "VOILUTSequence" not in ds
        )
        gray = stored if exact else gray8_of(dicom_path, ds, stored)
        height, width = gray.shape
        masks = [union_mask(list(rles), height, width, image_id) for rles in label_sets]
        if any(not np.array_equal(masks[0], other) for other in masks[1:]):
            raise RleError(f"{image_id}: the RLE CSVs disagree about this image's mask")
        image_bytes = encode_png(np.ascontiguousarray(gray))
        mask_bytes = encode_png(masks[0].astype(np.uint8) * 255)
    except (DicomError, RleError, FileNotFoundError) as err:
        _remove(image_out, mask_out)
        return image_id, str(err), False
    except Exception as err:  # noqa: BLE001 - a decoder plugin's own error: still this file's problem, named
        _remove(image_out, mask_out)
        return image_id, f"{dicom_path}: cannot be converted ({type(err).__name__}: {err})", False
    try:
        written = atomic_write_bytes(Path(image_out), image_bytes, skip_if_same=True)
        written = atomic_write_bytes(Path(mask_out), mask_bytes, skip_if_same=True) or written
    except OSError as err:  # a full disk, a read-only folder: the pair is written whole or not at all
        _remove(image_out, mask_out)
        return image_id, f"{image_out}: cannot be written ({err})", False
    return image_id, "", written


def _remove(*paths: str) -> None:
    """Delete an image's outputs where they exist (a folder that is not one holds none)."""
    for path in paths:
        try:
            Path(path).unlink(missing_ok=True)
        except NotADirectoryError:
            pass


def _kaggle_lines(kaggle_csvs: Path) -> dict[str, tuple[str, list[str], dict[str, tuple[int, str, int]]]]:
    """Per stage: the header line, every line, and per ImageId (line index, new_filename, has_pneumo)."""
    stages = {}
    for stage, filename in CSV_FILES.items():
        path = Path(kaggle_csvs) / filename
        if not path.is_file():
            raise SiimError(
                f"{path}: the Kaggle CSV is missing (--kaggle-csvs needs {' and '.join(CSV_FILES.values())})"
            )
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        header = lines[0].lstrip("\ufeff").strip().split(",") if lines else []
        if header != CSV_COLUMNS:
            raise SiimError(f"{path}: columns are {header}, expected {CSV_COLUMNS}")
        rows = {}
        for number, line in enumerate(lines[1:], start=1):
            if not line.strip():
                continue
            name, image_id, flag = (part.strip() for part in line.split(","))
            rows[image_id] = (number, name, int(flag))
        stages[stage] = (lines[0], lines, rows)
    return stages


def convert_siim(
    src: str | Path, out_dir: str | Path, *, kaggle_csvs: str | Path | None = None, workers: int | None = None
) -> ConversionResult:
    """Convert the SIIM release under ``src`` into the Kaggle layout under ``out_dir`` (see the module doc).

    Raises :class:`SiimError` when ``src`` is not the release or holds no RLE CSV; per-image problems are
    reported, not raised.
    """
    src, out_dir = Path(src), Path(out_dir)
    release = find_release(src)
    if release is None:
        raise SiimError(
            f"{src}: not the SIIM-ACR release (no {' or '.join(RELEASE_FOLDERS.values())} folder here "
            "or one folder below)"
        )
    csvs = find_rle_csvs(src, release)
    if not csvs:
        raise SiimError(f"{release}: no RLE CSV (a .csv with the columns ImageId and EncodedPixels) here or in {src}")
    labels, label_source = read_labels(csvs)
    dicoms, found_problems = find_dicoms(release)
    problems = [dict(zip(REPORT_COLUMNS, p, strict=True)) for p in found_problems]
    kaggle = _kaggle_lines(Path(kaggle_csvs)) if kaggle_csvs is not None else None
    kaggle_ids = {
        image_id: (stage, row) for stage, (_, _, rows) in (kaggle or {}).items() for image_id, row in rows.items()
    }

    jobs, planned = [], {}
    for row in dicoms.itertuples():
        label_sets = labels.get(row.image_id)
        if label_sets is None:
            problems.append(
                {"path": row.path, "image_id": row.image_id, "problem": "no RLE row for this image (skipped)"}
            )
            continue
        flag = _has_pneumo(label_sets[0])
        if kaggle is not None:
            if row.image_id not in kaggle_ids:
                problems.append(
                    {
                        "path": row.path,
                        "image_id": row.image_id,
                        "problem": "not in the Kaggle CSVs given by --kaggle-csvs (skipped)",
                    }
                )
                continue
            stage, (_, name, kaggle_flag) = kaggle_ids[row.image_id]
            if kaggle_flag != flag:
                problems.append(
                    {
                        "path": row.path,
                        "image_id": row.image_id,
                        "problem": f"has_pneumo is {kaggle_flag} in the Kaggle CSV but the RLE rows of "
                        f"{label_source[row.image_id]} give {flag} (skipped)",
                    }
                )
                continue
        else:
            stage, name = row.stage, f"{row.image_id}_{row.stage}_{flag}_.png"
        planned[row.image_id] = (stage, name, flag)
        jobs.append(
            (
                row.path,
                row.image_id,
                str(out_dir / IMAGES_FOLDER / name),
                str(out_dir / MASKS_FOLDER / name),
                label_sets,
            )
        )
    present = set(dicoms["image_id"])
    for image_id in sorted(set(labels) - present):
        problems.append(
            {
                "path": label_source[image_id],
                "image_id": image_id,
                "problem": "RLE row(s) with no DICOM image in the release (skipped)",
            }
        )

    results = parallel_map(convert_image, jobs, workers=workers, desc="convert-siim")
    converted, written = set(), 0
    for (path, *_), (image_id, problem, changed) in zip(jobs, results, strict=True):
        if problem:
            problems.append({"path": path, "image_id": image_id, "problem": problem})
        else:
            converted.add(image_id)
            written += bool(changed)

    for stage, filename in CSV_FILES.items():
        if kaggle is not None:
            header, lines, rows = kaggle[stage]
            keep = sorted(number for image_id, (number, _, _) in rows.items() if image_id in converted)
            text = header + "".join(lines[number] for number in keep)
        else:
            entries = sorted(
                (image_id, name, flag)
                for image_id, (s, name, flag) in planned.items()
                if s == stage and image_id in converted
            )
            text = (
                ",".join(CSV_COLUMNS)
                + "\n"
                + "".join(f"{name},{image_id},{flag}\n" for image_id, name, flag in entries)
            )
        written += atomic_write_text(out_dir / filename, text, skip_if_same=True)
    report = pd.DataFrame(problems, columns=REPORT_COLUMNS).sort_values(["path", "image_id"], kind="stable")
    report_path = out_dir / REPORT_FILE
    atomic_write_text(report_path, report.to_csv(index=False), skip_if_same=True)
    return ConversionResult(out_dir, len(converted), written, report.reset_index(drop=True), report_path)
