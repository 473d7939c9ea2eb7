"""One split's predictions: what inference hands to post-processing and evaluation (arrays, or stacks on disk
(helpers.core.stacks); no model)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from helpers.core.stacks import Stack


@dataclass
class Predictions:
    """One split's model output: quantized probabilities, truth, and mmseg's own decision (from the logits,
    not from ``probs``, so that its pooled metrics are exactly ``IoUMetric``'s)."""

    names: list[str]
    # the per-pixel stacks are arrays, or helpers.core.stacks.Stack (on disk, read image by image) when predicted
    # with store=
    probs: np.ndarray | Stack  # (N, H, W) uint8, round(255 * p_pneumothorax)
    truth: np.ndarray | Stack  # (N, H, W) bool
    default_counts: np.ndarray  # (N, 4) [tp, fp, fn, tn] of mmseg's decision
    max_prob: np.ndarray  # (N,) float
    default_pred: np.ndarray | Stack  # (N, H, W) bool, mmseg's decision
