"""Ensembles of trained runs (SIIM-ACR 1st place: 5 folds x top-3 checkpoints, hflip TTA).

- **Mean probability**: :class:`EnsembleSegmentor` wraps several segmentors that share one input pipeline;
  each member's logits are resized to the image's original shape and turned into its pneumothorax
  probability exactly as for a single model (helpers.evaluate.foreground_probability), and the ensemble's
  probability is their mean. It behaves like an mmseg segmentor for helpers.evaluate.predict_split, so TTA
  (``tta=True``) averages each member's plain and flipped passes. Its own decision is ``mean p > 0.5``.
- **Checkpoint averaging**: :func:`write_averaged_checkpoint` averages the weights of a run's top-k
  checkpoints by val mDice (those the run kept: train with ``keep_checkpoints=-1`` to keep them all) into
  ``averaged_top<k>.pth`` beside them; that file then stands for the run.
- **Evaluation**: :func:`evaluate_ensemble` scores an ensemble like helpers.evaluate.evaluate_run, into
  ``outputs/eval/ensembles_<name>/<split>/``, so that it joins the comparison table. Post-processing is
  tuned on out-of-fold predictions when the members are the folds of one k-fold sweep (each image of
  ``fold<k>_val.txt`` predicted by the model that did not train on it), else on the val split.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from helpers import paths
from helpers.evaluate import (DEFINITIONS, EVAL_FILE, METRICS_FILE, MMSEG_PRED_FILE, PER_IMAGE_FILE, PROBS_FILE,
                              EvalResult, Predictions, _ci, _json_safe, _save_npy, default_device,
                              foreground_probability, load_model, postprocess_counts, predict_split,
                              tune_postprocess)
from helpers.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from helpers.metrics import per_image_dice, summary_metrics
from helpers.modeling.checkpoint import load_checkpoint_safely
from helpers.modeling.train import BEST_METRIC, MANIFEST_FILE, read_scalars
from helpers.provenance import code_version

log = logging.getLogger(__name__)

ENSEMBLES_FOLDER = "ensembles"  # outputs/ensembles/<name>/manifest.json describes one ensemble
AVERAGED_CHECKPOINT = "averaged_top{k}.pth"


class EnsembleSegmentor(torch.nn.Module):
    """Segmentors with the same data preprocessor and output channels, averaged in probability."""

    out_channels = 2  # the ensemble reports [1 - p, p] (as log-probabilities, so that softmax gives p back)

    def __init__(self, members: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        channels = {int(m.out_channels) for m in members}
        if len(channels) != 1:
            raise ValueError(f"ensemble members mix output channels {sorted(channels)} (softmax and sigmoid heads)")
        self.members = torch.nn.ModuleList(members)

    @property
    def data_preprocessor(self) -> torch.nn.Module:
        return self.members[0].data_preprocessor

    def inference(self, inputs: torch.Tensor, batch_img_metas: list[dict]) -> torch.Tensor:
        """(M, B, C, H, W): every member's logits at the input size."""
        return torch.stack([member.inference(inputs, batch_img_metas) for member in self.members])

    def member_probabilities(self, member_logits: torch.Tensor, data_samples: list) -> torch.Tensor:
        """(M, B, H, W) each member's pneumothorax probability at the images' original shape."""
        from mmseg.structures import SegDataSample

        probs = []
        for member, logits in zip(self.members, member_logits):
            samples = member.postprocess_result(logits, [SegDataSample(metainfo=s.metainfo) for s in data_samples])
            probs.append(foreground_probability(torch.stack([s.seg_logits.data for s in samples])))
        return torch.stack(probs)

    def postprocess_result(self, member_logits: torch.Tensor, data_samples: list) -> list:
        """Set each sample's ``seg_logits`` to log [1 - p, p] of the mean probability p, and
        ``pred_sem_seg`` to ``p > 0.5`` (mmseg's argmax of [1 - p, p])."""
        from mmengine.structures import PixelData

        mean = self.member_probabilities(member_logits, data_samples).mean(0)
        for sample, prob in zip(data_samples, mean):
            log_probs = torch.stack([1 - prob, prob]).clamp_min(torch.finfo(prob.dtype).tiny).log()
            sample.set_data({"seg_logits": PixelData(data=log_probs),
                             "pred_sem_seg": PixelData(data=(prob > 0.5).long()[None])})
        return data_samples


def _pipeline_key(cfg) -> str:
    """What must agree between members: the test pipeline and the data preprocessor."""
    return json.dumps([cfg.test_dataloader.dataset.pipeline, cfg.model.data_preprocessor], sort_keys=True, default=str)


def load_ensemble(members: Sequence[str | Path], device: str | None = None) -> tuple[EnsembleSegmentor, object, list[Path]]:
    """(ensemble in eval mode, the first member's config, the members' checkpoints) from run folders or
    ``.pth`` files; every member must share the first one's test pipeline and data preprocessor."""
    models, checkpoints, first_cfg = [], [], None
    for member in members:
        model, cfg, checkpoint = load_model(member, device)
        if first_cfg is None:
            first_cfg = cfg
        elif _pipeline_key(cfg) != _pipeline_key(first_cfg):
            raise ValueError(f"{member}: its test pipeline or data preprocessor differs from {members[0]}'s; "
                             "an ensemble needs the same input size and normalization")
        models.append(model)
        checkpoints.append(Path(checkpoint))
    return EnsembleSegmentor(models).eval(), first_cfg, checkpoints


def top_k_checkpoints(run_dir: str | Path, k: int) -> list[Path]:
    """The run's kept checkpoints with the k best val mDice (best first); fewer when fewer were kept."""
    run_dir = Path(run_dir)
    _, val_rows = read_scalars(run_dir)
    ranked = sorted(val_rows, key=lambda row: row.get(BEST_METRIC, -1), reverse=True)
    found = []
    for row in ranked:
        step = int(row["step"])
        candidates = [run_dir / f"iter_{step}.pth", *sorted(run_dir.glob(f"best_{BEST_METRIC}_iter_{step}.pth"))]
        existing = next((c for c in candidates if c.is_file()), None)
        if existing is not None:
            found.append(existing)
        if len(found) == k:
            break
    if not found:
        raise FileNotFoundError(f"{run_dir}: no checkpoint of a validated iteration is left (train with keep_checkpoints=-1)")
    if len(found) < k:
        log.warning("%s: only %d of the top-%d checkpoints were kept; averaging those", run_dir, len(found), k)
    return found


def average_state_dicts(state_dicts: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of floating-point tensors (computed in float64); other tensors (BatchNorm's
    ``num_batches_tracked``) are taken from the first."""
    keys = list(state_dicts[0])
    for index, state in enumerate(state_dicts[1:], start=1):
        if list(state) != keys:
            raise ValueError(f"state dict {index} has other keys than the first: the checkpoints are of different models")
    averaged = {}
    for key in keys:
        first = state_dicts[0][key]
        if first.is_floating_point():
            total = sum(state[key].to(torch.float64) for state in state_dicts)
            averaged[key] = (total / len(state_dicts)).to(first.dtype)
        else:
            averaged[key] = first.clone()
    return averaged


def write_averaged_checkpoint(run_dir: str | Path, k: int) -> Path:
    """``averaged_top<k>.pth`` in the run folder: the mean weights of its top-k checkpoints (skipped when
    it exists and was averaged from the same files)."""
    run_dir = Path(run_dir)
    sources = top_k_checkpoints(run_dir, k)
    target = run_dir / AVERAGED_CHECKPOINT.format(k=k)
    source_names = [p.name for p in sources]
    if target.is_file() and load_checkpoint_safely(target)["meta"].get("averaged_from") == source_names:
        return target
    checkpoints = [load_checkpoint_safely(p) for p in sources]
    meta = {key: value for key, value in checkpoints[0].get("meta", {}).items() if key == "dataset_meta"}
    meta.update(averaged_from=source_names, top_k=k)
    buffer = io.BytesIO()
    torch.save({"meta": meta, "state_dict": average_state_dicts([c["state_dict"] for c in checkpoints])}, buffer)
    atomic_write_bytes(target, buffer.getbuffer())
    return target


def _manifest(run_dir: Path) -> dict:
    path = run_dir / MANIFEST_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def fold_groups(run_dirs: Sequence[str | Path]) -> dict[str, list[Path]]:
    """Fold runs grouped by (config, lr) into ensembles of two or more: ``{name: run folders by fold}``."""
    groups: dict[tuple[str, float], list[tuple[int, Path]]] = defaultdict(list)
    for run_dir in map(Path, run_dirs):
        manifest = _manifest(run_dir)
        fold = manifest.get("parameters", {}).get("fold")
        if fold is not None:
            config = paths.config_name(manifest["parameters"]["config"])
            groups[(config, float(manifest["lr"]))].append((int(fold), run_dir))
    return {f"{config}_lr{lr:g}_{len(runs)}folds": [d for _, d in sorted(runs)]
            for (config, lr), runs in sorted(groups.items()) if len(runs) >= 2}


def _concat(predictions: Sequence[Predictions]) -> Predictions:
    return Predictions(names=[n for p in predictions for n in p.names],
                       probs=np.concatenate([p.probs for p in predictions]),
                       truth=np.concatenate([p.truth for p in predictions]),
                       default_counts=np.concatenate([p.default_counts for p in predictions]),
                       max_prob=np.concatenate([p.max_prob for p in predictions]),
                       default_pred=np.concatenate([p.default_pred for p in predictions]))


def _tuning_predictions(ensemble: EnsembleSegmentor, cfg, run_dirs: Sequence[Path], data_root: Path,
                        batch_size: int, tta: bool) -> tuple[Predictions, str]:
    """Out-of-fold predictions when every member is a distinct fold of one sweep, else the ensemble on val."""
    folds = [_manifest(d).get("parameters", {}).get("fold") for d in run_dirs]
    if None not in folds and len(set(folds)) == len(folds):
        parts = [predict_split(member, cfg, data_root, paths.fold_split_file(fold, "val").removesuffix(".txt"),
                               batch_size, tta) for member, fold in zip(ensemble.members, folds)]
        return _concat(parts), "out-of-fold (each fold's val part, predicted by the model that did not train on it)"
    return predict_split(ensemble, cfg, data_root, "val", batch_size, tta), "val"


def evaluate_ensemble(runs: Sequence[str | Path], name: str, *, split: str = "test", data_root: str | Path | None = None,
                      batch_size: int = 8, tta: bool = False, top_k: int = 0, n_boot: int = 1000,
                      device: str | None = None, outputs: str | Path = paths.OUTPUTS_DIR) -> EvalResult:
    """Evaluate the mean-probability ensemble of ``runs`` (each its top-k averaged checkpoint when
    ``top_k > 0``, else its best) on ``split``; post-processing tuned as the module doc says."""
    from helpers.dual_threshold import compare_schemes

    run_dirs = [Path(r).resolve() for r in runs]
    members = [write_averaged_checkpoint(r, top_k) if top_k > 0 else r for r in run_dirs]
    ensemble, cfg, checkpoints = load_ensemble(members, device or default_device())
    data_root = Path(data_root).resolve() if data_root is not None else Path(cfg.test_dataloader.dataset.data_root)
    ensemble_dir = Path(outputs) / ENSEMBLES_FOLDER / name
    manifest = {"parameters": {"config": name}, "lr": float(_manifest(run_dirs[0]).get("lr", np.nan)),
                "members": [str(r) for r in run_dirs], "checkpoints": [str(c) for c in checkpoints],
                "tta": bool(tta), "top_k": int(top_k), "code_version": code_version()}
    atomic_write_json(ensemble_dir / MANIFEST_FILE, manifest)

    preds = predict_split(ensemble, cfg, data_root, split, batch_size, tta)
    tuning, tuned_on = _tuning_predictions(ensemble, cfg, run_dirs, data_root, batch_size, tta)
    pp, grid = tune_postprocess(tuning)
    dual, _ = compare_schemes(tuning, grid, preds, n_boot)
    del tuning
    pp_counts, pp_area = postprocess_counts(preds, pp)
    counts = preds.default_counts
    metrics = _json_safe({
        "mmseg": summary_metrics(counts, preds.max_prob),
        "postprocessed": summary_metrics(pp_counts, preds.max_prob, min_area=max(1, pp.min_total_area)),
        "ci": {"mmseg": _ci(counts, n_boot), "postprocessed": _ci(pp_counts, n_boot), "n_boot": n_boot},
        "postprocess": {**pp.as_dict(), "tuned_on": tuned_on, "evaluated_on": split},
        "dual_threshold": dual,
        "split": split, "checkpoint": [str(c) for c in checkpoints], "tta": bool(tta),
        "decision": {"type": "mean probability > 0.5", "members": len(checkpoints)},
        "image_shape": list(preds.probs.shape[1:]),
        "definitions": DEFINITIONS,
    })
    per_image = pd.DataFrame({
        "name": preds.names, "positive": (counts[:, 0] + counts[:, 2]) > 0, "true_area": counts[:, 0] + counts[:, 2],
        "pred_area": counts[:, 0] + counts[:, 1], "dice": per_image_dice(counts), "pp_area": pp_area,
        "pp_dice": per_image_dice(pp_counts), "max_prob": preds.max_prob,
    })
    out_dir = paths.eval_dir(ensemble_dir, split, Path(outputs))
    out_dir.mkdir(parents=True, exist_ok=True)
    _save_npy(out_dir / PROBS_FILE, preds.probs)
    _save_npy(out_dir / MMSEG_PRED_FILE, np.packbits(preds.default_pred, axis=-1))
    atomic_write_text(out_dir / PER_IMAGE_FILE, per_image.to_csv(index=False))
    atomic_write_json(out_dir / METRICS_FILE, metrics)
    atomic_write_json(out_dir / EVAL_FILE, {
        "run_dir": str(ensemble_dir), "checkpoint": str(ensemble_dir / MANIFEST_FILE), "split": split,
        "data_root": str(data_root), "batch_size": batch_size, "tta": bool(tta), "n_boot": n_boot,
        "postprocess": pp.as_dict(), "device": device or default_device(), "code_version": code_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return EvalResult(run_dir=ensemble_dir, checkpoint=ensemble_dir / MANIFEST_FILE, split=split, out_dir=out_dir,
                      data_root=data_root, per_image=per_image, metrics=metrics, postprocess=pp,
                      probs_path=out_dir / PROBS_FILE)
