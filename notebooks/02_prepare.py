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
# Split modes: `official` (stage_1_test is test; stage_1_train split into train / val stratified by
# has_pneumo) and `seed` (the seed's random 80/20 of all images, random_state=0, no test split).

# %% tags=["parameters"]
raw_root = None  # the Kaggle folder or its parent; None: data/raw, or the demo data when data/raw has none
prepared_root = None  # the folder to write; None: data/prepared/<split_mode>-<img_size> (data/demo/prepared/... for the demo)
img_size = 512
val_fraction = 0.2
seed = 0
split_mode = "official"  # "official" or "seed"
folds = 0  # > 0 adds a stratified k-fold assignment over train + val (fold{k}_train.txt / fold{k}_val.txt)
workers = 0  # 0: all CPU cores

# %%
# %matplotlib inline
import pandas as pd
from IPython.display import display

from helpers import plots, prepare, rawdata

raw = rawdata.choose_raw_root(raw_root)
if raw.note:
    print(raw.note)
result = prepare.prepare_dataset(
    raw.root, raw.prepared_parent, out_dir=prepared_root, img_size=img_size, val_fraction=val_fraction,
    seed=seed, split_mode=split_mode, folds=folds, workers=workers or None,
)
print(f"{result.out_dir}: {result.written} pairs written, {result.skipped} already there, {result.removed} stale files removed")

# %% [markdown]
# ## Images and positive rate per split

# %%
counts = pd.DataFrame(result.manifest["counts"]).T.rename_axis("split").reset_index()
display(counts.style.format({"positive_rate": "{:.1%}"}).hide(axis="index"))

# %% [markdown]
# ## Exact duplicate images across splits
#
# Groups of images with identical pixels that sit in different splits (leakage between train and
# evaluation). An empty list means none.

# %%
print(result.duplicates or "none")

# %% [markdown]
# ## Prepared examples (mask values {0, 1}, drawn in colour)

# %%
display(plots.plot_example_grid(prepare.prepared_pairs(result.out_dir), n=6, seed=seed))
