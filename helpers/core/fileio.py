"""Atomic file writes: write to a temporary name in the same folder, then rename; and reading back what a step
wrote, trusting nothing that does not parse.

The temporary file is created as ``open()`` creates a file (mode 0666 less the umask: 0644 under umask 022),
not with ``mkstemp``'s 0600, so that what the project writes is as readable as any other file of its user.

Every reader of a JSON file the project wrote (manifests, records, metrics, eval.json) goes through
:func:`read_json`: a file that does not parse (truncated, overwritten, a disk that filled up under another
tool) raises :class:`CorruptFileError` naming the file, what is wrong and what re-makes it, never a bare
``JSONDecodeError``. :func:`check_readable` is the same test for any output a step's record names.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class CorruptFileError(ValueError):
    """A file the project wrote that does not read back; the message names it, the fault and what to do."""


def read_json(path: Path | str, remedy: str, *, expect: type | None = dict) -> Any:
    """The JSON held in ``path``. One that does not parse, or whose top level is not ``expect`` (an object by
    default), raises :class:`CorruptFileError`: ``<path>: <the fault>; <remedy>``, where ``remedy`` says which
    step re-makes the file (e.g. ``"04_evaluate writes it: re-run 04_evaluate"``). A missing file raises
    FileNotFoundError as ``open`` does."""
    path = Path(path)
    data = path.read_bytes()
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise CorruptFileError(_fault(path, f"not UTF-8 text (byte {err.start})", remedy)) from None
    except json.JSONDecodeError as err:
        where = f"{err.msg} at line {err.lineno} column {err.colno}"
        fault = f"not valid JSON, empty ({where})" if not data.strip() else f"not valid JSON ({where}; truncated?)"
        raise CorruptFileError(_fault(path, fault, remedy)) from None
    if expect is not None and not isinstance(value, expect):
        kind = "an object" if expect is dict else "a list" if expect is list else expect.__name__
        raise CorruptFileError(_fault(path, f"holds {type(value).__name__} where {kind} belongs", remedy))
    return value


def _fault(path: Path, fault: str, remedy: str) -> str:
    return f"{path}: {fault}" + (f"; {remedy}" if remedy else "")


def check_npy(path: Path | str, remedy: str = "") -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a ``.npy`` file's header, reading no data; a header that does not parse, or a file
    whose size is not the header's plus its data's (truncated, or grown), raises :class:`CorruptFileError`."""
    path = Path(path)
    with path.open("rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(handle)
        except (ValueError, EOFError) as err:
            raise CorruptFileError(_fault(path, f"not a .npy array ({err})", remedy)) from None
        expected = handle.tell() + math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        raise CorruptFileError(
            _fault(path, f"{size:,} bytes where its header ({shape}, {dtype}) needs {expected:,} (truncated?)", remedy)
        )
    return tuple(shape), dtype


def check_readable(path: Path | str, remedy: str = "") -> None:
    """Raise :class:`CorruptFileError` unless ``path`` reads back as its kind: ``.json`` and ``.ipynb`` parse,
    a ``.npy``'s header parses and its size matches; other files (and folders) need only exist."""
    path = Path(path)
    if path.is_dir():
        return
    if path.suffix in (".json", ".ipynb"):
        read_json(path, remedy, expect=None)
    elif path.suffix == ".npy":
        check_npy(path, remedy)
    elif not path.exists():
        raise FileNotFoundError(path)


def atomic_write_bytes(path: Path, data: bytes, *, skip_if_same: bool = False) -> bool:
    """Write ``data`` to ``path`` atomically; return False when skipped because the file already holds it."""
    path = Path(path)
    if skip_if_same and path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new file ``.<name>.<random>.tmp`` beside ``path``, opened for writing, with the umask's mode."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_text(path: Path, text: str, *, skip_if_same: bool = False) -> bool:
    """Write text atomically (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"), skip_if_same=skip_if_same)


def atomic_write_json(path: Path, obj: Any, *, skip_if_same: bool = False) -> bool:
    """Write JSON atomically, indented and with sorted keys so that equal content gives equal bytes."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    return atomic_write_text(path, text, skip_if_same=skip_if_same)


def json_safe(obj: Any) -> Any:
    """``obj`` as strict JSON holds it: NaN and infinities as None, tuples as lists, numpy scalars as Python's."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def scratch_prefix(tag: str) -> str:
    """The name start of a scratch folder this process makes: ``<tag><host>-<pid>-`` (``tempfile`` adds the
    rest), so that :func:`remove_dead_scratch` can tell whose it is."""
    return f"{tag}{socket.gethostname()}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_dead_scratch(folder: Path | str, tag: str) -> list[Path]:
    """Remove the scratch folders ``<tag><host>-<pid>-*`` in ``folder`` whose process on this host has died
    (SIGKILL, out of memory, a pre-empted job): a killed stage's partial notebook, a killed evaluation's
    predictions. Those of live processes, of other hosts, and other names are kept. Returns the removed ones."""
    removed, host = [], socket.gethostname()
    for path in sorted(Path(folder).glob(f"{tag}*")):
        owner = path.name[len(tag) :].rpartition("-")[0]  # "<host>-<pid>", then tempfile's suffix
        owner_host, _, pid = owner.rpartition("-")
        if not path.is_dir() or owner_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        log.warning("%s: removed the scratch folder of a process that died (pid %s)", path, pid)
        removed.append(path)
    return removed
