"""What each pipeline step was made from, so that a re-run skips the steps whose inputs have not changed.

A step (a stage of the pipeline, or one training run of the sweep) has *inputs*: its notebook's content,
its parameters, the config's content (training), the code version (the content of ``helpers/``) and the
manifests of what it reads (the prepared folder's ``manifest.json``, the records of the steps before it).
Their hash is the step's *fingerprint*. When the step has finished, its record (JSON) holds the inputs,
the fingerprint, the outputs it must have left and a *result id* that changes whenever the step runs
again; the steps after it take that id among their inputs, so a rerun propagates downstream.

A step is *done* when its record says finished, its fingerprint equals the current one and every output it
names exists and reads back (JSON and notebooks parse, a prepared manifest names its image size, a ``.npy``
array's size matches its header): a truncated or overwritten output is never taken for a finished step. A
training run whose record says started (it was interrupted) resumes from its last checkpoint when the
fingerprint still matches. A record that does not parse is never taken for a missing one: :func:`read_record`
raises naming it, and :func:`status` says so in its reason.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from helpers.core import paths
from helpers.core.fileio import CorruptFileError, atomic_write_json, check_readable, read_json
from helpers.data.prepared_folder import LABELS_FILE, read_prepared
from helpers.data.prepared_folder import MANIFEST_FILE as PREPARED_MANIFEST_FILE

STARTED, FINISHED = "started", "finished"


def file_hash(path: Path | str) -> str | None:
    """sha256 of a file's bytes; None when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree_hash(files: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        name = path.relative_to(root) if path.is_relative_to(root) else path.name
        digest.update(str(name).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the helpers package this process runs


@functools.lru_cache(maxsize=1)
def code_hash() -> str:
    """The code version that decides a result: a hash of every ``helpers/**/*.py`` of the running package (edits
    to tests, README or benchmarks rerun nothing)."""
    return _tree_hash([p for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts], PACKAGE_DIR)


def notebook_hash(stage: str) -> str | None:
    """A hash of what runs of ``notebooks/<stage>.ipynb``: its code cells' sources, in order (None when there is no
    notebook). Outputs, execution counts, metadata and markdown are not in it: saving a notebook in JupyterLab,
    run or not, changes no record; editing a code cell does. The parameters are a record's input of their own."""
    import nbformat

    path = paths.NOTEBOOKS_DIR / f"{stage}.ipynb"
    if not path.is_file():
        return None
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable notebook ({err})") from err
    sources = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    return hashlib.sha256(json.dumps(sources).encode()).hexdigest()


def config_hash(config: str | Path) -> str:
    """A hash of a config file and the shared ``configs/_base_/`` files it may inherit from."""
    return _tree_hash([paths.config_path(config), *(paths.CONFIGS_DIR / "_base_").glob("*.py")], paths.CONFIGS_DIR)


def fingerprint(inputs: dict) -> str:
    """The hash of a step's inputs (a JSON-able dict; key order does not matter)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Status:
    """Where one step stands against its record: ``done`` (skip it), ``resumable`` (an interrupted run of the
    same inputs), else why it runs (``reason``)."""

    done: bool
    resumable: bool
    reason: str
    unreadable: str | None = None  # the record or an output is there but does not read back: which, and why


# What to do about a record that does not parse (the step's own outputs are not touched by deleting it).
RECORD_REMEDY = "it is the record of what this step was made from: delete it, and the step runs again"


def read_record(path: Path | str, remedy: str = RECORD_REMEDY) -> dict | None:
    """A step's record, or None when there is none; one that does not parse raises
    :class:`helpers.core.fileio.CorruptFileError` naming it and ``remedy``."""
    path = Path(path)
    if not path.is_file():
        return None
    record = read_json(path, remedy)
    if not isinstance(record.get("inputs", {}), dict):
        raise CorruptFileError(f"{path}: its inputs are not a mapping (not a record of this project); {remedy}")
    return record


def check_output(path: Path | str) -> None:
    """Raise :class:`helpers.core.fileio.CorruptFileError` unless one of a step's outputs reads back (as
    :func:`helpers.core.fileio.check_readable` checks it; a prepared folder's manifest must also name its
    image size)."""
    path = Path(path)
    check_readable(path)
    if path.name == PREPARED_MANIFEST_FILE and (path.parent / LABELS_FILE).exists():
        read_prepared(path.parent)


def changed_inputs(old: dict, new: dict) -> list[str]:
    """The names of the inputs that differ between two records' inputs."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def status(path: Path | str, inputs: dict, outputs: list[Path | str] = ()) -> Status:
    """Compare a step's record with its current ``inputs`` and check that its ``outputs`` exist and read back;
    an unreadable record or output is not done, and ``unreadable`` says which file and why."""
    try:
        record = read_record(path)
    except CorruptFileError as err:
        return Status(False, False, f"its record does not read back: {err}", unreadable=str(err))
    if record is None:
        return Status(False, False, "no record")
    if record.get("fingerprint") != fingerprint(inputs):
        changed = changed_inputs(record.get("inputs", {}), inputs)
        return Status(False, False, f"changed: {', '.join(changed) or 'inputs'}")
    if record.get("state") != FINISHED:
        return Status(False, True, "interrupted")
    for output in outputs:
        if not Path(output).exists():
            return Status(False, False, f"output missing: {output}")
        try:
            check_output(output)
        except CorruptFileError as err:
            return Status(False, False, f"output unreadable: {err}", unreadable=str(err))
    return Status(True, False, "up to date")


def write_record(
    path: Path | str, inputs: dict, state: str, outputs: list[Path | str] = (), *, result_id: str | None = None
) -> dict:
    """Write a step's record atomically (``state`` STARTED before it runs, FINISHED after); returns it.

    A finished step gets ``result_id`` (default: new for every run, so the steps after it rerun too)."""
    record = {
        "state": state,
        "fingerprint": fingerprint(inputs),
        "inputs": inputs,
        "outputs": [str(p) for p in outputs],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if state == FINISHED:
        record["result_id"] = result_id or fingerprint(
            {"fingerprint": record["fingerprint"], "finished": time.time_ns()}
        )
    atomic_write_json(Path(path), record)
    return record


def result_id(path: Path | str) -> str | None:
    """The result id of a finished step (what the steps after it take as input); None otherwise."""
    record = read_record(path)
    return record.get("result_id") if record and record.get("state") == FINISHED else None


# Parameters that change where or how fast a step runs, not what it produces: not part of its record.
NOT_INPUTS = ("work_dir", "resume", "workers", "outputs_dir")


def prepared_manifest_hash(prepared_root: str | Path | None) -> str | None:
    """The hash of a prepared folder's manifest.json (02's output, an input of 03 and 04); None without one."""
    return file_hash(paths.resolve(prepared_root) / PREPARED_MANIFEST_FILE) if prepared_root else None
