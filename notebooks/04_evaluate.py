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
# On the demo fallback (no full data, `make demo` run) the values left as they are take the demo's (pipeline/demo/).
runs = []  # run folders or checkpoints; []: every run under outputs_dir/runs/
split = "test"
batch_size = 8  # 16 on the demo fallback
tta = False  # horizontal-flip test-time augmentation
postprocess = "tune"  # "tune" (on val), "none", or a dict(threshold ..., min_component_area ..., min_total_area ...)
n_boot = 1000  # bootstrap resamples (200 on the demo fallback)
# the prepared folder to evaluate on; None: each run's own (its config's data_root); a data/prepared/<mode>-1024
# folder scores against the original masks
prepared_root = None
outputs_dir = None  # None: outputs/, or the demo's outputs/demo/ when only it holds results
ensemble = False  # also evaluate each k-fold sweep (sweep --folds K) as one mean-probability ensemble
ensemble_top_k = 0  # > 0: each member is the weight average of its run's top-k checkpoints

# %%
# %matplotlib inline
from IPython.display import Markdown, display

from helpers import evaluation, plots
from helpers.workflow.evaluate_runs import describe_failures, evaluate_runs
from helpers.workflow.interactive import notebook_parameters, record_run

params = notebook_parameters("04_evaluate", globals())  # every value against its rule, before any work
evaluation_run = evaluate_runs(params)  # each run on its own: one that fails is reported, the others go on
outputs, results, failed = evaluation_run.outputs, evaluation_run.results, evaluation_run.failed
if failed:
    print(describe_failures(failed))

# %% [markdown]
# ## Every run: before and after post-processing

# %%
for result in results:
    print(f"{result.run_dir}  ({result.split}, checkpoint {result.checkpoint.name})")
    pp = result.postprocess
    print(
        f"post-processing: p > {pp.threshold:.2f}, components of at least {pp.min_component_area} px, "
        f"masks of at least {pp.min_total_area} px (tuned on {result.metrics['postprocess']['tuned_on']})"
    )
    if result.metrics["dual_threshold"]:
        print(
            "the scheme that won on val, which predict and export apply: "
            f"{result.metrics['dual_threshold']['winner_on_val']}"
        )
    size = result.metrics["resolution"]
    print(
        f"evaluated at {size['evaluated_at']} against the masks of {size['masks']} (model input {size['model_input']})"
    )
    display(evaluation.metrics_table(result))
    display(plots.plot_confusion(result))

# %% [markdown]
# ## Model cards
#
# One per run, also written as `MODEL_CARD.md` beside its evaluation and linked from the index: the model, its
# data and split, the metrics with their patient-bootstrap intervals, the post-processing and how it was chosen,
# what the model is for and its known limits.

# %%
for result in results:
    display(Markdown(evaluation.model_card(result.out_dir)))

# %% [markdown]
# ## Post-processing: our triplet against the 1st place's dual threshold
#
# Both are tuned on val only (out-of-fold for a fold ensemble); `winner_on_val` is the scheme with the
# higher val image Dice, the one to keep. The image Dice columns are the evaluated split's, with 95 % CIs.
# Triplet: (threshold, min component area, min total area); dual threshold: (top, min area, bottom).

# %%
display(evaluation.schemes_style(evaluation.schemes_table(results)))

# %% [markdown]
# ## Patients seen in training against unseen ones

# %%
for result in results:
    print(f"{result.run_dir}  ({result.split}, split mode {result.metrics['split_mode']})")
    display(evaluation.seen_unseen_style(result))

# %% [markdown]
# ## Comparison: the lr sweep, the seed's reported numbers, the all-empty baseline
#
# The headline first, then the details; every column of both, and the intervals' bounds, are in
# `comparison.csv`. Values in %, intervals as `value [low, high]` (95 %, patient bootstrap). `status` is `failed`
# for a run that could not be evaluated (a diverged training, an unusable checkpoint: its `error` says which),
# `reference` for the seed's numbers (mIoU / mDice, the only ones it reported) and the baseline. In the details,
# `split_mode` names how each run's data was split (02_prepare); `image_dice_seen` / `image_dice_unseen` split
# its test images by whether their patient was in training.

# %%
comparison = evaluation.comparison_table(results, failed)
json_path, csv_path = evaluation.write_comparison(comparison, outputs / "eval")
headline, details = evaluation.comparison_style(comparison)
display(headline)
display(details)
print(f"written: {csv_path}, {json_path}")

# %% [markdown]
# ## Paired comparison: each run against the best run on the same split
#
# The difference in per-image Dice (run minus best, in %) on the same test images, with a 95 % interval
# from a paired patient bootstrap: each resample draws patients with replacement and scores both runs on
# the same drawn patients. `better` / `worse` when the interval excludes 0, else `no detectable difference`.
# `detectable` is the smallest difference this split could detect for that pair, at the same 95 %: the
# interval's larger reach from the difference, `max(diff - diff_lo, diff_hi - diff)`, so `no detectable
# difference` reads as "less than `detectable` points". It shrinks as the test split grows (about as one over
# the square root of its patients); the sentence under the table gives it for each split.

# %%
paired_table = evaluation.paired_comparison(results, n_boot=params.n_boot)
paired_path = evaluation.write_paired(paired_table, outputs / "eval")
display(evaluation.paired_style(paired_table))
print(evaluation.detectable_sentence(paired_table) or "no run to compare with the best one")
print(f"written: {paired_path}")
for result in results:  # each model card gains its run's paired verdict and what the split can detect
    evaluation.write_model_card(result.out_dir)

# %%
record_run("04_evaluate", params)  # a run by hand is a run: its record, as the pipeline writes it
