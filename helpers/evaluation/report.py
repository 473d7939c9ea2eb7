"""Score one split's predictions and write the evaluation folder: the single entry for single runs, fold
ensembles and checkpoint averages alike (:func:`evaluate_predictions`), so every folder has the same files,
keys and types. Never loads a model: what made the predictions comes in as a :class:`PredictionSource`.

Conventions (written into each ``metrics.json`` under ``definitions``):

- **mmseg decision**: the segmentor's own output, exactly what ``Runner.test()`` scores: argmax of the
  softmax classes, or sigmoid > ``decode_head.threshold`` for one-channel models, computed from the logits
  resized to the image's original shape. Its pooled aAcc / mIoU / mDice equal mmseg's ``IoUMetric``.
- **probability**: the pneumothorax probability (``helpers.modeling.inference``, with or without TTA), stored
  as ``uint8 = round(255 p)`` in ``probs.npy``. TTA never changes the mmseg decision.
- **post-processing**: the triplet of ``helpers.postprocessing``, tuned on the val split only; every other
  scheme is tuned beside it and the val winner is recorded (``eval.json``: ``schemes``, ``val_winner``).

The folder's file names are ``helpers.core.run_folders``'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers.core import paths, run_folders
from helpers.core.fileio import atomic_write_json, atomic_write_text, json_safe
from helpers.core.metrics import cluster_bootstrap_ci, per_image_dice, summary_metrics
from helpers.core.provenance import code_version
from helpers.core.stacks import save_stack
from helpers.evaluation import seen_unseen
from helpers.evaluation.model_card import write_model_card
from helpers.evaluation.schemes import compare_schemes
from helpers.postprocessing import PostProcess, Predictions, apply_postprocess, postprocess_counts, tune_schemes

DEFINITIONS = {
    "aAcc": "mmseg's pixel accuracy: correctly classified pixels over all pixels of the split, in %.",
    "mIoU": (
        "mmseg's IoUMetric: IoU = I/U per class from pixels pooled over the split, "
        "averaged over background and pneumothorax, in %."
    ),
    "mDice": (
        "mmseg's IoUMetric: Dice = 2I/(P+L) per class from pooled pixels, "
        "averaged over background and pneumothorax, in %."
    ),
    "IoU.pneumothorax": (
        "The pneumothorax class's pooled IoU alone, in % (NaN when neither truth nor prediction has any)."
    ),
    "Dice.pneumothorax": "The pneumothorax class's pooled Dice alone, in %.",
    "fg_iou": "The pneumothorax class's pooled IoU as a fraction.",
    "fg_dice": "The pneumothorax class's pooled Dice as a fraction.",
    "image_dice": (
        "SIIM-ACR competition metric: mean over images of 2|P∩T|/(|P|+|T|), "
        "1 for an empty prediction on an empty truth."
    ),
    "image_dice_positive": "The per-image Dice averaged over images with pneumothorax only.",
    "empty_baseline_image_dice": "The per-image Dice of predicting every mask empty: the fraction of negative images.",
    "sensitivity": "Images with pneumothorax whose predicted area reaches min_area, over all images with pneumothorax.",
    "specificity": "Images without pneumothorax whose predicted area stays below min_area, over all such images.",
    "det_auc": "ROC AUC of the image's maximum pneumothorax probability for telling positive from negative images.",
    "ci": (
        "95 % percentile bootstrap intervals resampling patients with replacement "
        "(cluster bootstrap: all images of a drawn patient)."
    ),
    "by_patient_seen": seen_unseen.SEEN_DEFINITION,
    "mmseg": "Metrics of the segmentor's own decision (argmax, or sigmoid > threshold), identical to Runner.test().",
    "postprocessed": "Metrics after the probability threshold and the minimum component and total areas.",
}


@dataclass
class PredictionSource:
    """What made the predictions, as recorded in the evaluation (never loaded here)."""

    run_dir: Path  # the run folder, or the ensemble's folder
    checkpoint: Path  # the .pth, or the ensemble's manifest that stands for its checkpoint
    members: list[Path]  # the checkpoints whose probabilities these are (one for a single model)
    decision: dict  # the model's own decision (helpers.modeling.inference.LoadedModel.decision)
    model_input: tuple[int, int]  # (height, width) the model sees
    library_warnings: list[str] = field(default_factory=list)


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


def choose_postprocess(
    postprocess: str | dict | PostProcess,
    preds: Predictions,
    val: Predictions | None,
    tuned_on: str,
    split: str,
    n_boot: int,
) -> tuple[PostProcess, dict, pd.DataFrame, dict | None, dict]:
    """(the triplet applied, its metrics.json record, its tuning grid, the schemes' report or None, every
    scheme's values) for ``postprocess``: 'tune' tunes every scheme on ``val`` (the predictions named by
    ``tuned_on``, never the evaluated split's unless it is val), 'none' is ``PostProcess(0.5, 0, 0)``, a dict or
    :class:`PostProcess` is used as given."""
    if isinstance(postprocess, str) and postprocess == "tune":
        if val is None:
            raise ValueError("postprocess='tune' needs the val predictions")
        tuned = tune_schemes(val)
        pp, grid = tuned[PostProcess.name]
        info: dict[str, Any] = {"tuned_on": tuned_on, "evaluated_on": split, "val_images": len(val.names)}
        if split == "val" and tuned_on == "val":
            info["warning"] = "tuned and evaluated on val: the post-processed metrics are optimistic"
        return (
            pp,
            info,
            grid,
            compare_schemes(tuned, len(val.names), preds, n_boot),
            {name: scheme.as_dict() for name, (scheme, _) in tuned.items()},
        )
    if isinstance(postprocess, str) and postprocess == "none":
        pp = PostProcess()
    elif isinstance(postprocess, (dict, PostProcess)):
        pp = postprocess if isinstance(postprocess, PostProcess) else PostProcess(**postprocess)
    else:
        raise ValueError(f"postprocess must be 'tune', 'none', a dict or a PostProcess, not {postprocess!r}")
    return pp, {"tuned_on": "given", "evaluated_on": split}, pd.DataFrame(), None, {PostProcess.name: pp.as_dict()}


def evaluate_predictions(
    preds: Predictions,
    split: str,
    out_dir: str | Path,
    *,
    source: PredictionSource,
    data_root: Path,
    split_mode: str,
    groups: pd.DataFrame,
    val: Predictions | None = None,
    tuned_on: str = "val",
    postprocess: str | dict | PostProcess = "tune",
    n_boot: int = 1000,
    settings: dict | None = None,
) -> EvalResult:
    """Score ``preds`` (the mmseg decision, and post-processed, with patient bootstrap intervals and the
    seen / unseen breakdown) and write an evaluation folder (helpers.core.run_folders' files) to ``out_dir``.

    ``val``: the predictions post-processing is tuned on (see :func:`choose_postprocess`); ``groups``
    (helpers.data.patients.evaluation_patients) gives each image's patient and whether it was seen in training;
    ``settings`` (batch size, TTA, device) join eval.json."""
    out_dir = paths.resolve(out_dir)
    settings = dict(settings or {})
    pp, pp_info, grid, schemes_report, schemes = choose_postprocess(postprocess, preds, val, tuned_on, split, n_boot)
    pp_counts, pp_area = postprocess_counts(preds, pp)
    counts = preds.default_counts
    min_area = max(1, pp.min_total_area)
    patient_of = groups["patient"].to_numpy()
    metrics = {
        "mmseg": summary_metrics(counts, preds.max_prob),
        "postprocessed": summary_metrics(pp_counts, preds.max_prob, min_area=min_area),
        "ci": {
            "mmseg": cluster_bootstrap_ci(counts, patient_of, n_boot=n_boot),
            "postprocessed": cluster_bootstrap_ci(pp_counts, patient_of, n_boot=n_boot),
            "n_boot": n_boot,
        },
        "by_patient_seen": {
            "mmseg": seen_unseen.seen_unseen_metrics(counts, preds.max_prob, groups, n_boot),
            "postprocessed": seen_unseen.seen_unseen_metrics(
                pp_counts, preds.max_prob, groups, n_boot, min_area=min_area
            ),
        },
        "split": split,
        "checkpoint": str(source.checkpoint),
        "members": [str(m) for m in source.members],
        "image_shape": list(preds.probs.shape[1:]),
        "split_mode": split_mode,
        "postprocess": {**pp.as_dict(), **pp_info},
        "tta": bool(settings.get("tta", False)),
        "decision": source.decision,
        # the model sees its training size; its probabilities are resized to the masks' size and scored there
        # (the prepared size of data_root: the model's own, or 1024 for the original masks, as the seed did)
        "resolution": {
            "model_input": list(source.model_input),
            "evaluated_at": list(preds.probs.shape[1:]),
            "masks": str(data_root),
        },
        "library_warnings": list(source.library_warnings),
        "dual_threshold": schemes_report,
        "definitions": DEFINITIONS,
    }
    metrics = json_safe(metrics)  # as load_eval reads it back: NaN -> None, tuples -> lists
    per_image = pd.DataFrame(
        {
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
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    save_stack(
        out_dir / run_folders.PROBS_FILE, preds.probs
    )  # moved there when already on disk, else written image by image
    save_stack(out_dir / run_folders.MMSEG_PRED_FILE, preds.default_pred, packed=True)
    atomic_write_text(out_dir / run_folders.PER_IMAGE_FILE, per_image.to_csv(index=False))
    atomic_write_text(out_dir / run_folders.GRID_FILE, grid.to_csv(index=False))
    atomic_write_json(out_dir / run_folders.EVAL_METRICS_FILE, metrics)
    atomic_write_json(
        out_dir / run_folders.EVAL_INFO_FILE,
        json_safe(
            {
                "run_dir": str(source.run_dir),
                "checkpoint": str(source.checkpoint),
                "split": split,
                "data_root": str(data_root),
                "n_boot": n_boot,
                "postprocess": pp.as_dict(),
                "schemes": schemes,
                "val_winner": schemes_report["winner_on_val"] if schemes_report else None,
                "batch_size": settings.get("batch_size"),
                "tta": bool(settings.get("tta", False)),
                "device": settings.get("device"),
                "code_version": code_version(),
                "files": {
                    "metrics": run_folders.EVAL_METRICS_FILE,
                    "per_image": run_folders.PER_IMAGE_FILE,
                    "probs": run_folders.PROBS_FILE,
                    "mmseg_pred": run_folders.MMSEG_PRED_FILE,
                    "postprocess_grid": run_folders.GRID_FILE,
                    "model_card": run_folders.MODEL_CARD_FILE,
                },
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
        ),
    )
    write_model_card(out_dir)
    return EvalResult(
        run_dir=source.run_dir,
        checkpoint=source.checkpoint,
        split=split,
        out_dir=out_dir,
        data_root=data_root,
        per_image=per_image,
        metrics=metrics,
        postprocess=pp,
        probs_path=out_dir / run_folders.PROBS_FILE,
    )


def load_eval(out_dir: str | Path) -> EvalResult:
    """An :class:`EvalResult` read back from the folder :func:`evaluate_predictions` wrote."""
    out_dir = paths.resolve(out_dir)
    info = run_folders.read_eval_file(out_dir)
    metrics = run_folders.read_eval_file(out_dir, run_folders.EVAL_METRICS_FILE)
    per_image = pd.read_csv(out_dir / run_folders.PER_IMAGE_FILE, dtype={"name": str, "patient": str})
    pp = PostProcess(**info["postprocess"])
    return EvalResult(
        run_dir=Path(info["run_dir"]),
        checkpoint=Path(info["checkpoint"]),
        split=info["split"],
        out_dir=out_dir,
        data_root=Path(info["data_root"]),
        per_image=per_image,
        metrics=metrics,
        postprocess=pp,
        probs_path=out_dir / run_folders.PROBS_FILE,
    )


def predicted_mask(result: EvalResult, index: int, postprocessed: bool = True) -> np.ndarray:
    """Image ``index``'s predicted mask: post-processed, or mmseg's own decision."""
    if postprocessed:
        probs = np.load(result.probs_path, mmap_mode="r")
        return apply_postprocess(np.asarray(probs[index]), result.postprocess)
    packed = np.load(result.out_dir / run_folders.MMSEG_PRED_FILE, mmap_mode="r")
    width = int(result.metrics["image_shape"][1])
    return np.unpackbits(np.asarray(packed[index]), axis=-1, count=width).astype(bool)
