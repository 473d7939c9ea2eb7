"""A trained segmentor outside PyTorch: ONNX export with a side-car JSON, and an onnxruntime predictor.

``python -m helpers export --checkpoint CKPT [--config CFG] --out model.onnx`` writes

- ``model.onnx``: input ``image``, a float32 batch (B, 3, H, W) of 8-bit gray images repeated on three
  channels and normalized per channel, ``(gray - mean[c]) / std[c]``; output ``probability`` (B, H, W),
  the pneumothorax probability (softmax class 1, or the sigmoid of a one-channel head, which is where
  mmdeploy's generic argmax goes wrong). The batch is dynamic; height and width are dynamic in multiples
  of the network's total downsampling when the backbone is mmseg's UNet, fixed otherwise.
- ``model.json`` beside it: the input size the model was trained at, the normalization, the model's own
  decision threshold, and the run's post-processing tuned on val when 04_evaluate has tuned one.

:func:`load_onnx` reads both back into an :class:`OnnxModel`, whose ``probability_maps`` matches
:func:`helpers.modeling.inference.probability_maps`, so that ``predict`` treats a checkpoint and an ONNX file alike.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from helpers.core.fileio import atomic_write_bytes, atomic_write_json
from helpers.modeling.inference import load_model
from helpers.postprocessing import TunedPostProcess, find_tuned_postprocess

ONNX_SUFFIX = ".onnx"
INPUT_NAME = "image"
OUTPUT_NAME = "probability"
OPSET = 18
SIDECAR_FORMAT = "pneumothorax-onnx/1"
MAX_BATCH = 4096
MAX_SIDE = 8192


def sidecar_path(onnx_path: str | Path) -> Path:
    """The JSON beside an ONNX model: ``model.onnx`` -> ``model.json``."""
    return Path(onnx_path).with_suffix(".json")


class ProbabilityNet(torch.nn.Module):
    """Normalized (B, 3, H, W) -> (B, H, W) pneumothorax probability, as mmseg's whole-image inference computes
    it: backbone (and neck), decode head, logits resized bilinearly to the input size, then softmax class 1
    or, for one output channel, the sigmoid."""

    def __init__(self, segmentor: torch.nn.Module):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        head = self.segmentor.decode_head
        logits = head.forward(self.segmentor.extract_feat(image))
        logits = F.interpolate(logits, size=image.shape[2:], mode="bilinear", align_corners=head.align_corners)
        if logits.shape[1] == 1:
            return logits[:, 0].sigmoid()
        return logits.softmax(dim=1)[:, 1]


def with_traceable_upsampling(segmentor: torch.nn.Module) -> torch.nn.Module:
    """A copy whose mmseg ``Upsample`` layers (scale factor, no fixed size) are ``torch.nn.Upsample``: mmseg's
    computes the output size as Python ints, which the exporter freezes at the example's size, so the UNet
    decoder's concatenations fail at any other size. Same interpolation, same values."""
    from mmseg.models.utils import Upsample

    segmentor = copy.deepcopy(segmentor)
    for parent in list(segmentor.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Upsample) and not child.size and child.scale_factor:
                setattr(
                    parent,
                    name,
                    torch.nn.Upsample(
                        scale_factor=child.scale_factor, mode=child.mode, align_corners=child.align_corners
                    ),
                )
    return segmentor


def size_multiple(backbone: torch.nn.Module) -> int | None:
    """The factor height and width must be multiples of for mmseg's UNet (its own divisibility check); None
    for other backbones, whose export keeps the trained size."""
    if type(backbone).__name__ != "UNet":
        return None
    rate = 1
    for stage in range(1, backbone.num_stages):
        if backbone.strides[stage] == 2 or backbone.downsamples[stage - 1]:
            rate *= 2
    return rate


def normalization(segmentor: torch.nn.Module) -> tuple[list[float], list[float]]:
    """(mean, std) per input channel of the segmentor's data preprocessor."""
    preprocessor = segmentor.data_preprocessor
    return preprocessor.mean.flatten().tolist(), preprocessor.std.flatten().tolist()


def export_onnx(
    checkpoint: str | Path, out: str | Path, *, config: str | Path | None = None, postprocess: str = "winner"
) -> Path:
    """Write ``out`` (ONNX) and its side-car JSON (see the module doc); returns the ONNX path.

    ``postprocess``: the run's scheme tuned on val to put into the JSON when there is one: the val winner
    (``'winner'``), ``'triplet'`` or ``'dual'``; ``'none'`` leaves it out.
    """
    from torch.export import Dim

    out = Path(out)
    if out.suffix != ONNX_SUFFIX:
        raise ValueError(f"{out}: the ONNX model's file name must end in {ONNX_SUFFIX}")
    model = load_model(checkpoint, device="cpu", config=config)
    net = ProbabilityNet(with_traceable_upsampling(model.net)).eval()
    width, height = model.size
    multiple = size_multiple(model.net.backbone)
    batch = Dim("batch", min=1, max=MAX_BATCH)
    axes = {0: batch}
    if multiple and height % multiple == 0 and width % multiple == 0:
        axes[2] = multiple * Dim("height_blocks", min=1, max=MAX_SIDE // multiple)
        axes[3] = multiple * Dim("width_blocks", min=1, max=MAX_SIDE // multiple)
    example = torch.zeros(2, 3, height, width)
    with torch.no_grad():
        program = torch.onnx.export(
            net,
            (example,),
            dynamo=True,
            dynamic_shapes=(axes,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            verbose=False,
        )
    atomic_write_bytes(out, program.model_proto.SerializeToString())
    tuned = find_tuned_postprocess(model.run_dir, model.checkpoint, postprocess)
    mean, std = normalization(model.net)
    atomic_write_json(
        sidecar_path(out),
        {
            "format": SIDECAR_FORMAT,
            "model": out.name,
            "checkpoint": str(model.checkpoint.resolve()),
            "input": {
                "name": INPUT_NAME,
                "dtype": "float32",
                "layout": "NCHW, 3 channels",
                "width": width,
                "height": height,
                "dynamic": {"batch": True, "size_multiple": multiple if len(axes) > 1 else None},
                "mean": mean,
                "std": std,
                "preprocessing": (
                    "8-bit gray image (DICOM as helpers.data.dicom converts it), resized to width x height "
                    "with area interpolation, repeated on 3 channels, (gray - mean[c]) / std[c]"
                ),
            },
            "output": {
                "name": OUTPUT_NAME,
                "shape": ["batch", "height", "width"],
                "meaning": "pneumothorax probability, to be resized bilinearly to the image's size",
            },
            "decision": {"type": "sigmoid" if model.sigmoid else "argmax", "threshold": model.threshold},
            "postprocess": tuned.as_dict() if tuned is not None else None,
        },
    )
    return out


@dataclass
class OnnxModel:
    """An exported model in onnxruntime, with what its side-car JSON says."""

    session: object  # onnxruntime.InferenceSession
    path: Path
    size: tuple[int, int]  # (width, height)
    mean: np.ndarray  # (1, 3, 1, 1) float32
    std: np.ndarray
    threshold: float
    postprocess: TunedPostProcess | None

    def probability_maps(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Pneumothorax probability maps (float32, model size) for 8-bit gray images already at model size."""
        gray = np.stack(images).astype(np.float32)[:, None]
        batch = ((gray - self.mean) / self.std).astype(np.float32)
        return list(self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0])


def load_onnx(path: str | Path) -> OnnxModel:
    """An :class:`OnnxModel` from ``model.onnx`` and its ``model.json``; errors name the missing file."""
    import onnxruntime

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX model")
    meta_path = sidecar_path(path)
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path}: the ONNX model's side-car JSON is missing (written by `python -m helpers export`)"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {SIDECAR_FORMAT!r}")
    spec = meta["input"]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tuned = TunedPostProcess.from_dict(meta["postprocess"]) if meta.get("postprocess") else None
    return OnnxModel(
        session=session,
        path=path,
        size=(int(spec["width"]), int(spec["height"])),
        mean=np.asarray(spec["mean"], np.float32).reshape(1, -1, 1, 1),
        std=np.asarray(spec["std"], np.float32).reshape(1, -1, 1, 1),
        threshold=float(meta["decision"]["threshold"]),
        postprocess=tuned,
    )
