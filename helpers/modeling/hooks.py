"""``ChannelsLastHook``: keep the model's weights in channels-last memory order on the GPU.

cuDNN's bf16/fp16 convolutions run on tensor cores in NHWC; with channels-last weights every convolution
produces channels-last activations, and the NCHW<->NHWC transposes around each one disappear.
"""

from __future__ import annotations

import torch
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class ChannelsLastHook(Hook):
    """Convert the model to ``torch.channels_last`` before training and testing (CUDA only)."""

    priority = "VERY_HIGH"

    def _convert(self, runner) -> None:
        if torch.cuda.is_available():
            runner.model.to(memory_format=torch.channels_last)

    def before_train(self, runner) -> None:
        self._convert(runner)

    def before_test(self, runner) -> None:
        self._convert(runner)
