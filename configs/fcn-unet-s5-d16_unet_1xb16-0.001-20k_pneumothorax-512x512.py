# The seed's fcn-unet-s5-d16 at lr 0.001 (its table: see README.md, "The seed's results").
_base_ = ['./_base_/seed_unet-s5-d16_20k.py']
optim_wrapper = dict(optimizer=dict(lr=0.001))
