"""04_evaluate: a trained run -> predictions on one split -> every metric, post-processing, comparison.

Conventions (written into each ``metrics.json`` under ``definitions``):

- **mmseg decision**: the segmentor's own output, exactly what ``Runner.test()`` scores: argmax of the
  softmax classes, or sigmoid > ``decode_head.threshold`` for one-channel models, computed from the logits
  resized to the image's original shape. Its pooled aAcc / mIoU / mDice equal mmseg's ``IoUMetric``.
- **probability**: the pneumothorax probability (softmax class 1, or the sigmoid), stored as
  ``uint8 = round(255 p)`` in ``probs.npy``; a post-processing threshold ``t`` keeps ``p > t``.
- **TTA** (``tta=True``): the probability is the mean of the plain and the horizontally flipped pass
  (flipped back). TTA changes the probabilities, hence the post-processed metrics and ``max_prob``, but
  never the mmseg decision, which stays the plain pass so that the mmseg metrics always match
  ``Runner.test()``.
- **post-processing** (the SIIM-ACR 1st place's "triplet"): threshold the probability, drop connected
  components (8-connected) smaller than ``min_component_area`` pixels, and empty the mask when the area
  left is below ``min_total_area``. Tuned to maximize the mean per-image Dice on the val split only.
"""

from __future__ import annotations

import copy
import io
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from mmengine.config import Config
from tqdm.auto import tqdm

from helpers import patients, paths
from helpers.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from helpers.metrics import cluster_bootstrap_ci, per_image_dice, pixel_counts, summary_metrics
from helpers.modeling.train import DUMPED_CONFIG, MANIFEST_FILE, find_checkpoints
from helpers.prepare import prepared_pairs, split_mode_of
from helpers.provenance import code_version

SEED_RESULTS: dict[float, dict[str, float]] = {
    0.01: {"mIoU": 76.48, "mDice": 84.68},
    0.001: {"mIoU": 61.06, "mDice": 63.69},
    0.0001: {"mIoU": 58.87, "mDice": 62.42},
}

METRICS_FILE = "metrics.json"
PER_IMAGE_FILE = "per_image.csv"
PROBS_FILE = "probs.npy"
MMSEG_PRED_FILE = "mmseg_pred.npy"
GRID_FILE = "postprocess_grid.csv"
EVAL_FILE = "eval.json"

DEFAULT_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Fractions of the image's pixels (H * W): 0.001 is 262 pixels at 512x512, 1049 at 1024x1024.
DEFAULT_COMPONENT_AREAS = (0.0, 0.0001, 0.0005, 0.001, 0.002)
DEFAULT_TOTAL_AREAS = (0.0, 0.0005, 0.001, 0.002, 0.004)

DEFINITIONS = {
    "aAcc": "mmseg's pixel accuracy: correctly classified pixels over all pixels of the split, in %.",
    "mIoU": "mmseg's IoUMetric: IoU = I/U per class from pixels pooled over the split, averaged over background and pneumothorax, in %.",
    "mDice": "mmseg's IoUMetric: Dice = 2I/(P+L) per class from pooled pixels, averaged over background and pneumothorax, in %.",
    "IoU.pneumothorax": "The pneumothorax class's pooled IoU alone, in % (NaN when neither truth nor prediction has any).",
    "Dice.pneumothorax": "The pneumothorax class's pooled Dice alone, in %.",
    "fg_iou": "The pneumothorax class's pooled IoU as a fraction.",
    "fg_dice": "The pneumothorax class's pooled Dice as a fraction.",
    "image_dice": "SIIM-ACR competition metric: mean over images of 2|P∩T|/(|P|+|T|), 1 for an empty prediction on an empty truth.",
    "image_dice_positive": "The per-image Dice averaged over images with pneumothorax only.",
    "empty_baseline_image_dice": "The per-image Dice of predicting every mask empty: the fraction of negative images.",
    "sensitivity": "Images with pneumothorax whose predicted area reaches min_area, over all images with pneumothorax.",
    "specificity": "Images without pneumothorax whose predicted area stays below min_area, over all such images.",
    "det_auc": "ROC AUC of the image's maximum pneumothorax probability for telling positive from negative images.",
    "ci": "95 % percentile bootstrap intervals resampling patients with replacement (cluster bootstrap: all images of a drawn patient).",
    "by_patient_seen": patients.SEEN_DEFINITION,
    "mmseg": "Metrics of the segmentor's own decision (argmax, or sigmoid > threshold), identical to Runner.test().",
    "postprocessed": "Metrics after the probability threshold and the minimum component and total areas.",
}


@dataclass
class PostProcess:
    """The post-processing "triplet": probability threshold, minimum component area, minimum total area."""

    threshold: float = 0.5
    min_component_area: int = 0
    min_total_area: int = 0

    def as_dict(self) -> dict[str, float]:
        """The three fields as a plain dict (for JSON)."""
        return asdict(self)


def _binarize(prob: np.ndarray, threshold: float) -> np.ndarray:
    """``p > threshold``, with uint8 input read as ``p = value / 255``."""
    prob = np.asarray(prob)
    return prob > threshold * 255 if prob.dtype == np.uint8 else prob > threshold


def apply_postprocess(prob: np.ndarray, pp: PostProcess) -> np.ndarray:
    """The post-processed boolean mask of one probability map (uint8 0..255 or float 0..1, H x W)."""
    mask = _binarize(prob, pp.threshold)
    if pp.min_component_area > 0 and mask.any():
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        keep = np.zeros(count, dtype=bool)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= pp.min_component_area
        mask = keep[labels]
    if pp.min_total_area > 0 and np.count_nonzero(mask) < pp.min_total_area:
        mask = np.zeros_like(mask)
    return mask


@dataclass
class Predictions:
    """One split's model output: quantized probabilities, truth, and mmseg's own decision (from the logits,
    not from ``probs``, so that its pooled metrics are exactly ``IoUMetric``'s)."""

    names: list[str]
    probs: np.ndarray  # (N, H, W) uint8, round(255 * p_pneumothorax)
    truth: np.ndarray  # (N, H, W) bool
    default_counts: np.ndarray  # (N, 4) [tp, fp, fn, tn] of mmseg's decision
    max_prob: np.ndarray  # (N,) float
    default_pred: np.ndarray  # (N, H, W) bool, mmseg's decision


def resolve_run(run_or_checkpoint: str | Path, config: str | Path | None = None) -> tuple[Path, Path, Path]:
    """(run folder, checkpoint, config) of a run folder (best, else last) or of a ``.pth`` file; the config is
    the run's dumped ``config.py`` unless given."""
    path = Path(run_or_checkpoint)
    if path.is_dir():
        best, last = find_checkpoints(path)
        checkpoint = best or last
        if checkpoint is None:
            raise FileNotFoundError(f"{path}: no best_*.pth or last_checkpoint in this run folder")
        run_dir = path
    elif path.suffix == ".pth" and path.is_file():
        checkpoint, run_dir = path, path.parent
    else:
        raise FileNotFoundError(f"{path}: neither a run folder nor a .pth checkpoint")
    config = Path(config) if config is not None else run_dir / DUMPED_CONFIG
    if not config.is_file():
        raise FileNotFoundError(f"{config}: no config for this checkpoint (pass config=, the run's {DUMPED_CONFIG})")
    return run_dir, checkpoint, config


def default_device() -> str:
    """'cuda' when a GPU is visible, else 'cpu'."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(run_or_checkpoint: str | Path, device: str | None = None, config: str | Path | None = None) -> tuple[torch.nn.Module, Config, Path]:
    """(segmentor in eval mode, its config, checkpoint) from a run folder or a checkpoint (see resolve_run)."""
    from mmseg.apis import init_model

    _, checkpoint, config = resolve_run(run_or_checkpoint, config)
    cfg = Config.fromfile(str(config))
    model = init_model(cfg, str(checkpoint), device=device or default_device())
    return model, cfg, checkpoint


def foreground_probability(seg_logits: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) resized logits (or, for C == 1, mmseg's sigmoid) -> (B, H, W) pneumothorax probability."""
    if seg_logits.shape[1] == 1:
        return seg_logits[:, 0]
    return seg_logits.softmax(dim=1)[:, 1]


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


@torch.no_grad()
def predict_split(model: torch.nn.Module, cfg: Config, data_root: Path | str, split: str, batch_size: int = 8,
                  tta: bool = False) -> Predictions:
    """Run the model on one split with the config's test pipeline; see the module doc for TTA."""
    from mmseg.structures import SegDataSample

    if not (Path(data_root) / f"{split}.txt").is_file():
        raise FileNotFoundError(f"{Path(data_root) / f'{split}.txt'}: no such split file")
    loader = build_split_loader(cfg, data_root, split, batch_size)
    total = len(loader.dataset)
    if total == 0:
        raise ValueError(f"{split}: the split is empty")
    names: list[str] = []
    counts = np.zeros((total, 4), dtype=np.int64)
    max_prob = np.zeros(total, dtype=np.float64)
    probs = truth = default_pred = None  # allocated once the first batch gives the image shape
    for batch in tqdm(loader, desc=f"predict {split}", unit="batch"):
        data = model.data_preprocessor(batch, False)
        inputs, samples = data["inputs"], data["data_samples"]
        metas = [sample.metainfo for sample in samples]
        samples = model.postprocess_result(model.inference(inputs, metas), samples)
        shapes = {tuple(s.gt_sem_seg.data.shape[1:]) for s in samples}
        if probs is None:
            shape = (total, *next(iter(shapes)))
            probs, truth, default_pred = np.empty(shape, np.uint8), np.empty(shape, bool), np.empty(shape, bool)
        if shapes != {probs.shape[1:]}:
            raise ValueError(f"{split}: images of different sizes ({shapes}, {probs.shape[1:]}); re-run 02_prepare")
        pred = torch.stack([s.pred_sem_seg.data[0] for s in samples]).bool()
        label = torch.stack([s.gt_sem_seg.data[0] for s in samples])
        if (label > 1).any():
            raise ValueError(f"{split}: masks must hold {{0, 1}} (found {label.max().item()}); re-run 02_prepare")
        prob = foreground_probability(torch.stack([s.seg_logits.data for s in samples]))
        if tta:
            flipped = model.inference(inputs.flip(-1), metas).flip(-1)
            flipped_samples = model.postprocess_result(flipped, [SegDataSample(metainfo=m) for m in metas])
            prob = (prob + foreground_probability(torch.stack([s.seg_logits.data for s in flipped_samples]))) / 2
        rows = slice(len(names), len(names) + len(samples))
        counts[rows] = _batch_counts(pred, label.bool()).cpu().numpy()
        probs[rows] = (prob * 255).round().to(torch.uint8).cpu().numpy()
        max_prob[rows] = prob.flatten(1).amax(1).double().cpu().numpy()
        truth[rows] = label.bool().cpu().numpy()
        default_pred[rows] = pred.cpu().numpy()
        names.extend(Path(m["img_path"]).stem for m in metas)
    return Predictions(names=names, probs=probs, truth=truth, default_counts=counts, max_prob=max_prob,
                       default_pred=default_pred)


def _area_grid(fractions: Sequence[float], pixels: int) -> np.ndarray:
    return np.array(sorted({int(round(f * pixels)) for f in fractions}), dtype=np.int64)


def tune_postprocess(val: Predictions, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                     component_areas: Sequence[float] = DEFAULT_COMPONENT_AREAS,
                     total_areas: Sequence[float] = DEFAULT_TOTAL_AREAS) -> tuple[PostProcess, pd.DataFrame]:
    """Grid-search the triplet for the best mean per-image Dice on ``val``.

    ``component_areas`` and ``total_areas`` are fractions of the image's pixels. Ties go to the threshold
    nearest 0.5, then to the smaller areas (the least post-processing).
    """
    thresholds = np.array(sorted(set(float(t) for t in thresholds)))
    pixels = int(val.probs.shape[1] * val.probs.shape[2])
    comp = _area_grid(component_areas, pixels)
    total = _area_grid(total_areas, pixels)
    true_area = val.truth.reshape(len(val.names), -1).sum(1)
    positive = true_area > 0
    dice_sum = np.zeros((len(thresholds), len(comp), len(total)))
    dice_sum_pos = np.zeros_like(dice_sum)
    empty_neg = np.zeros_like(dice_sum)
    for i in tqdm(range(len(val.names)), desc="tune post-processing", unit="image"):
        prob, truth = val.probs[i], val.truth[i]
        top = prob.max()
        for t_index, threshold in enumerate(thresholds):
            if not _binarize(top, threshold):
                pred_area = np.zeros((len(comp), len(total)), dtype=np.int64)
                tp = pred_area
            else:
                count, labels, stats, _ = cv2.connectedComponentsWithStats(_binarize(prob, threshold).astype(np.uint8), connectivity=8)
                areas = stats[1:, cv2.CC_STAT_AREA].astype(np.int64)
                comp_tp = np.bincount(labels[truth], minlength=count)[1:]
                kept = areas[None, :] >= comp[:, None]
                area_c = (kept * areas).sum(1)
                tp_c = (kept * comp_tp).sum(1)
                keep_total = area_c[:, None] >= total[None, :]
                pred_area = np.where(keep_total, area_c[:, None], 0)
                tp = np.where(keep_total, tp_c[:, None], 0)
            denominator = pred_area + true_area[i]
            dice = np.where(denominator == 0, 1.0, 2 * tp / np.maximum(denominator, 1))
            dice_sum[t_index] += dice
            if positive[i]:
                dice_sum_pos[t_index] += dice
            else:
                empty_neg[t_index] += pred_area == 0
    t_grid, c_grid, m_grid = np.meshgrid(thresholds, comp, total, indexing="ij")
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    grid = pd.DataFrame({
        "threshold": t_grid.ravel(), "min_component_area": c_grid.ravel(), "min_total_area": m_grid.ravel(),
        "component_fraction": c_grid.ravel() / pixels, "total_fraction": m_grid.ravel() / pixels,
        "image_dice": dice_sum.ravel() / len(val.names),
        "image_dice_positive": dice_sum_pos.ravel() / n_pos if n_pos else np.nan,
        "negatives_empty": empty_neg.ravel() / n_neg if n_neg else np.nan,
    })
    ranked = grid.assign(distance=(grid["threshold"] - 0.5).abs()).sort_values(
        ["image_dice", "distance", "min_component_area", "min_total_area"], ascending=[False, True, True, True], kind="stable")
    best = ranked.iloc[0]
    pp = PostProcess(float(best["threshold"]), int(best["min_component_area"]), int(best["min_total_area"]))
    return pp, grid


def postprocess_counts(preds: Predictions, pp: PostProcess) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) pixel counts and (N,) areas of the post-processed masks."""
    counts = np.array([pixel_counts(apply_postprocess(p, pp), t) for p, t in zip(preds.probs, preds.truth)])
    return counts.reshape(-1, 4), counts[:, 0] + counts[:, 1]


@dataclass
class EvalResult:
    """One run evaluated on one split: where, per-image rows, metrics, and the post-processing used."""

    run_dir: Path
    checkpoint: Path
    split: str
    out_dir: Path
    data_root: Path
    per_image: pd.DataFrame
    metrics: dict
    postprocess: PostProcess
    probs_path: Path


def _config_data_root(cfg: Config) -> Path:
    root = Path(cfg.test_dataloader.dataset.data_root)
    return root if root.is_absolute() else paths.REPO_ROOT / root


def _decision(model: torch.nn.Module) -> dict:
    if model.out_channels == 1:
        return {"type": "sigmoid", "threshold": float(model.decode_head.threshold)}
    return {"type": "argmax"}


def _ci(counts: np.ndarray, n_boot: int, groups: pd.DataFrame) -> dict:
    return cluster_bootstrap_ci(counts, groups["patient"].to_numpy(), n_boot=n_boot) if n_boot > 0 else {}


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getbuffer())


def _tune_on_val(model: torch.nn.Module, cfg: Config, data_root: Path, batch_size: int, tta: bool,
                 val: Predictions | None) -> tuple[PostProcess, pd.DataFrame, int]:
    """Tune on the val split (predicted here unless given); its predictions are freed on return."""
    val = val if val is not None else predict_split(model, cfg, data_root, "val", batch_size, tta)
    pp, grid = tune_postprocess(val)
    return pp, grid, len(val.names)


def evaluate_run(run: str | Path, *, split: str = "test", data_root: str | Path | None = None, batch_size: int = 8,
                 tta: bool = False, postprocess: str | dict | PostProcess = "tune", out_dir: str | Path | None = None,
                 n_boot: int = 1000, device: str | None = None) -> EvalResult:
    """Predict ``split``, score it (mmseg decision and post-processed), write the results to ``out_dir``.

    ``postprocess``: 'tune' tunes on the val split only (never the evaluated one), 'none' is
    ``PostProcess(0.5, 0, 0)``, a dict or :class:`PostProcess` is used as given.
    """
    run_dir, checkpoint, _ = resolve_run(run)
    run_dir, checkpoint = run_dir.resolve(), checkpoint.resolve()
    model, cfg, _ = load_model(checkpoint, device)
    data_root = Path(data_root).resolve() if data_root is not None else _config_data_root(cfg)
    out_dir = Path(out_dir) if out_dir is not None else paths.eval_dir(run_dir, split)
    preds = predict_split(model, cfg, data_root, split, batch_size, tta)
    groups = patients.evaluation_patients(prepared_pairs(data_root), split, preds.names)

    grid = pd.DataFrame()
    pp_info: dict[str, Any]
    if isinstance(postprocess, str) and postprocess == "tune":
        pp, grid, val_images = _tune_on_val(model, cfg, data_root, batch_size, tta, preds if split == "val" else None)
        pp_info = {"tuned_on": "val", "evaluated_on": split, "val_images": val_images}
        if split == "val":
            pp_info["warning"] = "tuned and evaluated on val: the post-processed metrics are optimistic"
    elif isinstance(postprocess, str) and postprocess == "none":
        pp, pp_info = PostProcess(), {"tuned_on": "given", "evaluated_on": split}
    elif isinstance(postprocess, (dict, PostProcess)):
        pp = postprocess if isinstance(postprocess, PostProcess) else PostProcess(**postprocess)
        pp_info = {"tuned_on": "given", "evaluated_on": split}
    else:
        raise ValueError(f"postprocess must be 'tune', 'none', a dict or a PostProcess, not {postprocess!r}")

    pp_counts, pp_area = postprocess_counts(preds, pp)
    counts = preds.default_counts
    min_area = max(1, pp.min_total_area)
    metrics = {
        "mmseg": summary_metrics(counts, preds.max_prob),
        "postprocessed": summary_metrics(pp_counts, preds.max_prob, min_area=min_area),
        "ci": {"mmseg": _ci(counts, n_boot, groups), "postprocessed": _ci(pp_counts, n_boot, groups), "n_boot": n_boot},
        "by_patient_seen": {"mmseg": patients.seen_unseen_metrics(counts, preds.max_prob, groups, n_boot),
                            "postprocessed": patients.seen_unseen_metrics(pp_counts, preds.max_prob, groups, n_boot, min_area=min_area)},
        "split_mode": split_mode_of(data_root),
        "postprocess": {**pp.as_dict(), **pp_info},
        "split": split,
        "checkpoint": str(checkpoint),
        "tta": bool(tta),
        "decision": _decision(model),
        "image_shape": list(preds.probs.shape[1:]),
        "definitions": DEFINITIONS,
    }
    metrics = _json_safe(metrics)  # as load_eval reads it back: NaN -> None, tuples -> lists
    per_image = pd.DataFrame({
        "name": preds.names,
        "patient": groups["patient"],
        "seen": groups["seen"],
        "positive": (counts[:, 0] + counts[:, 2]) > 0,
        "true_area": counts[:, 0] + counts[:, 2],
        "pred_area": counts[:, 0] + counts[:, 1],
        "dice": per_image_dice(counts),
        "pp_area": pp_area,
        "pp_dice": per_image_dice(pp_counts),
        "max_prob": preds.max_prob,
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    _save_npy(out_dir / PROBS_FILE, preds.probs)
    _save_npy(out_dir / MMSEG_PRED_FILE, np.packbits(preds.default_pred, axis=-1))
    atomic_write_text(out_dir / PER_IMAGE_FILE, per_image.to_csv(index=False))
    atomic_write_text(out_dir / GRID_FILE, grid.to_csv(index=False))
    atomic_write_json(out_dir / METRICS_FILE, metrics)
    atomic_write_json(out_dir / EVAL_FILE, {
        "run_dir": str(run_dir), "checkpoint": str(checkpoint), "split": split,
        "data_root": str(data_root), "batch_size": batch_size, "tta": bool(tta), "n_boot": n_boot,
        "postprocess": pp.as_dict(), "device": device or default_device(), "code_version": code_version(),
        "files": {"metrics": METRICS_FILE, "per_image": PER_IMAGE_FILE, "probs": PROBS_FILE,
                  "mmseg_pred": MMSEG_PRED_FILE, "postprocess_grid": GRID_FILE},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return EvalResult(run_dir=run_dir, checkpoint=checkpoint, split=split, out_dir=out_dir, data_root=data_root,
                      per_image=per_image, metrics=metrics, postprocess=pp, probs_path=out_dir / PROBS_FILE)


def _json_safe(obj: Any) -> Any:
    """NaN and infinities as None (strict JSON); tuples as lists."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def load_eval(out_dir: str | Path) -> EvalResult:
    """An :class:`EvalResult` read back from the folder ``evaluate_run`` wrote."""
    out_dir = Path(out_dir)
    info = json.loads((out_dir / EVAL_FILE).read_text())
    metrics = json.loads((out_dir / METRICS_FILE).read_text())
    per_image = pd.read_csv(out_dir / PER_IMAGE_FILE, dtype={"name": str, "patient": str})
    pp = PostProcess(**info["postprocess"])
    return EvalResult(run_dir=Path(info["run_dir"]), checkpoint=Path(info["checkpoint"]), split=info["split"],
                      out_dir=out_dir, data_root=Path(info["data_root"]), per_image=per_image, metrics=metrics,
                      postprocess=pp, probs_path=out_dir / PROBS_FILE)


def predicted_mask(result: EvalResult, index: int, postprocessed: bool = True) -> np.ndarray:
    """Image ``index``'s predicted mask: post-processed, or mmseg's own decision."""
    if postprocessed:
        probs = np.load(result.probs_path, mmap_mode="r")
        return apply_postprocess(np.asarray(probs[index]), result.postprocess)
    packed = np.load(result.out_dir / MMSEG_PRED_FILE, mmap_mode="r")
    width = int(result.metrics["image_shape"][1])
    return np.unpackbits(np.asarray(packed[index]), axis=-1, count=width).astype(bool)


TABLE_METRICS = ("mIoU", "mDice", "fg_dice", "fg_iou", "image_dice", "image_dice_positive")
PERCENT_ALREADY = ("mIoU", "mDice")


def _run_label(run_dir: Path) -> tuple[str, float]:
    manifest_path = run_dir / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    config = manifest.get("parameters", {}).get("config") or run_dir.parent.name
    return paths.config_name(config), float(manifest.get("lr", np.nan))


def _pct(key: str, value: float | None) -> float:
    if value is None:
        return np.nan
    return float(value) if key in PERCENT_ALREADY else 100 * float(value)


def _empty_baseline(result: EvalResult) -> dict[str, float]:
    """summary_metrics of predicting every mask empty, from the per-image true areas."""
    height, width = result.metrics["image_shape"]
    true_area = result.per_image["true_area"].to_numpy(np.int64)
    counts = np.stack([np.zeros_like(true_area), np.zeros_like(true_area), true_area, height * width - true_area], 1)
    return summary_metrics(counts)


def comparison_table(results: list[EvalResult]) -> pd.DataFrame:
    """One row per evaluated run, the seed's reported numbers, and the all-empty baseline per split.

    Every value is in % (mmseg's mIoU and mDice as they are, the fractions times 100); ``*_lo`` / ``*_hi``
    are the bootstrap interval of the mmseg decision's metric, ``pp_image_dice`` is after post-processing.
    ``split_mode`` is the prepared data's split (02_prepare); ``*_seen`` / ``*_unseen``: see
    :func:`helpers.patients.seen_unseen_columns`.
    """
    rows = []
    baselines: dict[tuple[str, str], dict] = {}
    for result in results:
        config, lr = _run_label(result.run_dir)
        mmseg, ci = result.metrics["mmseg"], result.metrics["ci"]
        row = {"config": config, "lr": lr, "split": result.split, "split_mode": result.metrics.get("split_mode", "unknown"),
               "images": mmseg["images"]}
        for key in TABLE_METRICS:
            row[key] = _pct(key, mmseg[key])
            low, high = ci.get("mmseg", {}).get(key, (None, None))
            row[f"{key}_lo"], row[f"{key}_hi"] = _pct(key, low), _pct(key, high)
        row["pp_image_dice"] = _pct("image_dice", result.metrics["postprocessed"]["image_dice"])
        low, high = ci.get("postprocessed", {}).get("image_dice", (None, None))
        row["pp_image_dice_lo"], row["pp_image_dice_hi"] = _pct("image_dice", low), _pct("image_dice", high)
        row.update(patients.seen_unseen_columns(result.metrics))
        row["checkpoint"] = str(result.checkpoint)
        rows.append(row)
        key = (result.split, str(result.data_root))
        if key not in baselines:
            summary = _empty_baseline(result)
            baselines[key] = {"config": "all-empty baseline", "lr": np.nan, "split": result.split, "split_mode": row["split_mode"],
                              "images": summary["images"], **{k: _pct(k, summary[k]) for k in TABLE_METRICS},
                              "pp_image_dice": _pct("image_dice", summary["image_dice"])}
    seed_rows = [{"config": "seed (reported)", "lr": lr, "split": "seed's val (random 80/20)", "split_mode": "seed", **values}
                 for lr, values in SEED_RESULTS.items()]
    return pd.DataFrame(rows + list(baselines.values()) + seed_rows).reset_index(drop=True)


def write_comparison(table: pd.DataFrame, out_dir: str | Path) -> tuple[Path, Path]:
    """``comparison.json`` (records, NaN as null) and ``comparison.csv`` in ``out_dir``, atomically."""
    out_dir = Path(out_dir)
    json_path, csv_path = out_dir / "comparison.json", out_dir / "comparison.csv"
    atomic_write_json(json_path, _json_safe(table.to_dict(orient="records")))
    atomic_write_text(csv_path, table.to_csv(index=False))
    return json_path, csv_path
