"""``PneumothoraxMetric``: mmseg's IoUMetric, plus the pneumothorax class's own IoU and Dice as scalars.

The summary keys mmseg logs (aAcc, mIoU, mDice) are IoUMetric's, unchanged; ``IoU.pneumothorax`` and
``Dice.pneumothorax`` are added so that the foreground is logged, plotted and checkpointed on as well.
"""

from __future__ import annotations

import numpy as np
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS

from helpers.core.metrics import pooled_metrics


@METRICS.register_module()
class PneumothoraxMetric(IoUMetric):
    """IoUMetric with mIoU and mDice, and the foreground class's IoU and Dice logged beside them."""

    def __init__(self, iou_metrics: list[str] | None = None, **kwargs) -> None:
        super().__init__(iou_metrics=iou_metrics or ["mIoU", "mDice"], **kwargs)

    def compute_metrics(self, results: list) -> dict[str, float]:
        summary = super().compute_metrics(results)
        intersect, union, pred, label = (sum(r[i] for r in results).double().numpy() for i in range(4))
        # [tp, fp, fn, tn] of the pneumothorax class, rebuilt from mmseg's per-class totals
        tp, fp, fn = intersect[1], pred[1] - intersect[1], label[1] - intersect[1]
        tn = intersect[0]
        extra = pooled_metrics(np.array([[tp, fp, fn, tn]]))
        summary["IoU.pneumothorax"] = extra["IoU.pneumothorax"]
        summary["Dice.pneumothorax"] = extra["Dice.pneumothorax"]
        return summary
