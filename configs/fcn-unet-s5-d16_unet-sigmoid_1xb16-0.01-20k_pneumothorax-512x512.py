# The seed's sigmoid variant: one output channel, binary cross-entropy, threshold 0.3 on the probability.
# It learns only because our masks hold {0, 1}: mmseg's binary path asserts labels <= 1 outside ignore_index.
_base_ = ["./fcn_unet-s5-d16_1xb16-20k_pneumothorax-512x512.py"]
model = dict(
    decode_head=dict(
        num_classes=2,
        out_channels=1,
        threshold=0.3,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
    )
)
optim_wrapper = dict(optimizer=dict(lr=0.01))
