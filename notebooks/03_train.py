# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (pneumothorax)
#     language: python
#     name: pneumothorax
# ---

# %% [markdown]
# # 03 · Train one run
#
# Builds the mmengine config from the file plus these parameters (the lr reaches the optimizer) and
# trains with `Runner.from_cfg`; validates on val at intervals, keeps the best checkpoint by val mDice
# and the last one. With `gpus > 1` (or `nproc > 1` CPU processes) it launches `torchrun` in a subprocess
# (never DDP in this kernel). Curves: `make tensorboard`.
# Sweep all learning rates with `python -m helpers sweep`.

# %% tags=["parameters"]
# On the demo fallback (no full data, `make demo` run) the values left as they are take the demo's (pipeline/demo/).
config = None  # a name in configs/ or a path; None: the seed's UNet (the demo's config on the demo fallback)
lr = None  # None: the config's (0.01 for the seed's); 0.003 on the demo fallback, the demo sweep's first
max_iters = None  # None: the config's (20k for the seed's runs)
batch_size = None  # None: the config's (16)
img_size = None  # None: the config's (512); must be the prepared data's size (its manifest.json)
seed = 0
work_dir = None  # None: outputs/runs/<config>/lr<lr>/ (under outputs/demo/ on the demo fallback)
prepared_root = None  # the prepared folder (02's output); None: the config's data_root (data/prepared/patient-512)
resume = False  # continue from the last checkpoint in work_dir
amp = "auto"  # "auto": bf16 AMP on a GPU, float32 on the CPU
channels_last = "auto"  # channels-last weights and activations on a GPU (faster bf16 convolutions)
gpus = 1  # > 1: torchrun, one process per GPU (nccl)
nproc = 1  # > 1 without GPUs: torchrun with this many CPU processes (gloo)
val_interval = None  # None: the config's, scaled with max_iters
workers = None  # data loader workers; None: the config's on a CPU, from the CPU count on a GPU
deterministic = False  # mmengine's deterministic mode (deterministic cuDNN algorithms; slower)
# The SIIM-ACR winners' options (docs/winners.md); None leaves the config as it is.
fold = None  # k: train on fold{k}_train.txt, validate on fold{k}_val.txt (02_prepare with folds > k)
positive_rate = None  # [start, end] (or [start, end, iters]): positive share scheduled over training
load_from = None  # a run folder (its best checkpoint) or a .pth to start from, e.g. a 512 run for 1024 fine-tuning
pretrained = None  # a local backbone checkpoint in place of the published weights a config names
keep_checkpoints = None  # interval checkpoints to keep (-1: all), for averaging the top-k afterwards
mlflow = False  # also log to MLflow's local store outputs/mlruns (pip install mlflow-skinny); TensorBoard always

# %%
# %matplotlib inline
import pandas as pd
from IPython.display import display

from helpers import plots
from helpers.core import run_folders
from helpers.modeling.train import describe_speed, run_training
from helpers.workflow.interactive import notebook_parameters, record_run

params = notebook_parameters("03_train", globals())  # TrainParams, every value checked; says so on the demo fallback
result = run_training(params)
metrics = result.metrics
print(f"run folder: {result.work_dir}")
print(f"best checkpoint: {result.best_checkpoint}\nlast checkpoint: {result.last_checkpoint}")

# %% [markdown]
# ## Learning curves (from mmengine's logs)

# %%
display(plots.plot_learning_curves([result.work_dir]))

# %% [markdown]
# ## Validation: best and last
#
# mIoU / mDice are mmseg's pooled values over background and pneumothorax (%); `IoU.pneumothorax` /
# `Dice.pneumothorax` are the foreground class alone.

# %%
keys = ["step", "aAcc", "mIoU", "mDice", "IoU.pneumothorax", "Dice.pneumothorax"]
rows = {name: {k: metrics[name].get(k) for k in keys} for name in ("best_val", "last_val") if metrics.get(name)}
display(pd.DataFrame(rows).T.style.format(precision=2, na_rep="–").format("{:.0f}", subset=["step"]))

# %% [markdown]
# ## Speed and resources

# %%
print(describe_speed(metrics))
print(f"manifest: {result.work_dir / run_folders.MANIFEST_FILE}\nmetrics: {result.work_dir / run_folders.METRICS_FILE}")

# %%
record_run("03_train", params, result.work_dir)  # a run by hand is a run: its record, as the sweep writes it
