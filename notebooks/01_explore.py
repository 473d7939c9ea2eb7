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
# # 01 · Explore the dataset
#
# Class pixel statistics, split counts, mask areas and connected components, computed from the images
# themselves (in parallel, every pair validated on the way). The tables are written as JSON beside this
# report (`explore_stats.json`). On the full Kaggle download the seed's table reads background 99.70 %
# of pixels in 12,047 images and pneumothorax 0.30 % in 2,669 images. The patient tables at the end come
# from the CSVs and the patient table (ImageId -> NIH ChestX-ray14 patient).

# %% tags=["parameters"]
# On the demo fallback (no full data, `make demo` run) the values left as they are take the demo's (pipeline/demo/).
raw_root = None  # the Kaggle folder or its parent; None: data/raw, or the demo data when data/raw has none
stages = ["train", "test"]  # the official stage_1 stages to include
max_images = 0  # 0: every image; otherwise a random sample of this size (quick looks)
seed = 0  # for the sample
workers = 0  # 0: all CPU cores
outputs_dir = "outputs"  # writes outputs_dir/explore/ (outputs/demo/explore/ on the demo fallback)
# None: patients.csv.gz beside the CSVs if there (the demo's), else the table shipped in helpers/data/resources
patient_table = None

# %%
# %matplotlib inline
import pandas as pd
from IPython.display import display

from helpers import plots
from helpers.data import explore, patients
from helpers.workflow.interactive import notebook_parameters, record_run

params = notebook_parameters("01_explore", globals())  # every value against its rule, before any work
result = explore.explore(params)  # says so when it falls back on the demo data
print(result.index.describe())
print(f"statistics written to {result.stats_path}")

# %% [markdown]
# ## The seed's table: pixels and images per class

# %%
display(result.class_table.style.format({"pixel percentage": "{:.2f}"}).hide(axis="index"))

# %% [markdown]
# ## Per official split: images and positive rate

# %%
display(result.split_table.style.format({"positive rate": "{:.1%}"}).hide(axis="index"))

# %% [markdown]
# ## Positive masks: area (fraction of the image) and connected regions

# %%
display(result.area_summary.style.format({"area fraction": "{:.3%}"}).hide(axis="index"))
display(plots.plot_area_distribution(result.scans))

# %%
display(result.components_table.style.hide(axis="index"))
display(plots.plot_components(result.scans))

# %% [markdown]
# ## Image sizes and modes

# %%
display(result.sizes_table.style.hide(axis="index"))

# %% [markdown]
# ## Examples (random, positives and negatives), mask overlaid

# %%
display(plots.plot_example_grid(result.scans, n=8, seed=params.seed))

# %% [markdown]
# ## Patients: images per patient, mixed labels, the official split's overlap
#
# Many patients have several radiographs (often follow-ups of the same pneumothorax). A split that puts one
# patient on both sides scores a model on patients it has seen. From every row of the CSVs (the full
# Kaggle CSVs: 6,171 patients, 662 of them in both stage_1_train and stage_1_test).

# %%
display(pd.Series(result.patient_summary, name="value").to_frame())
display(plots.plot_images_per_patient(result.images_per_patient))

# %%
display(patients.leakage_table(result.official_overlap).style.format(na_rep="–").hide(axis="index"))
print("the same radiograph in both official stages:", result.official_overlap["same_image_across_splits"] or "none")

# %%
record_run("01_explore", params)  # a run by hand is a run: its record, as the pipeline writes it
