"""A trained model: load it from a run folder or checkpoint, and get its pneumothorax probabilities.

- ``load_model`` is the one way to load a segmentor (04_evaluate, predict, the benchmarks).
- ``predict_split`` runs it on a prepared split with the config's test pipeline, exactly as
  ``Runner.test()`` would, and keeps the probabilities (see :class:`Predictions`).
- ``probability_maps`` runs it on 8-bit gray images already at the model's size (predict).

The pneumothorax probability is the softmax of class 1, or mmseg's sigmoid for one-channel models. With
``tta=True`` it is the mean of the plain and the horizontally flipped pass; the mmseg decision stays the
plain pass, so that its metrics always match ``Runner.test()``.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from mmengine.config import Config

from helpers.core import paths, run_folders
from helpers.core.progress import tqdm
from helpers.core.stacks import ArrayWriter, StackWriter
from helpers.postprocessing.prediction_set import Predictions

# mmseg's advice and deprecation notes when it builds these models: true, known, and nothing a reader of a
# report can act on. load_model keeps them in LoadedModel.library_warnings (04 writes them to its metrics.json),
# 03 writes them to the run's log file.
KNOWN_LIBRARY_WARNINGS = (
    re.compile(r"For binary segmentation, we suggest using`out_channels = 1`"),
    re.compile(r"``build_loss`` would be deprecated soon"),
    re.compile(r"Default ``avg_non_ignore`` is False"),
    re.compile(r"The draw is False, it means that the hook for visualization will not take effect"),
)


@dataclass
class LoadedModel:
    """A segmentor in eval mode with what its callers need to know about it."""

    net: torch.nn.Module
    cfg: Config
    checkpoint: Path
    run_dir: Path
    size: tuple[int, int]  # (width, height) the model was trained on
    threshold: float  # on the pneumothorax probability: 0.5 (argmax of 2 classes) or decode_head.threshold
    sigmoid: bool
    library_warnings: list[str] = field(default_factory=list)

    @property
    def decision(self) -> dict:
        """The segmentor's own decision rule, as 04 records it."""
        return {"type": "sigmoid", "threshold": self.threshold} if self.sigmoid else {"type": "argmax"}


def resolve_run(run_or_checkpoint: str | Path, config: str | Path | None = None) -> tuple[Path, Path, Path]:
    """(run folder, checkpoint, config) of a run folder (best, else last) or of a ``.pth`` file; the config is
    the run's dumped ``config.py`` unless given. Relative paths are from the repository root."""
    path = paths.resolve(run_or_checkpoint)
    if path.is_dir():
        best, last = run_folders.find_checkpoints(path)
        checkpoint = best or last
        if checkpoint is None:
            raise FileNotFoundError(f"{path}: no best_*.pth or last_checkpoint in this run folder")
        run_dir = path
    elif path.suffix == ".pth" and path.is_file():
        checkpoint, run_dir = path, path.parent
    else:
        raise FileNotFoundError(f"{path}: neither a run folder nor a .pth checkpoint")
    config = paths.resolve(config) if config is not None else run_dir / run_folders.CONFIG_FILE
    if not config.is_file():
        raise FileNotFoundError(
            f"{config}: no config for this checkpoint (pass config=, the run's {run_folders.CONFIG_FILE})"
        )
    return run_dir, checkpoint, config


def default_device() -> str:
    """'cuda' when a GPU is visible, else 'cpu'."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def model_input_size(cfg: Config) -> tuple[int, int]:
    """(width, height) the model was trained on: the test pipeline's Resize scale, else the preprocessor's size."""
    pipelines = [cfg.get("test_dataloader", {}).get("dataset", {}).get("pipeline"), cfg.get("test_pipeline")]
    for pipeline in pipelines:
        for transform in pipeline or []:
            if transform.get("type") == "Resize" and transform.get("scale"):
                width, height = transform["scale"]
                return int(width), int(height)
    size = cfg.model.get("data_preprocessor", {}).get("size")
    if size:
        height, width = size
        return int(width), int(height)
    raise ValueError("the config names no input size (no Resize in the test pipeline, no data_preprocessor.size)")


@contextmanager
def library_warnings_kept(kept: list[str]) -> Iterator[None]:
    """Inside the block, mmseg's known warnings (:data:`KNOWN_LIBRARY_WARNINGS`) are appended to ``kept``
    instead of being shown; every other warning is shown as usual when the block ends."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for message in caught:
        text = str(message.message)
        if any(pattern.search(text) for pattern in KNOWN_LIBRARY_WARNINGS):
            if text not in kept:
                kept.append(text)
        else:
            warnings.warn_explicit(message.message, message.category, message.filename, message.lineno)


def load_model(
    run_or_checkpoint: str | Path, device: str | None = None, config: str | Path | None = None
) -> LoadedModel:
    """The segmentor of a run folder (best checkpoint, else last) or of a ``.pth`` file, in eval mode.

    mmseg's known warnings while building it are kept in ``library_warnings`` instead of being shown.
    A checkpoint that is unreadable, of another model, or holds NaN or infinite weights (a diverged
    training) is refused with a :class:`~helpers.modeling.checkpoint.CheckpointError` naming the file.
    """
    from mmseg.apis import init_model

    from helpers.modeling.checkpoint import check_matches, verified_state_dict

    run_dir, checkpoint, config = resolve_run(run_or_checkpoint, config)
    state = verified_state_dict(checkpoint)
    cfg = Config.fromfile(str(config))
    kept: list[str] = []
    with library_warnings_kept(kept):
        net = init_model(cfg, str(checkpoint), device=device or default_device())
    check_matches(net, state, checkpoint, config)
    del state
    head = net.decode_head
    sigmoid = head.out_channels == 1
    if not sigmoid and head.out_channels != 2:
        raise ValueError(
            f"{checkpoint}: expected a binary model (2 classes, or 1 sigmoid channel), not {head.out_channels} outputs"
        )
    return LoadedModel(
        net=net,
        cfg=cfg,
        checkpoint=checkpoint,
        run_dir=run_dir,
        size=model_input_size(cfg),
        threshold=float(head.threshold) if sigmoid else 0.5,
        sigmoid=sigmoid,
        library_warnings=kept,
    )


def foreground_probability(seg_logits: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) resized logits (or, for C == 1, mmseg's sigmoid) -> (B, H, W) pneumothorax probability."""
    if seg_logits.shape[1] == 1:
        return seg_logits[:, 0]
    return seg_logits.softmax(dim=1)[:, 1]


def probability_maps(model: LoadedModel, images: list[np.ndarray]) -> list[np.ndarray]:
    """Pneumothorax probability maps (float32, model size) for 8-bit grayscale images already at model size."""
    inputs = [torch.from_numpy(np.ascontiguousarray(np.repeat(image[None], 3, axis=0))) for image in images]
    with torch.no_grad():
        samples = model.net.test_step(dict(inputs=inputs))
    logits = torch.stack([sample.seg_logits.data.float() for sample in samples])
    return list(foreground_probability(logits).cpu().numpy().astype(np.float32))


def _batch_counts(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(B, 4) [tp, fp, fn, tn] of boolean (B, H, W) tensors."""
    tp = (pred & truth).flatten(1).sum(1)
    pred_area = pred.flatten(1).sum(1)
    true_area = truth.flatten(1).sum(1)
    total = pred[0].numel()
    return torch.stack([tp, pred_area - tp, true_area - tp, total - pred_area - true_area + tp], dim=1)


def build_split_loader(cfg: Config, data_root: Path | str, split: str, batch_size: int) -> torch.utils.data.DataLoader:
    """The config's test dataloader pointed at ``{split}.txt`` under ``data_root``."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmengine.utils.dl_utils import set_multi_processing

    init_default_scope(cfg.get("default_scope", "mmseg"))
    set_multi_processing(**cfg.env_cfg.get("mp_cfg", {}))  # as the Runner does: clean worker start and shutdown
    loader_cfg = copy.deepcopy(cfg.test_dataloader)
    loader_cfg.batch_size = int(batch_size)
    loader_cfg.dataset.data_root = str(data_root)
    loader_cfg.dataset.ann_file = f"{split}.txt"
    return Runner.build_dataloader(loader_cfg)


# predict_split's files in its ``store`` folder (probs and the mmseg decision are the evaluation folder's)
TRUTH_FILE = "truth.npy"


def _writers(shape: tuple[int, ...], store: Path | None) -> dict:
    """Where predict_split puts probs (uint8), truth and the mmseg decision (bool): arrays, or bit-packed files."""
    kinds = {
        "probs": (run_folders.PROBS_FILE, np.uint8),
        "truth": (TRUTH_FILE, bool),
        "default_pred": (run_folders.MMSEG_PRED_FILE, bool),
    }
    if store is None:
        return {key: ArrayWriter(shape, dtype) for key, (_, dtype) in kinds.items()}
    return {key: StackWriter(Path(store) / name, shape, dtype) for key, (name, dtype) in kinds.items()}


@torch.no_grad()
def predict_split(
    model: LoadedModel,
    data_root: Path | str,
    split: str,
    batch_size: int = 8,
    tta: bool = False,
    store: str | Path | None = None,
) -> Predictions:
    """Run the model on one split with the config's test pipeline; see the module doc for TTA.

    ``store``: a folder where the per-pixel arrays are written batch by batch (helpers.core.stacks: probs.npy as uint8,
    truth.npy and mmseg_pred.npy bit-packed) instead of being kept in memory; the returned Predictions then
    read them image by image, and memory stays that of one batch whatever the split's size.
    """
    from mmseg.structures import SegDataSample

    net = model.net
    if not (Path(data_root) / f"{split}.txt").is_file():
        raise FileNotFoundError(f"{Path(data_root) / f'{split}.txt'}: no such split file")
    loader = build_split_loader(model.cfg, data_root, split, batch_size)
    total = len(loader.dataset)
    if total == 0:
        raise ValueError(f"{split}: the split is empty")
    names: list[str] = []
    counts = np.zeros((total, 4), dtype=np.int64)
    max_prob = np.zeros(total, dtype=np.float64)
    writers = None  # opened once the first batch gives the image shape
    image_shape = None
    try:
        for batch in tqdm(loader, desc=f"predict {split}", unit="batch"):
            data = net.data_preprocessor(batch, False)
            inputs, samples = data["inputs"], data["data_samples"]
            metas = [sample.metainfo for sample in samples]
            samples = net.postprocess_result(net.inference(inputs, metas), samples)
            shapes = {tuple(s.gt_sem_seg.data.shape[1:]) for s in samples}
            if writers is None:
                image_shape = next(iter(shapes))
                writers = _writers((total, *image_shape), None if store is None else Path(store))
            if shapes != {image_shape}:
                raise ValueError(f"{split}: images of different sizes ({shapes}, {image_shape}); re-run 02_prepare")
            pred = torch.stack([s.pred_sem_seg.data[0] for s in samples]).bool()
            label = torch.stack([s.gt_sem_seg.data[0] for s in samples])
            if (label > 1).any():
                raise ValueError(f"{split}: masks must hold {{0, 1}} (found {label.max().item()}); re-run 02_prepare")
            prob = foreground_probability(torch.stack([s.seg_logits.data for s in samples]))
            if tta:
                flipped = net.inference(inputs.flip(-1), metas).flip(-1)
                flipped_samples = net.postprocess_result(flipped, [SegDataSample(metainfo=m) for m in metas])
                prob = (prob + foreground_probability(torch.stack([s.seg_logits.data for s in flipped_samples]))) / 2
                del flipped, flipped_samples
            rows = slice(len(names), len(names) + len(samples))
            counts[rows] = _batch_counts(pred, label.bool()).cpu().numpy()
            writers["probs"].append((prob * 255).round().to(torch.uint8).cpu().numpy())
            max_prob[rows] = prob.flatten(1).amax(1).double().cpu().numpy()
            writers["truth"].append(label.bool().cpu().numpy())
            writers["default_pred"].append(pred.cpu().numpy())
            names.extend(Path(m["img_path"]).stem for m in metas)
            del (
                batch,
                data,
                inputs,
                samples,
                pred,
                label,
                prob,
            )  # before the next batch is loaded: one batch alive at a time
        arrays = {key: writer.close() for key, writer in writers.items()}
    except BaseException:
        for writer in (writers or {}).values():
            writer.discard()
        raise
    return Predictions(
        names=names,
        probs=arrays["probs"],
        truth=arrays["truth"],
        default_counts=counts,
        max_prob=max_prob,
        default_pred=arrays["default_pred"],
    )
