# The dataset at 512x512 with each positive image listed 3 times in training (oversampling, as the
# SIIM-ACR winners did); validation and test are unchanged.
_base_ = ["./pneumothorax_512x512.py"]
train_dataloader = dict(dataset=dict(positive_repeats=3))
