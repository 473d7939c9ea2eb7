# Fine-tuning at 1024x1024 from a 512 run (the SIIM-ACR 1st place trained at 512, then fine-tuned at 1024).
# 03_train: config=<this name>, load_from=<a 512 run folder (its best checkpoint) or a .pth>, on the data
# 02_prepare writes with img_size=1024 (data/prepared/patient-1024). The model is ours (UNet-S5-D16, fully
# convolutional, so the 512 weights fit); the optimizer starts afresh: a short warm-up, a 10x lower lr,
# 5k iterations at batch 8 (the same GPU memory as batch 16 at 512 needs twice over; lower it if short).
# Ours' bases (configs/ours_unet-s5-d16_ce-dice_oversample_adamw-20k_pneumothorax-512x512.py):
_base_ = [
    "./_base_/models/fcn_unet_s5-d16_ce-dice.py",
    "./_base_/datasets/pneumothorax_512x512_oversample.py",
    "mmseg::_base_/default_runtime.py",
    "./_base_/schedules/schedule_20k_adamw.py",
]
img_scale = (1024, 1024)
data_root = "data/prepared/patient-1024"
load_from = None  # 03_train's load_from parameter sets it
data_preprocessor = dict(size=img_scale)
model = dict(data_preprocessor=data_preprocessor)
# The base's pipelines at 1024x1024.
train_pipeline = [dict(t, scale=img_scale) if t["type"] == "Resize" else t for t in _base_.train_pipeline]
test_pipeline = [dict(t, scale=img_scale) if t["type"] == "Resize" else t for t in _base_.test_pipeline]
train_dataloader = dict(batch_size=8, dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=0.0001))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.1, begin=0, end=100, by_epoch=False),
    dict(type="PolyLR", eta_min=1e-7, power=0.9, begin=100, end=5000, by_epoch=False),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=5000, val_interval=500)
default_hooks = dict(checkpoint=dict(interval=500))
