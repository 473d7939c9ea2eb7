"""Where a run's curves go besides mmengine's ``vis_data/scalars.json``: TensorBoard always, MLflow on request.

TensorBoard event files land in each session folder of the run (``<work_dir>/<timestamp>/vis_data/``);
``make tensorboard`` shows every run under ``outputs/runs/``. MLflow (``mlflow=True`` in 03_train; needs
``pip install mlflow-skinny``, not in requirements.txt) logs to one local file store, ``outputs/mlruns``,
an experiment per config and a run per lr: ``mlflow ui --backend-store-uri outputs/mlruns``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mmengine.config import Config

from helpers.core import paths

TENSORBOARD_BACKEND = "TensorboardVisBackend"
MLFLOW_BACKEND = "MLflowVisBackend"


def mlflow_store(outputs: Path = paths.OUTPUTS_DIR) -> Path:
    """The local MLflow file store of every run: ``outputs/mlruns``."""
    return Path(outputs) / "mlruns"


def mlflow_installed() -> bool:
    """Whether MLflow (``mlflow`` or ``mlflow-skinny``) can be imported."""
    return importlib.util.find_spec("mlflow") is not None


def add_vis_backends(cfg: Config, *, experiment: str, run: str, mlflow: bool = False) -> None:
    """Add TensorBoard (and, with ``mlflow``, MLflow to the local store) to the config's visualizer, in place."""
    backends = list(cfg.visualizer.get("vis_backends") or [dict(type="LocalVisBackend")])
    types = {backend["type"] for backend in backends}
    if TENSORBOARD_BACKEND not in types:
        backends.append(dict(type=TENSORBOARD_BACKEND))
    if mlflow and not mlflow_installed():
        raise ImportError("mlflow=True logs to MLflow, which is not installed: pip install mlflow-skinny")
    if mlflow and MLFLOW_BACKEND not in types:
        backends.append(
            dict(type=MLFLOW_BACKEND, exp_name=experiment, run_name=run, tracking_uri=mlflow_store().resolve().as_uri())
        )
    cfg.visualizer.vis_backends = backends
