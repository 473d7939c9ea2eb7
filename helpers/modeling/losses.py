"""``ForegroundDiceLoss``: soft Dice of the pneumothorax class over the whole batch.

mmseg's DiceLoss averages over classes, and background (99.7 % of pixels) then dominates it. This loss
scores only the rare class, pooled over the batch so that batches of negative images stay defined.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import nn


@MODELS.register_module()
class ForegroundDiceLoss(nn.Module):
    """1 - soft Dice of class ``foreground`` (softmax over channels; sigmoid with one channel)."""

    def __init__(
        self,
        foreground: int = 1,
        smooth: float = 1.0,
        loss_weight: float = 1.0,
        ignore_index: int = 255,
        loss_name: str = "loss_fg_dice",
    ) -> None:
        super().__init__()
        self.foreground = foreground
        self.smooth = smooth
        self.loss_weight = loss_weight
        self.ignore_index = ignore_index
        self._loss_name = loss_name

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, weight=None, ignore_index: int | None = None, **kwargs
    ) -> torch.Tensor:
        ignore_index = self.ignore_index if ignore_index is None else ignore_index
        if pred.shape[1] == 1:
            prob = pred[:, 0].float().sigmoid()
        else:
            prob = F.softmax(pred.float(), dim=1)[:, self.foreground]
        valid = (target != ignore_index).float()
        truth = (target == self.foreground).float() * valid
        prob = prob * valid
        intersection = (prob * truth).sum()
        dice = (2 * intersection + self.smooth) / (prob.sum() + truth.sum() + self.smooth)
        return self.loss_weight * (1 - dice)

    @property
    def loss_name(self) -> str:
        return self._loss_name
