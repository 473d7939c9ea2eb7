"""Load mmengine checkpoints under torch >= 2.6 with ``weights_only`` kept on.

torch 2.6 made ``torch.load(weights_only=True)`` the default; mmengine 0.10.7 checkpoints hold a few
non-tensor objects (its message hub's HistoryBuffer, numpy arrays and scalars), which the safe unpickler
refuses. Rather than switching the check off (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` would let a
checkpoint run arbitrary code), we allowlist exactly those classes.

HistoryBuffer's own pickle also stores its statistics functions as ``getattr(HistoryBuffer, 'min')``;
allowlisting ``getattr`` would open the door again (``getattr`` chains reach ``os.system``). So the
project pickles a HistoryBuffer as ``HistoryBuffer(log_history, count_history, max_length)`` instead
(a ``copyreg`` reducer: the same buffer, and its statistics are class-level anyway). Checkpoints that
the project writes therefore load with ``weights_only=True``; one written by plain mmengine does not.
"""

from __future__ import annotations

import copyreg
import pickle
import re
from pathlib import Path

import numpy as np
import torch


def mmengine_checkpoint_globals() -> list:
    """The classes and functions an mmengine checkpoint's pickle refers to, besides tensors."""
    from mmengine.logging.history_buffer import HistoryBuffer

    numpy_dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.uint8, np.bool_)]
    return [
        HistoryBuffer,
        np._core.multiarray._reconstruct,
        np._core.multiarray.scalar,
        np.ndarray,
        np.dtype,
        *numpy_dtypes,
    ]


def _reduce_history_buffer(buffer) -> tuple:
    return type(buffer), (buffer._log_history, buffer._count_history, buffer.max_length)


def allow_mmengine_checkpoints() -> None:
    """Pickle HistoryBuffers by their data, and allowlist what the checkpoints then hold (idempotent)."""
    from mmengine.logging.history_buffer import HistoryBuffer

    copyreg.pickle(HistoryBuffer, _reduce_history_buffer)
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())


def load_checkpoint_safely(path: Path | str, map_location: str = "cpu") -> dict:
    """``torch.load`` with ``weights_only=True``: tensors and the allowlisted classes only."""
    allow_mmengine_checkpoints()
    return torch.load(path, map_location=map_location, weights_only=True)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable (truncated, corrupted), foreign (not this project's kind of
    file, or of another model), or holding non-finite weights. The message names the file."""


class NonFiniteModelError(CheckpointError):
    """A checkpoint whose weights hold NaN or infinity (a diverged training)."""


def read_checkpoint(path: Path | str) -> dict:
    """A checkpoint file's contents as ``{'state_dict': ..., 'meta': ...}`` (a bare state dict is wrapped),
    loaded with ``weights_only``; any failure is one :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        loaded = load_checkpoint_safely(path)
    except Exception as err:  # torch's zip reader, EOFError, the safe unpickler, ...: they name no file
        foreign = (
            re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
            if isinstance(err, pickle.UnpicklingError)
            else None
        )
        if foreign:
            raise CheckpointError(
                f"{path}: not a checkpoint this project can load: it refers to {foreign[1]}, which "
                "a file of weights does not hold (written by another program?)"
            ) from err
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: unreadable checkpoint, truncated or corrupted: the file is empty") from err
        raise CheckpointError(
            f"{path}: unreadable checkpoint, truncated or corrupted ({type(err).__name__}: {_error_line(err)})"
        ) from err
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path}: not a checkpoint: it holds a {type(loaded).__name__}, not a dict of weights")
    state = loaded.get("state_dict", loaded)
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path}: not a model checkpoint: no state_dict of tensors in it")
    return {"meta": {}, **loaded} if "state_dict" in loaded else {"state_dict": state, "meta": {}}


def _error_line(err: BaseException) -> str:
    """What a loader's error says is wrong, in one sentence (torch's safe unpickler says it after its advice)."""
    text = str(err).strip()
    said = re.search(r"WeightsUnpickler error:\s*(.*)", text)
    if said:
        return said[1].strip()
    first = text.splitlines()[0] if text else "the file ended early"
    return first.split(". ")[0]


def non_finite_tensors(state_dict: dict) -> list[str]:
    """The names of the floating-point tensors of a state dict that hold NaN or infinity."""
    return [
        name
        for name, tensor in state_dict.items()
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def check_finite(state_dict: dict, source: Path | str) -> None:
    """Raise :class:`NonFiniteModelError` naming ``source`` when a weight is NaN or infinite."""
    bad = non_finite_tensors(state_dict)
    if bad:
        shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise NonFiniteModelError(
            f"{source}: the model holds NaN or infinite weights ({len(bad)} of "
            f"{len(state_dict)} tensors: {shown}); its training diverged, so it cannot be "
            "evaluated, used or exported (retrain with a lower learning rate)"
        )


def check_matches(model: torch.nn.Module, state_dict: dict, source: Path | str, config: Path | str) -> None:
    """Raise :class:`CheckpointError` when ``state_dict`` is not the weights of ``model`` (missing or unexpected
    tensors, or other shapes): a checkpoint of another model than ``config`` builds."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    reshaped = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or reshaped:
        parts = [
            f"{len(names)} {kind} (e.g. {names[0]})"
            for kind, names in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped))
            if names
        ]
        raise CheckpointError(
            f"{source}: not a checkpoint of the model {config} builds: of its "
            f"{len(expected)} tensors, {', '.join(parts)}"
        )


def verified_state_dict(path: Path | str) -> dict:
    """The checkpoint's state dict, readable and finite (else :class:`CheckpointError` naming the file)."""
    state = read_checkpoint(path)["state_dict"]
    check_finite(state, path)
    return state
