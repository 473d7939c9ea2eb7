"""Post-processing of probability maps: arrays in, arrays out; no model code (see helpers.postprocessing.base).

- :mod:`.predictions`: one split's predictions (the data type inference hands on).
- :mod:`.base`: the scheme interface, ``p > t``, area grids, counts.
- :mod:`.triplet`: our triplet (threshold, min component area, min total area).
- :mod:`.dual_threshold`: the SIIM-ACR 1st place's dual threshold.
- :mod:`.tuned`: the schemes by name, the val winner, a run's tuned scheme for predict and export.
"""

from helpers.postprocessing.base import Scheme, area_grid, binarize, scheme_counts
from helpers.postprocessing.dual_threshold import DualThreshold, apply_dual_threshold, tune_dual_threshold
from helpers.postprocessing.prediction_set import Predictions
from helpers.postprocessing.triplet import PostProcess, apply_postprocess, postprocess_counts, tune_postprocess
from helpers.postprocessing.tuned import (
    CHOICES,
    SCHEMES,
    TunedPostProcess,
    find_tuned_postprocess,
    scheme_name,
    tune_schemes,
    val_winner,
)

__all__ = [
    "CHOICES",
    "SCHEMES",
    "DualThreshold",
    "PostProcess",
    "Predictions",
    "Scheme",
    "TunedPostProcess",
    "apply_dual_threshold",
    "apply_postprocess",
    "area_grid",
    "binarize",
    "find_tuned_postprocess",
    "postprocess_counts",
    "scheme_counts",
    "scheme_name",
    "tune_dual_threshold",
    "tune_postprocess",
    "tune_schemes",
    "val_winner",
]
