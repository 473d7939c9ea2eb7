"""Evaluation: predictions and labels in, metrics, intervals, seen / unseen, comparison and report files out.
Never loads a model (nnU-Net's rule): helpers.evaluate_models runs a model, then hands its predictions here.

- :mod:`.report`: :func:`evaluate_predictions`, the one entry that scores a split and writes its folder.
- :mod:`.schemes`: the post-processing schemes scored side by side.
- :mod:`.seen_unseen`: images of patients seen in training against the others.
- :mod:`.tables`: the per-run tables and the comparison across runs.
"""

from helpers.evaluation.report import (DEFINITIONS, EvalResult, PredictionSource, evaluate_predictions, load_eval,
                                       predicted_mask)
from helpers.evaluation.schemes import compare_schemes, schemes_table
from helpers.evaluation.tables import (SEED_RESULTS, comparison_style, comparison_table, metrics_table,
                                       seen_unseen_style, write_comparison)

__all__ = ["DEFINITIONS", "SEED_RESULTS", "EvalResult", "PredictionSource", "compare_schemes", "comparison_style",
           "comparison_table", "evaluate_predictions", "load_eval", "metrics_table", "predicted_mask",
           "schemes_table", "seen_unseen_style", "write_comparison"]
