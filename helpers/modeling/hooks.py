"""Hooks of the project's runs.

``ChannelsLastHook``: keep the model's weights in channels-last memory order on the GPU. cuDNN's bf16/fp16
convolutions run on tensor cores in NHWC; with channels-last weights every convolution produces channels-last
activations, and the NCHW<->NHWC transposes around each one disappear.

``NotebookProgressHook``: what a notebook shows of a training, in place of mmengine's log (which goes to the run's
log file and the terminal): a progress bar (iterations, loss, ETA) where a person watches the notebook, and one
line of validation metrics at each validation.
"""

from __future__ import annotations

import numbers
import sys

import torch
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from helpers.core.progress import tqdm, watched_notebook


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


class NotebookProgressHook(Hook):
    """A progress bar over the training's iterations with the last loss where a person watches the notebook
    (tqdm's widget in JupyterLab; elsewhere none: the terminal has mmengine's iteration lines, which say the same),
    and one line per validation on stdout (the notebook's output)."""

    priority = "LOW"

    def __init__(self, bar: bool | None = None) -> None:
        self.bar = watched_notebook() if bar is None else bar
        self._bar = None

    def before_train(self, runner) -> None:
        if self.bar:
            self._bar = tqdm(total=runner.max_iters, initial=runner.iter, desc="training", unit="it")

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self._bar is None:
            return
        loss = (outputs or {}).get("loss")
        if loss is not None:
            value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
            self._bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        self._bar.update(1)

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        scores = {name: value for name, value in (metrics or {}).items() if isinstance(value, numbers.Real)}
        values = "  ".join(f"{name} {value:.2f}" for name, value in scores.items())
        line = f"validation at iteration {runner.iter}/{runner.max_iters}: {values}"
        if self._bar is not None:
            self._bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def after_train(self, runner) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
