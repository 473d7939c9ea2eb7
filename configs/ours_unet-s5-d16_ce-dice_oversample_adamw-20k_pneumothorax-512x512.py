# OURS, not the seed's: the same UNet-S5-D16 and budget (20k iterations, batch 16, 512x512), with what
# the SIIM-ACR winners used that fits it: cross-entropy weighted towards the rare class plus a
# foreground soft-Dice loss (_base_/models), positives listed 3 times (oversampling, _base_/datasets),
# AdamW with warm-up and poly decay (_base_/schedules). The demo and the 1024 fine-tune are built from the
# same bases. AMP (bf16) is switched on by 03_train on a GPU (amp='auto').
_base_ = [
    "./_base_/models/fcn_unet_s5-d16_ce-dice.py",
    "./_base_/datasets/pneumothorax_512x512_oversample.py",
    "mmseg::_base_/default_runtime.py",
    "./_base_/schedules/schedule_20k_adamw.py",
]
