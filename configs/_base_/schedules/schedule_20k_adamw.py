# The AdamW schedule of ours and pretrained: mmseg's schedule_20k (20k iterations, validation every 2000)
# with AdamW (lr 0.001, weight decay 0.01, gradients clipped at norm 5), a 500-iteration linear warm-up and
# poly decay, in place of its SGD; keeps the best checkpoint by val mDice and the last one.
_base_ = ["mmseg::_base_/schedules/schedule_20k.py"]
optim_wrapper = dict(
    _delete_=True,
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=0.001, betas=(0.9, 0.999), weight_decay=0.01),
    clip_grad=dict(max_norm=5.0),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, begin=0, end=500, by_epoch=False),
    dict(type="PolyLR", eta_min=1e-6, power=0.9, begin=500, end=20000, by_epoch=False),
]
default_hooks = dict(
    checkpoint=dict(
        type="CheckpointHook",
        by_epoch=False,
        interval=2000,
        save_best="mDice",
        rule="greater",
        max_keep_ckpts=1,
        save_last=True,
    ),
    logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False),
)
