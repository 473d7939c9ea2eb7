# OURS, not the seed's: the same UNet-S5-D16 and budget (20k iterations, batch 16, 512x512), with what
# the SIIM-ACR winners used that fits it: cross-entropy weighted towards the rare class plus a
# foreground soft-Dice loss, positives listed 3 times (oversampling), AdamW with warm-up and poly decay.
# AMP (bf16) is switched on by 03_train on a GPU (amp='auto').
_base_ = ['./fcn_unet-s5-d16_1xb16-20k_pneumothorax-512x512.py']
model = dict(
    decode_head=dict(
        num_classes=2,
        loss_decode=[
            dict(type='CrossEntropyLoss', use_sigmoid=False, class_weight=[1.0, 3.0], loss_weight=1.0),
            dict(type='ForegroundDiceLoss', loss_weight=1.0),
        ]))
train_dataloader = dict(dataset=dict(positive_repeats=3))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.001, betas=(0.9, 0.999), weight_decay=0.01),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, begin=0, end=500, by_epoch=False),
    dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=500, end=20000, by_epoch=False),
]
