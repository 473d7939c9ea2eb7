# Dataset config: the layout 02_prepare writes (data/prepared/patient-512 by default), the seed's
# pipelines (Resize keep_ratio=False, RandomFlip 0.5, PhotoMetricDistortion) and batch 16.
# Training loads the gray PNGs as one channel and applies GrayPhotoMetricDistortion (helpers/data/transforms.py),
# the seed's PhotoMetricDistortion computed for one channel. The data preprocessor broadcasts that channel
# to three, so the model gets the same normalized batch as from the seed's 3-channel pipeline, bit for bit
# (tests/test_transforms.py), for a fraction of the loader's time.
custom_imports = dict(imports=["helpers.data.mmseg_dataset", "helpers.modeling"], allow_failed_imports=False)

dataset_type = "PneumothoraxDataset"
data_root = "data/prepared/patient-512"
img_scale = (512, 512)

train_pipeline = [
    dict(type="LoadImageFromFile", color_type="grayscale"),
    dict(type="LoadAnnotations"),
    dict(type="Resize", scale=img_scale, keep_ratio=False),
    dict(type="RandomFlip", prob=0.5),
    dict(type="GrayPhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=img_scale, keep_ratio=False),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file="train.txt",
        data_prefix=dict(img_path="images/", seg_map_path="masks/"),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file="val.txt",
        data_prefix=dict(img_path="images/", seg_map_path="masks/"),
        pipeline=test_pipeline,
    ),
)
test_dataloader = dict(val_dataloader, dataset=dict(val_dataloader["dataset"], ann_file="test.txt"))
# mmseg's IoUMetric (mIoU, mDice, aAcc), with the pneumothorax class's IoU and Dice logged beside them.
val_evaluator = dict(type="PneumothoraxMetric", iou_metrics=["mIoU", "mDice"])
test_evaluator = val_evaluator
