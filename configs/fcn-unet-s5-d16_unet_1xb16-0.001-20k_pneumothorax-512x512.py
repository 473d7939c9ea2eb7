# The seed's fcn-unet-s5-d16 at lr 0.001 (its table: see docs/configs.md, "The seed's results").
_base_ = ["./fcn_unet-s5-d16_1xb16-20k_pneumothorax-512x512.py"]
optim_wrapper = dict(optimizer=dict(lr=0.001))
