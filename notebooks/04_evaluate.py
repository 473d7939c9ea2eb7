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
# # 04 · Evaluate
#
# Inference through mmseg on a prepared split, keeping the probabilities so that post-processing can be
# tuned without running the model again. Metrics (each defined below):
#
# - **mIoU / mDice / aAcc**: mmseg's pooled values (`IoUMetric`, what `mim test` prints), background and
#   pneumothorax averaged; background (~99.8 %) dominates them.
# - **fg_iou / fg_dice**: the same pooled counts, pneumothorax class alone.
# - **image_dice**: per-image Dice averaged over images, 1 when prediction and truth are both empty (the
#   SIIM-ACR competition metric); **image_dice_positive**: over images with pneumothorax only.
# - **detection**: an image is called positive when its predicted area reaches the minimum area; ROC AUC of
#   the maximum pneumothorax probability; sensitivity, specificity, confusion matrix.
# - 95 % bootstrap confidence intervals that resample **patients** (a cluster bootstrap: images of one
#   patient are correlated, so resampling images gives intervals that are too narrow).
# - **seen / unseen**: the metrics of the images whose patient also has images in the train split, and of
#   the others, each with its interval. The gap shows how much patient leakage inflates a number (zero
#   seen images with `split_mode: patient`).
#
# Post-processing (probability threshold, minimum component area, minimum total area) is tuned on **val
# only**, then applied to the evaluated split.

# %% tags=["parameters"]
runs = []  # run folders or checkpoints; []: every run under outputs_dir/runs/
split = "test"
batch_size = 8
tta = False  # horizontal-flip test-time augmentation
postprocess = "tune"  # "tune" (on val), "none", or a dict(threshold ..., min_component_area ..., min_total_area ...)
n_boot = 1000
data_root = None  # None: each run's own config
outputs_dir = "outputs"

# %%
# %matplotlib inline
import pandas as pd
from IPython.display import display

from helpers import evaluate, patients, paths, plots

outputs = paths.resolve(outputs_dir)
run_dirs = [paths.resolve(r) for r in runs] or paths.trained_runs(outputs)
if not run_dirs:
    raise FileNotFoundError(f"no trained runs under {outputs / 'runs'} (run 03_train first)")
results = [
    evaluate.evaluate_run(run, split=split, data_root=paths.resolve(data_root) if data_root else None,
                          batch_size=batch_size, tta=tta, postprocess=postprocess, n_boot=n_boot,
                          out_dir=paths.eval_dir(run, split, outputs))
    for run in run_dirs
]

# %% [markdown]
# ## Every run: before and after post-processing

# %%
for result in results:
    print(f"{result.run_dir}  ({result.split}, checkpoint {result.checkpoint.name})")
    print(f"post-processing: {result.metrics['postprocess']}")
    table = pd.DataFrame({name: result.metrics[name] for name in ("mmseg", "postprocessed")})
    display(table)
    display(plots.plot_confusion(result))

# %% [markdown]
# ## Patients seen in training against unseen ones

# %%
for result in results:
    print(f"{result.run_dir}  ({result.split}, split mode {result.metrics['split_mode']})")
    display(patients.seen_unseen_table(result.metrics["by_patient_seen"]))

# %% [markdown]
# ## Comparison: the lr sweep, the seed's reported numbers, the all-empty baseline
#
# `split_mode` names how each run's data was split (02_prepare); `image_dice_seen` / `image_dice_unseen`
# split its test images by whether their patient was in training.

# %%
comparison = evaluate.comparison_table(results)
json_path, csv_path = evaluate.write_comparison(comparison, outputs / "eval")
display(comparison)
print(f"written: {csv_path}, {json_path}")
