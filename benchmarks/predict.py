"""Images/s of ``predict`` on generated 1024x1024 radiographs on the CPU, three ways side by side:
PNG through PyTorch (the baseline), DICOM through PyTorch, PNG through onnxruntime.

The inputs are demo radiographs drawn at 1024x1024, written as 8-bit PNGs and as the same pixels in
12-bit uncompressed MONOCHROME2 DICOMs with a window (the usual PACS export). The models are built from
their configs with random weights (speed does not depend on the weights) and written as a checkpoint and
as ONNX: by default the demo network (128x128 input, 16 base channels) and the seed's UNet-S5-D16 at
512x512. Each way runs once on two images (warm-up), then ``--repeats`` times over all images in an
alternating order; the best wall and CPU times count (CPU seconds of all the process's threads are the
steadier measure on a shared machine). The model's one-time load (mmseg build and checkpoint, or the ORT
session) is timed on its own and taken out. The read stage alone (decode to the 8-bit image the model
sees) is timed too.

    .venv/bin/python benchmarks/predict.py [--images 12] [--repeats 2] [--configs demo_... fcn-unet-...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from evaluate import Clock  # benchmarks/evaluate.py, beside this script: wall and CPU seconds (all threads)

from helpers.core import run_folders
from helpers.core.paths import DEMO_CONFIG, SEED_CONFIG
from helpers.data.demo_dataset import draw_radiograph
from helpers.data.dicom import read_dicom
from helpers.data.images import read_gray8
from helpers.modeling.export import export_onnx
from helpers.predict import predict_images

SIZE = 1024
DEFAULT_CONFIGS = (DEMO_CONFIG, SEED_CONFIG)
# Stored values 16 g (g = 0..255): this LINEAR window maps 0..4080 onto 0..255, so the DICOM shows the PNG's pixels.
WINDOW_CENTER, WINDOW_WIDTH = 2040.5, 4081.0


def write_inputs(folder: Path, count: int) -> tuple[list[Path], list[Path]]:
    """``count`` radiographs as PNG files and as 12-bit DICOM files of the same pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    pngs, dicoms = [], []
    for index in range(count):
        gray, _ = draw_radiograph(SIZE, bool(index % 2), rng)
        png = folder / "png" / f"xray{index:03d}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(png), gray)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.Modality = "DX"
        ds.set_pixel_data(gray.astype(np.uint16) * 16, photometric_interpretation="MONOCHROME2", bits_stored=12)
        ds.WindowCenter, ds.WindowWidth, ds.PixelSpacing = WINDOW_CENTER, WINDOW_WIDTH, [0.14, 0.14]
        dicom = folder / "dicom" / f"xray{index:03d}.dcm"
        dicom.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(dicom, enforce_file_format=True)
        pngs.append(png)
        dicoms.append(dicom)
    return pngs, dicoms


def write_models(config: str, folder: Path) -> tuple[Path, Path]:
    """A checkpoint (random weights) with its config.py beside it, and its ONNX export."""
    from mmseg.apis import init_model

    from helpers.modeling.train import TrainParams, build_config

    run = folder / "runs" / config / "lr0.01"
    run.mkdir(parents=True)
    cfg = build_config(TrainParams(config=config, work_dir=str(run)))
    cfg.dump(str(run / run_folders.CONFIG_FILE))
    torch.manual_seed(0)
    net = init_model(cfg, None, device="cpu")
    checkpoint = run / "random.pth"
    torch.save({"state_dict": net.state_dict(), "meta": {}}, checkpoint)
    return checkpoint, export_onnx(checkpoint, folder / f"{config}.onnx")


def load_seconds(model: Path) -> tuple[float, float]:
    """Wall and CPU seconds of loading the model as predict does (mmseg build + checkpoint, or an ORT session)."""
    from helpers.modeling.export import load_onnx
    from helpers.modeling.inference import load_model

    clock = Clock()
    load_onnx(model) if model.suffix == ".onnx" else load_model(model, device="cpu")
    return clock.lap()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--configs", nargs="*", default=list(DEFAULT_CONFIGS))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pngs, dicoms = write_inputs(root / "inputs", args.images)
        for name, read, files in (("PNG", read_gray8, pngs), ("DICOM", lambda p: read_dicom(p).gray8, dicoms)):
            for path in files[:2]:
                read(path)
            best = (np.inf, np.inf)
            for _ in range(args.repeats):
                clock = Clock()
                for path in files:
                    read(path)
                best = tuple(min(a, b) for a, b in zip(best, clock.lap(), strict=True))
            rows.append({"model": "-", "way": f"read {name} to 8-bit gray", "wall s": best[0], "cpu s": best[1]})
        assert all(np.array_equal(read_gray8(p), read_dicom(d).gray8) for p, d in zip(pngs, dicoms, strict=True))
        for config in args.configs:
            checkpoint, onnx_path = write_models(config, root / "models")
            ways = {
                "PNG, PyTorch": (checkpoint, pngs),
                "DICOM, PyTorch": (checkpoint, dicoms),
                "PNG, onnxruntime": (onnx_path, pngs),
            }
            best = {way: (np.inf, np.inf) for way in ways}
            loads = {way: load_seconds(model) for way, (model, _) in ways.items()}  # also the warm-up
            for _way, (model, files) in ways.items():
                predict_images(model, files[:2], root / "warmup", device="cpu", batch_size=args.batch_size)
            for repeat in range(args.repeats):
                for way in list(ways) if repeat % 2 == 0 else list(reversed(ways)):
                    model, files = ways[way]
                    clock = Clock()
                    predict_images(
                        model, files, root / "out" / way.replace(", ", "_"), device="cpu", batch_size=args.batch_size
                    )
                    best[way] = tuple(min(a, b) for a, b in zip(best[way], clock.lap(), strict=True))
            for way in ways:  # the one-time model load is taken out (and shown in its own column)
                wall, cpu = (total - load for total, load in zip(best[way], loads[way], strict=True))
                rows.append(
                    {
                        "model": config.split("_")[0],
                        "way": way,
                        "wall s": wall,
                        "cpu s": cpu,
                        "load wall s": loads[way][0],
                    }
                )
    table = pd.DataFrame(rows)
    table["images/s"] = args.images / table["wall s"]
    table["images/s by CPU"] = args.images / table["cpu s"]
    for _, group in table.groupby("model", sort=False):
        for column in ("images/s", "images/s by CPU"):
            table.loc[group.index, f"x ({column})"] = group[column] / group[column].iloc[0]
    print(
        f"{args.images} generated {SIZE}x{SIZE} radiographs, batch {args.batch_size}, best of {args.repeats}, "
        f"torch threads {torch.get_num_threads()}; predict's one-time model load excluded"
    )
    print(table.drop(columns=["wall s", "cpu s"]).to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
