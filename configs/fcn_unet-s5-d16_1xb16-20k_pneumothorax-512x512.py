# The seed's run, named the mmseg way and without a learning rate in its name: the lr sweep's config
# (pipeline/03_train.yaml; each run sets its lr and lands in outputs/runs/<this name>/lr<lr>/).
# fcn_unet_s5-d16, SGD with mmseg's schedule_20k (poly; lr 0.01, the seed's best, unless a run sets another),
# no auxiliary head, whole-image test mode, 2 classes with softmax cross-entropy, batch 16 (1 GPU x 16).
# The seed's three per-lr files (fcn-unet-s5-d16_unet_1xb16-<lr>-20k_...) are thin children of this one.
_base_ = [
    "mmseg::_base_/models/fcn_unet_s5-d16.py",
    "./_base_/datasets/pneumothorax_512x512.py",
    "mmseg::_base_/default_runtime.py",
    "mmseg::_base_/schedules/schedule_20k.py",
]
img_scale = (512, 512)
data_preprocessor = dict(size=img_scale)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=2),
    auxiliary_head=None,
    # The seed merged test_cfg=dict(size=img_scale) into the base's slide mode; whole-image is what it meant.
    test_cfg=dict(_delete_=True, mode="whole"),
)
# Keep the best checkpoint by val mDice (mmseg's, as the seed reports) and the last one.
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
log_processor = dict(by_epoch=False)
optim_wrapper = dict(optimizer=dict(lr=0.01))  # mmseg's schedule_20k value, stated
