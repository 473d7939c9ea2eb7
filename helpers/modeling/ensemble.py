"""Ensembles of trained runs (SIIM-ACR 1st place: 5 folds x top-3 checkpoints, hflip TTA).

- **Mean probability**: :class:`EnsembleSegmentor` wraps several segmentors that share one input pipeline;
  each member's logits are resized to the image's original shape and turned into its pneumothorax
  probability exactly as for a single model (helpers.modeling.inference.foreground_probability), and the
  ensemble's probability is their mean. :func:`load_ensemble` wraps it in a LoadedModel, so that
  helpers.modeling.inference.predict_split runs it like one model and TTA (``tta=True``) averages each
  member's plain and flipped passes. Its own decision is ``mean p > 0.5``.
- **Checkpoint averaging**: :func:`write_averaged_checkpoint` averages the weights of a run's top-k
  checkpoints by val mDice (those the run kept: train with ``keep_checkpoints=-1`` to keep them all) into
  ``averaged_top<k>.pth`` beside them (helpers.core.run_folders.AVERAGED_CHECKPOINT); that file then stands for the run.
- **The ensemble as a model**: :func:`build_ensemble` makes one in its folder (helpers.core.run_folders.ensemble_dir);
  :func:`tuning_predictions` gives the predictions post-processing is tuned on: out-of-fold when the members
  are the folds of one k-fold sweep (each image of ``fold<k>_val.txt`` predicted by the model that did not
  train on it), else the ensemble's on the val split. Scoring is helpers.evaluation's (never imported here;
  helpers.workflow.evaluate_runs calls one, then the other).
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from helpers.core import paths, run_folders
from helpers.core.fileio import atomic_write_bytes, atomic_write_json, json_safe
from helpers.core.provenance import code_version
from helpers.core.stacks import ChainedStack
from helpers.data.prepared_folder import fold_split_file
from helpers.modeling.checkpoint import check_finite, read_checkpoint
from helpers.modeling.inference import LoadedModel, default_device, foreground_probability, load_model, predict_split
from helpers.postprocessing import Predictions

log = logging.getLogger(__name__)


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
        for member, logits in zip(self.members, member_logits, strict=True):
            samples = member.postprocess_result(logits, [SegDataSample(metainfo=s.metainfo) for s in data_samples])
            probs.append(foreground_probability(torch.stack([s.seg_logits.data for s in samples])))
        return torch.stack(probs)

    def postprocess_result(self, member_logits: torch.Tensor, data_samples: list) -> list:
        """Set each sample's ``seg_logits`` to log [1 - p, p] of the mean probability p, and
        ``pred_sem_seg`` to ``p > 0.5`` (mmseg's argmax of [1 - p, p])."""
        from mmengine.structures import PixelData

        mean = self.member_probabilities(member_logits, data_samples).mean(0)
        for sample, prob in zip(data_samples, mean, strict=True):
            log_probs = torch.stack([1 - prob, prob]).clamp_min(torch.finfo(prob.dtype).tiny).log()
            sample.set_data(
                {"seg_logits": PixelData(data=log_probs), "pred_sem_seg": PixelData(data=(prob > 0.5).long()[None])}
            )
        return data_samples


def _pipeline_key(cfg) -> str:
    """What must agree between members: the test pipeline and the data preprocessor."""
    return json.dumps([cfg.test_dataloader.dataset.pipeline, cfg.model.data_preprocessor], sort_keys=True, default=str)


def load_ensemble(
    members: Sequence[str | Path], device: str | None = None, ensemble_dir: str | Path | None = None
) -> tuple[LoadedModel, list[LoadedModel]]:
    """(the ensemble as one model, its members) from run folders or ``.pth`` files; every member must share the
    first one's test pipeline and data preprocessor. The ensemble has the first member's config and size; its
    folder is ``ensemble_dir`` (default: the folder holding the members), whose manifest stands for its checkpoint."""
    loaded: list[LoadedModel] = []
    for member in members:
        model = load_model(member, device)
        if loaded and _pipeline_key(model.cfg) != _pipeline_key(loaded[0].cfg):
            raise ValueError(
                f"{member}: its test pipeline or data preprocessor differs from {members[0]}'s; "
                "an ensemble needs the same input size and normalization"
            )
        loaded.append(model)
    if not loaded:
        raise ValueError("an ensemble needs at least one member")
    folder = (
        paths.resolve(ensemble_dir)
        if ensemble_dir is not None
        else Path(os.path.commonpath([m.run_dir.resolve() for m in loaded]))
    )
    warnings = list(dict.fromkeys(w for m in loaded for w in m.library_warnings))
    ensemble = LoadedModel(
        net=EnsembleSegmentor([m.net for m in loaded]).eval(),
        cfg=loaded[0].cfg,
        checkpoint=folder / run_folders.MANIFEST_FILE,
        run_dir=folder,
        size=loaded[0].size,
        threshold=0.5,
        sigmoid=False,
        library_warnings=warnings,
    )
    return ensemble, loaded


def top_k_checkpoints(run_dir: str | Path, k: int) -> list[Path]:
    """The run's kept checkpoints with the k best val mDice (best first); fewer when fewer were kept."""
    run_dir = Path(run_dir)
    _, val_rows = run_folders.read_scalars(run_dir)
    ranked = sorted(val_rows, key=lambda row: row.get(run_folders.BEST_METRIC, -1), reverse=True)
    found = []
    for row in ranked:
        existing = run_folders.step_checkpoint(run_dir, int(row["step"]))
        if existing is not None:
            found.append(existing)
        if len(found) == k:
            break
    if not found:
        raise FileNotFoundError(
            f"{run_dir}: no checkpoint of a validated iteration is left (train with keep_checkpoints=-1)"
        )
    if len(found) < k:
        log.warning("%s: only %d of the top-%d checkpoints were kept; averaging those", run_dir, len(found), k)
    return found


def average_state_dicts(state_dicts: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of floating-point tensors (computed in float64); other tensors (BatchNorm's
    ``num_batches_tracked``) are taken from the first."""
    keys = list(state_dicts[0])
    for index, state in enumerate(state_dicts[1:], start=1):
        if list(state) != keys:
            raise ValueError(
                f"state dict {index} has other keys than the first: the checkpoints are of different models"
            )
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
    target = run_dir / run_folders.AVERAGED_CHECKPOINT.format(k=k)
    source_names = [p.name for p in sources]
    if target.is_file() and read_checkpoint(target)["meta"].get("averaged_from") == source_names:
        return target
    checkpoints = [read_checkpoint(p) for p in sources]  # errors name the file
    for path, checkpoint in zip(sources, checkpoints, strict=True):
        check_finite(checkpoint["state_dict"], path)
    meta = {key: value for key, value in checkpoints[0].get("meta", {}).items() if key == "dataset_meta"}
    meta.update(averaged_from=source_names, top_k=k)
    buffer = io.BytesIO()
    torch.save({"meta": meta, "state_dict": average_state_dicts([c["state_dict"] for c in checkpoints])}, buffer)
    atomic_write_bytes(target, buffer.getbuffer())
    return target


def fold_groups(run_dirs: Sequence[str | Path]) -> dict[str, list[Path]]:
    """Fold runs grouped by (config, lr) into ensembles of two or more: ``{name: run folders by fold}``."""
    groups: dict[tuple[str, float], list[tuple[int, Path]]] = defaultdict(list)
    for run_dir in map(Path, run_dirs):
        manifest = run_folders.read_manifest(run_dir)
        fold = manifest.get("parameters", {}).get("fold")
        if fold is not None:
            config = paths.config_name(manifest["parameters"]["config"])
            groups[(config, float(manifest["lr"]))].append((int(fold), run_dir))
    return {
        f"{config}_lr{lr:g}_{len(folds)}folds": [d for _, d in sorted(folds)]
        for (config, lr), folds in sorted(groups.items())
        if len(folds) >= 2
    }


def _concat(predictions: Sequence[Predictions]) -> Predictions:
    """One Predictions of several, in order; stacks on disk are chained, not read (helpers.core.stacks)."""

    def joined(key: str):
        parts = [getattr(p, key) for p in predictions]
        return np.concatenate(parts) if all(isinstance(a, np.ndarray) for a in parts) else ChainedStack(parts)

    return Predictions(
        names=[n for p in predictions for n in p.names],
        probs=joined("probs"),
        truth=joined("truth"),
        default_counts=np.concatenate([p.default_counts for p in predictions]),
        max_prob=np.concatenate([p.max_prob for p in predictions]),
        default_pred=joined("default_pred"),
    )


def tuning_predictions(
    ensemble: LoadedModel,
    members: Sequence[LoadedModel],
    run_dirs: Sequence[Path],
    data_root: Path,
    batch_size: int,
    tta: bool,
    store: Path | None = None,
) -> tuple[Predictions, str]:
    """Out-of-fold predictions when every member is a distinct fold of one sweep, else the ensemble on val
    (written to the folder ``store`` when given, as helpers.modeling.inference.predict_split does)."""
    folds = [run_folders.read_manifest(d).get("parameters", {}).get("fold") for d in run_dirs]
    if None not in folds and len(set(folds)) == len(folds):
        parts = [
            predict_split(
                member,
                data_root,
                fold_split_file(fold, "val").removesuffix(".txt"),
                batch_size,
                tta,
                store=None if store is None else store / f"fold{fold}",
            )
            for member, fold in zip(members, folds, strict=True)
        ]
        return _concat(parts), "out-of-fold (each fold's val part, predicted by the model that did not train on it)"
    return predict_split(ensemble, data_root, "val", batch_size, tta, store=store), "val"


def build_ensemble(
    member_runs: Sequence[str | Path],
    name: str,
    *,
    top_k: int = 0,
    tta: bool = False,
    device: str | None = None,
    outputs: str | Path = paths.OUTPUTS_DIR,
) -> tuple[LoadedModel, list[LoadedModel], list[Path]]:
    """(the ensemble as one model, its members, their run folders) for the mean-probability ensemble of
    ``member_runs`` (each its top-k averaged checkpoint when ``top_k > 0``, else its best), in the folder
    helpers.core.run_folders.ensemble_dir names, whose manifest (written here) stands for its checkpoint."""
    run_dirs = [paths.resolve(r).resolve() for r in member_runs]
    folder = run_folders.ensemble_dir(name, outputs)
    member_files = [write_averaged_checkpoint(r, top_k) if top_k > 0 else r for r in run_dirs]
    ensemble, members = load_ensemble(member_files, device or default_device(), folder)
    atomic_write_json(
        ensemble.checkpoint,
        json_safe(
            {
                "parameters": {"config": name},
                "lr": run_folders.run_label(run_dirs[0])[1],
                "members": [str(r) for r in run_dirs],
                "checkpoints": [str(m.checkpoint.resolve()) for m in members],
                "tta": bool(tta),
                "top_k": int(top_k),
                "code_version": code_version(),
            }
        ),
    )
    return ensemble, members, run_dirs


ENSEMBLE_DECISION = "mean probability > 0.5"  # the ensemble's own decision, as evaluations record it
