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
# # 02 · Split and convert
#
# Splits the pairs, binarizes the masks to {0, 1} (mmseg ignores the value 255, which is how the seed
# lost its pneumothorax class), resizes once to the training size and writes mmseg's layout with
# `train.txt` / `val.txt` / `test.txt`. Re-running with the same parameters writes nothing.
#
# Split modes:
# - `patient` (the default): train / val / test share no patient, each stratified by has_pneumo; test is
#   `test_fraction` of the images (default 0.11, near stage_1_test's 11.4 %), val `val_fraction` of the rest.
#   With the default seed and fractions on the Kaggle images (all of them, or a partial download) it is the
#   shipped benchmark split `patient-v1` (docs/data.md, "The patient split"), read from the package, not
#   recomputed; another seed or fraction computes a fresh split, and the line below the run says which.
# - `official`: stage_1_test is test, val is drawn from stage_1_train by patient. Its test shares patients
#   with training (on the full data 884 of its 1,372 images): kept for comparison.
# - `seed`: the seed's random 80/20 of all images (random_state=0, no test split), image-level as it was.
#
# `folds` > 0 adds a k-fold over train + val, stratified and grouped by patient in every mode. The leakage
# report below gives, for every split, the patients and images it shares with the others.

# %% tags=["parameters"]
# On the demo fallback (no full data, `make demo` run) the values left as they are take the demo's (pipeline/demo/).
raw_root = None  # the Kaggle folder or its parent; None: data/raw, or the demo data when data/raw has none
prepared_root = (
    None  # the folder to write; None: data/prepared/<split_mode>-<img_size> (data/demo/prepared/... for the demo)
)
img_size = 512  # 128 on the demo fallback
val_fraction = 0.2
seed = 0
split_mode = "patient"  # "patient", "official" or "seed"
folds = 0  # > 0 adds a stratified k-fold grouped by patient over train + val (fold{k}_train.txt / fold{k}_val.txt)
test_fraction = 0.11  # split_mode "patient": the test share (0.2 on the demo fallback)
patient_table = None  # None: patients.csv.gz beside the raw CSVs if there (the demo's), else the shipped one
workers = 0  # 0: all CPU cores

# %%
# %matplotlib inline
import pandas as pd
from IPython.display import display

from helpers import plots
from helpers.data import patients, prepare, prepared_folder
from helpers.workflow.interactive import notebook_parameters, record_run

params = notebook_parameters("02_prepare", globals())  # every value checked, before any work
result = prepare.prepare(params)  # says so when it falls back on the demo data
print(
    f"{result.out_dir}: {result.written} pairs written, {result.skipped} already there, "
    f"{result.removed} stale files removed"
)
split_source = result.manifest["split_source"]
print(split_source["message"] + (f" (sha256 {split_source['sha256']})" if split_source["version"] else ""))

# %% [markdown]
# ## Images and positive rate per split

# %%
counts = pd.DataFrame.from_dict(result.manifest["counts"], orient="index").rename_axis("split").reset_index()
display(counts.style.format({"positive_rate": "{:.1%}"}).hide(axis="index"))

# %% [markdown]
# ## Exact duplicate images across splits
#
# Groups of images with identical pixels that sit in different splits (leakage between train and
# evaluation). An empty list means none.

# %%
print(result.duplicates or "none")

# %% [markdown]
# ## Leakage report: patients shared between splits
#
# Per split, its patients that also have images in an earlier split (val against train, test against train
# and val) and their images; then any other pair of splits. Zero everywhere in `patient` mode.

# %%
leakage = result.manifest["leakage"]
display(patients.leakage_table(leakage).style.format(na_rep="–").hide(axis="index"))
print("the same radiograph (patient and follow-up) in two splits:", leakage["same_image_across_splits"] or "none")

# %% [markdown]
# ## Prepared examples (mask values {0, 1}, drawn in colour)

# %%
display(plots.plot_example_grid(prepared_folder.prepared_pairs(result.out_dir), n=6, seed=params.seed))

# %%
record_run("02_prepare", params)  # a run by hand is a run: its record, as the pipeline writes it
