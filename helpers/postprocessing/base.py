"""What every post-processing scheme shares: the comparison ``p > t`` and the interface a scheme implements.

A scheme is a small dataclass of its tuned values with a class-level ``name``; it can be tuned on val
(``tune(val) -> (scheme, grid)``), applied to one probability map (``apply(prob) -> mask``), rescaled to
an image of another size (``scaled(ratio)``, areas are in pixels) and written to / read from JSON
(``as_dict`` / ``from_dict``). :data:`SCHEMES` lists them by name; a new scheme is one module and one
entry there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import ClassVar, Protocol

import numpy as np
import pandas as pd

from helpers.core.metrics import pixel_counts
from helpers.postprocessing.prediction_set import Predictions


class Scheme(Protocol):
    """The interface of a post-processing scheme (see the module doc)."""

    name: ClassVar[str]

    def apply(self, prob: np.ndarray) -> np.ndarray: ...

    def scaled(self, ratio: float) -> Scheme: ...

    def describe(self) -> str: ...

    def as_dict(self) -> dict: ...

    @classmethod
    def from_dict(cls, data: dict) -> Scheme: ...

    @classmethod
    def tune(cls, val: Predictions) -> tuple[Scheme, pd.DataFrame]: ...


class SchemeValues:
    """JSON for a scheme dataclass: its fields as a plain dict, and back (each value cast to its default's type)."""

    def as_dict(self) -> dict:
        """The fields as a plain dict (for JSON)."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict):
        """The inverse of :meth:`as_dict` (extra keys, such as ``image_shape``, are ignored)."""
        return cls(**{f.name: type(f.default)(data[f.name]) for f in fields(cls)})  # type: ignore[arg-type]


def binarize(prob: np.ndarray, threshold: float) -> np.ndarray:
    """``p > threshold``, with uint8 input read as ``p = value / 255`` (the comparison every scheme uses)."""
    prob = np.asarray(prob)
    return prob > threshold * 255 if prob.dtype == np.uint8 else prob > threshold


def area_grid(fractions: Sequence[float], pixels: int) -> np.ndarray:
    """Areas in pixels (sorted, unique) for ``fractions`` of an image of ``pixels`` pixels."""
    return np.array(sorted({int(round(f * pixels)) for f in fractions}), dtype=np.int64)


def scheme_counts(preds: Predictions, scheme: Scheme) -> np.ndarray:
    """(N, 4) pixel counts ``[tp, fp, fn, tn]`` of ``scheme``'s masks against the truth."""
    counts = [pixel_counts(scheme.apply(p), t) for p, t in zip(preds.probs, preds.truth, strict=True)]
    return np.array(counts).reshape(-1, 4)
