# The seed's run: fcn_unet_s5-d16, SGD with mmseg's schedule_20k (poly), no auxiliary head, whole-image
# test mode, 2 classes with softmax cross-entropy. The lr is set by each file that inherits this one.
_base_ = [
    'mmseg::_base_/models/fcn_unet_s5-d16.py',
    './pneumothorax_512x512.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_20k.py',
]
img_scale = (512, 512)
data_preprocessor = dict(size=img_scale)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=2),
    auxiliary_head=None,
    # The seed merged test_cfg=dict(size=img_scale) into the base's slide mode; whole-image is what it meant.
    test_cfg=dict(_delete_=True, mode='whole'))
# Keep the best checkpoint by val mDice (mmseg's, as the seed reports) and the last one.
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2000, save_best='mDice', rule='greater',
                    max_keep_ckpts=1, save_last=True),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False))
log_processor = dict(by_epoch=False)
