# Our model: mmseg's fcn_unet_s5-d16 as the seed runs it (2 classes at 512x512, no auxiliary head,
# whole-image test mode), with cross-entropy weighted towards the rare class plus a foreground soft-Dice loss.
_base_ = ["mmseg::_base_/models/fcn_unet_s5-d16.py"]
data_preprocessor = dict(size=(512, 512))
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(
        num_classes=2,
        loss_decode=[
            dict(type="CrossEntropyLoss", use_sigmoid=False, class_weight=[1.0, 3.0], loss_weight=1.0),
            dict(type="ForegroundDiceLoss", loss_weight=1.0),
        ],
    ),
    auxiliary_head=None,
    test_cfg=dict(_delete_=True, mode="whole"),
)
