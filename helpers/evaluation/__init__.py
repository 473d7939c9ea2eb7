"""Evaluation: predictions and labels in, metrics, intervals, seen / unseen, comparison and report files out.
Never loads a model (nnU-Net's rule): helpers.workflow.evaluate_runs runs a model, then hands its predictions here.

- :mod:`.report`: :func:`evaluate_predictions`, the one entry that scores a split and writes its folder.
- :mod:`.schemes`: the post-processing schemes scored side by side.
- :mod:`.seen_unseen`: images of patients seen in training against the others.
- :mod:`.tables`: the per-run tables and the comparison across runs.
- :mod:`.paired`: each run against the best run of its split, on the same patients (paired bootstrap), and the
  smallest difference that comparison could detect on the split.
- :mod:`.model_card`: the model card of an evaluated run (``MODEL_CARD.md``).
"""

from helpers.evaluation.model_card import model_card, model_cards, write_model_card
from helpers.evaluation.paired import (
    PAIRED_FILE,
    detectable_sentence,
    paired_comparison,
    paired_style,
    write_paired,
)
from helpers.evaluation.report import (
    DEFINITIONS,
    EvalResult,
    PredictionSource,
    evaluate_predictions,
    load_eval,
    predicted_mask,
)
from helpers.evaluation.schemes import compare_schemes, schemes_table
from helpers.evaluation.tables import (
    SEED_RESULTS,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_REFERENCE,
    FailedEvaluation,
    comparison_style,
    comparison_table,
    interval_text,
    metrics_table,
    schemes_style,
    seen_unseen_style,
    write_comparison,
)

__all__ = [
    "DEFINITIONS",
    "PAIRED_FILE",
    "SEED_RESULTS",
    "STATUS_FAILED",
    "STATUS_OK",
    "STATUS_REFERENCE",
    "EvalResult",
    "FailedEvaluation",
    "PredictionSource",
    "compare_schemes",
    "detectable_sentence",
    "comparison_style",
    "comparison_table",
    "evaluate_predictions",
    "interval_text",
    "load_eval",
    "metrics_table",
    "model_card",
    "model_cards",
    "paired_comparison",
    "paired_style",
    "predicted_mask",
    "schemes_style",
    "schemes_table",
    "seen_unseen_style",
    "write_comparison",
    "write_model_card",
    "write_paired",
]
