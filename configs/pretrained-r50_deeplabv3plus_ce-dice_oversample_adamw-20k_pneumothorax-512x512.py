# An ImageNet-pretrained encoder (every top SIIM-ACR entry used one): mmseg's DeepLabV3+ on a ResNet-50-D8
# (ResNetV1c), its backbone initialized from the weights OpenMMLab publishes ('open-mmlab://resnet50_v1c',
# downloaded by mmengine on first use), with our recipe: weighted cross-entropy plus foreground Dice,
# positives listed 3 times, AdamW with warm-up and poly decay, 20k iterations at batch 16, 512x512.
# Without internet, 03_train's `pretrained` parameter points the backbone at a local copy of that file.
# Not measured for its score (see docs/winners.md).
_base_ = [
    "mmseg::_base_/models/deeplabv3plus_r50-d8.py",
    "./_base_/datasets/pneumothorax_512x512_oversample.py",
    "mmseg::_base_/default_runtime.py",
    "./_base_/schedules/schedule_20k_adamw.py",
]
img_scale = (512, 512)
data_preprocessor = dict(size=img_scale)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(init_cfg=dict(type="Pretrained", checkpoint="open-mmlab://resnet50_v1c")),
    decode_head=dict(
        num_classes=2,
        loss_decode=[
            dict(type="CrossEntropyLoss", use_sigmoid=False, class_weight=[1.0, 3.0], loss_weight=1.0),
            dict(type="ForegroundDiceLoss", loss_weight=1.0),
        ],
    ),
    auxiliary_head=dict(num_classes=2),
    test_cfg=dict(mode="whole"),
)
# A pretrained encoder wants a smaller lr than training from scratch (ours: 0.001).
optim_wrapper = dict(optimizer=dict(lr=0.0001))
