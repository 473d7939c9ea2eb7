"""Atomic file writes: write to a temporary name in the same folder, then rename.

The temporary file is created as ``open()`` creates a file (mode 0666 less the umask: 0644 under umask 022),
not with ``mkstemp``'s 0600, so that what the project writes is as readable as any other file of its user.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np


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
