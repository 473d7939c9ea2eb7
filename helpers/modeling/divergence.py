"""``DivergenceHook``: a training whose loss, gradient norm or weights become NaN or infinite stops at once.

It raises :class:`TrainingDiverged` naming the iteration and the learning rate; 03_train then marks the run
failed in its ``metrics.json`` (helpers.modeling.train) and the notebook exits non-zero. Checked:

- the loss of every iteration (mmengine has already made it a Python float for its logs, so it costs
  nothing), and the gradient norm mmengine records when the config clips gradients; with an
  ``AmpOptimWrapper`` the gradient norm is left alone, since its loss scaler skips steps with infinite
  gradients by design;
- the weights before each validation and before each checkpoint is written: no checkpoint (interval,
  last or "best") is ever saved from a non-finite model, and a NaN model is never validated into "best".

Why not mmengine's own: mmengine 0.10.7 has no loss check (mmdet's ``CheckInvalidLossHook`` looks every 50
iterations and fails with a bare ``AssertionError``); ``clip_grad=dict(..., error_if_nonfinite=True)`` needs
gradient clipping on and would stop an fp16 AMP run at the first overflow its loss scaler exists to skip;
``EarlyStoppingHook(check_finite=True)`` looks at a validation metric only, and ends the run as a success.
"""

from __future__ import annotations

import math

from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from helpers.modeling.checkpoint import non_finite_tensors

LR_ADVICE = "a learning rate too high is the likely cause: retry with a lower lr"


class TrainingDiverged(RuntimeError):
    """A training's loss, gradients or weights became NaN or infinite."""


def _base_lr(runner) -> str:
    try:
        return f"{float(runner.cfg.optim_wrapper.optimizer.lr):g}"
    except (AttributeError, KeyError, TypeError, ValueError):
        return "?"


@HOOKS.register_module()
class DivergenceHook(Hook):
    """Stop training at the first non-finite loss, gradient norm or weight (see the module doc)."""

    priority = "LOW"  # after the logger has shown the iteration, before CheckpointHook saves anything

    def _diverged(self, runner, what: str) -> TrainingDiverged:
        message = f"training diverged at iteration {runner.iter + 1}: {what} (lr {_base_lr(runner)}); {LR_ADVICE}"
        runner.logger.error(message)
        return TrainingDiverged(message)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        loss = (outputs or {}).get("loss")
        loss = float(loss.detach()) if hasattr(loss, "detach") else loss
        if loss is not None and not math.isfinite(loss):
            raise self._diverged(runner, f"the loss is {loss}")
        from mmengine.optim import AmpOptimWrapper

        grad_norm = runner.message_hub.log_scalars.get("train/grad_norm")
        if grad_norm is not None and not isinstance(runner.optim_wrapper, AmpOptimWrapper):
            value = float(grad_norm.current())
            if not math.isfinite(value):
                raise self._diverged(runner, f"the gradient norm is {value}")

    def _check_weights(self, runner, state_dict: dict, when: str) -> None:
        bad = non_finite_tensors(state_dict)
        if bad:
            raise self._diverged(
                runner, f"{len(bad)} weight tensors hold NaN or infinity ({bad[0]}, ...); nothing {when}"
            )

    def before_val_epoch(self, runner) -> None:
        self._check_weights(runner, runner.model.state_dict(), "validated, no best checkpoint saved")

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        self._check_weights(runner, checkpoint.get("state_dict", {}), "saved")
