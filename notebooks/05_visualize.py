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
# # 05 · Visualize
#
# Figures only: everything is read from 03's run folders and 04's evaluation folders (no metric is
# computed here). Overlays: true positive, false positive and false negative pixels in distinct colours.

# %% tags=["parameters"]
# On the demo fallback (no full data, `make demo` run) the values left as they are take the demo's (pipeline/demo/).
outputs_dir = None  # None: outputs/, or the demo's outputs/demo/ when only it holds results
split = "test"
n_examples = 4

# %%
# %matplotlib inline
import pandas as pd
from IPython.display import display

from helpers import evaluation, plots
from helpers.core import run_folders
from helpers.workflow.interactive import notebook_parameters, record_run

params = notebook_parameters("05_visualize", globals())  # every value checked; says so on the demo fallback
outputs = run_folders.choose_outputs(params.outputs_dir, params.split)[0]
eval_dirs = run_folders.evaluations(outputs, params.split)
if not eval_dirs:
    raise FileNotFoundError(f"no evaluations under {outputs / 'eval'} (run 04_evaluate first)")
results = [evaluation.load_eval(d) for d in eval_dirs]
best = max(results, key=lambda r: r.metrics["postprocessed"]["image_dice"])
print(f"examples from the best run by per-image Dice: {best.run_dir}")

# %% [markdown]
# ## Best, median and worst positive images by per-image Dice

# %%
for which in ("best", "median", "worst"):
    display(plots.plot_examples(best, which, n=params.n_examples))

# %% [markdown]
# ## False positives on negative images, and missed positives

# %%
display(plots.plot_examples(best, "false_positive", n=params.n_examples))
display(plots.plot_examples(best, "missed", n=params.n_examples))

# %% [markdown]
# ## Learning curves of all runs

# %%
display(plots.plot_learning_curves(sorted({r.run_dir for r in results})))

# %% [markdown]
# ## Learning rates compared (95 % bootstrap intervals; the seed's reported numbers beside them)

# %%
comparison_path = outputs / "eval" / "comparison.csv"
display(plots.plot_lr_comparison(pd.read_csv(comparison_path)))

# %% [markdown]
# ## Dice against mask area, and the image-level ROC curve

# %%
display(plots.plot_dice_vs_area(best))
display(plots.plot_roc(results))

# %%
record_run("05_visualize", params)  # a run by hand is a run: its record, as the pipeline writes it
