# The CPU demo: our recipe on the generated demo dataset at 128x128, UNet-S5-D16 with 16 base channels,
# batch 8, a few hundred iterations. `make demo` and the tests train it; minutes on 2 CPU cores.
# Ours' bases (configs/ours_unet-s5-d16_ce-dice_oversample_adamw-20k_pneumothorax-512x512.py):
_base_ = [
    "./_base_/models/fcn_unet_s5-d16_ce-dice.py",
    "./_base_/datasets/pneumothorax_512x512_oversample.py",
    "mmseg::_base_/default_runtime.py",
    "./_base_/schedules/schedule_20k_adamw.py",
]
img_scale = (128, 128)
data_root = "data/demo/prepared/patient-128"
data_preprocessor = dict(size=img_scale)
model = dict(
    data_preprocessor=data_preprocessor, backbone=dict(base_channels=16), decode_head=dict(in_channels=16, channels=16)
)
# The base's pipelines at 128x128, except that training leaves out GrayPhotoMetricDistortion: the demo's
# reference numbers (README) were measured without it, and it would change every training batch.
train_pipeline = [
    dict(t, scale=img_scale) if t["type"] == "Resize" else t
    for t in _base_.train_pipeline
    if t["type"] != "GrayPhotoMetricDistortion"
]
test_pipeline = [dict(t, scale=img_scale) if t["type"] == "Resize" else t for t in _base_.test_pipeline]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root, pipeline=train_pipeline)
)
val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root, pipeline=test_pipeline)
)
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=0.003))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.1, begin=0, end=15, by_epoch=False),
    dict(type="PolyLR", eta_min=1e-6, power=0.9, begin=15, end=150, by_epoch=False),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=150, val_interval=50)
default_hooks = dict(checkpoint=dict(interval=50), logger=dict(interval=10))
