"""The schemes by name, the one that wins on val, and a run's tuned scheme as predict and export apply it.

04_evaluate tunes every scheme of :data:`SCHEMES` on val and writes them, with the name of the val winner
(the higher best val image Dice; ties go to the triplet), into the evaluation's ``eval.json``
(``schemes``, ``val_winner``). :func:`find_tuned_postprocess` reads it back for a run's checkpoint:
the winner by default, or a scheme by name (``triplet``, ``dual``/``dual_threshold``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from helpers.core import run_folders
from helpers.postprocessing.base import Scheme
from helpers.postprocessing.dual_threshold import DualThreshold
from helpers.postprocessing.prediction_set import Predictions
from helpers.postprocessing.triplet import PostProcess

SCHEMES: dict[str, type] = {PostProcess.name: PostProcess, DualThreshold.name: DualThreshold}
WINNER = "winner"  # the val winner, predict's and export's default
NONE = "none"
ALIASES = {"dual": DualThreshold.name}
CHOICES = (WINNER, PostProcess.name, "dual", NONE)  # predict's and export's --postprocess


def scheme_name(choice: str) -> str:
    """A ``--postprocess`` choice as a scheme name (``winner`` and ``none`` as they are)."""
    name = ALIASES.get(choice, choice)
    if name not in (WINNER, NONE, *SCHEMES):
        raise ValueError(f"postprocess must be one of {', '.join(CHOICES)}, not {choice!r}")
    return name


def tune_schemes(val: Predictions) -> dict[str, tuple[Scheme, pd.DataFrame]]:
    """Every scheme tuned on ``val``: ``{name: (scheme, its tuning grid)}``."""
    return {name: cls.tune(val) for name, cls in SCHEMES.items()}


def val_winner(val_image_dice: dict[str, float]) -> str:
    """The scheme with the highest best val image Dice; ties go to the first in :data:`SCHEMES` (ours)."""
    return max(SCHEMES, key=lambda name: (val_image_dice[name], -list(SCHEMES).index(name)))


def scheme_from_dict(name: str, values: dict) -> Scheme:
    """A scheme from its name and its JSON values."""
    if name not in SCHEMES:
        raise ValueError(f"unknown post-processing scheme {name!r} (known: {', '.join(SCHEMES)})")
    return SCHEMES[name].from_dict(values)


@dataclass
class TunedPostProcess:
    """A scheme tuned on val, with the image shape its areas (pixels) were tuned at."""

    scheme: Scheme
    image_shape: tuple[int, int]  # (height, width) of the evaluated images
    source: str  # the eval.json it came from

    def for_shape(self, height: int, width: int) -> Scheme:
        """The same scheme for an image of another size: areas scaled by the ratio of pixel counts."""
        return self.scheme.scaled((height * width) / (self.image_shape[0] * self.image_shape[1]))

    def describe(self) -> str:
        """One line for the user."""
        return (
            f"post-processing tuned on val ({self.scheme.name}): {self.scheme.describe()} at "
            f"{self.image_shape[1]}x{self.image_shape[0]} (areas scaled to each image's size), from {self.source}"
        )

    def as_dict(self) -> dict:
        """For JSON (the ONNX side-car)."""
        return {
            "scheme": self.scheme.name,
            **self.scheme.as_dict(),
            "image_shape": list(self.image_shape),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict) -> TunedPostProcess:
        """The inverse of :meth:`as_dict` (a side-car without ``scheme`` holds a triplet)."""
        scheme = scheme_from_dict(data.get("scheme", PostProcess.name), data)
        return cls(scheme, (int(data["image_shape"][0]), int(data["image_shape"][1])), str(data["source"]))


def find_tuned_postprocess(
    run_dir: str | Path, checkpoint: str | Path, choice: str = WINNER
) -> TunedPostProcess | None:
    """The scheme 04_evaluate tuned on val for this checkpoint of the run folder ``run_dir``
    (``<outputs>/runs/<config>/lr<lr>``), from its evaluation folders (:func:`helpers.core.run_folders.eval_dir`
    under the same ``<outputs>``, the test split's first): the val winner, or the scheme ``choice`` names; None
    when there is none."""
    wanted = scheme_name(choice)
    if wanted == NONE:
        return None
    run_dir = Path(run_dir).resolve()
    if len(run_dir.parents) < 3:
        return None
    eval_root = run_folders.eval_dir(run_dir, "test", outputs=run_dir.parents[2]).parent
    candidates = sorted(
        eval_root.glob(f"*/{run_folders.EVAL_INFO_FILE}"), key=lambda p: (p.parent.name != "test", p.parent.name)
    )
    for eval_path in candidates:
        info = run_folders.read_eval_file(eval_path.parent)
        metrics_path = eval_path.parent / run_folders.EVAL_METRICS_FILE
        if Path(info.get("checkpoint", "")).name != Path(checkpoint).name or not metrics_path.is_file():
            continue
        metrics = run_folders.read_eval_file(eval_path.parent, run_folders.EVAL_METRICS_FILE)
        if metrics.get("postprocess", {}).get("tuned_on") != "val":
            continue
        name = (info.get("val_winner") or PostProcess.name) if wanted == WINNER else wanted
        values = info.get("schemes", {}).get(name) or (info["postprocess"] if name == PostProcess.name else None)
        if values is None:
            continue
        height, width = metrics["image_shape"]
        return TunedPostProcess(scheme_from_dict(name, values), (int(height), int(width)), str(eval_path))
    return None
