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
