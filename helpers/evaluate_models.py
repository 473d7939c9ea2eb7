"""04_evaluate's steps for one model: its predictions (helpers.modeling), then their evaluation
(helpers.evaluation). The thin layer above both, so that neither imports the other."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from helpers import paths, patients, runs
from helpers.evaluation import EvalResult, PredictionSource, evaluate_predictions
from helpers.modeling.ensemble import ENSEMBLE_DECISION, build_ensemble, tuning_predictions
from helpers.modeling.inference import LoadedModel, default_device, load_model, predict_split
from helpers.postprocessing import PostProcess
from helpers.prepared import check_prepared, prepared_pairs


def _evaluate_model(model: LoadedModel, source: PredictionSource, tuning, *, split: str, data_root: Path,
                    batch_size: int, tta: bool, postprocess, n_boot: int, out_dir: Path, device: str | None) -> EvalResult:
    """Predict ``split`` with ``model`` and evaluate it; ``tuning(preds, store)`` gives (val predictions, tuned_on)
    when tuning, predicting into the folder ``store``.

    The per-pixel predictions go to disk batch by batch (helpers.stacks), in a scratch folder beside the results:
    the evaluation moves the evaluated split's probs.npy and mmseg_pred.npy out of it, the rest is removed."""
    prepared = check_prepared(data_root, model.size[0], larger_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".predicting-", dir=out_dir) as scratch_name:
        scratch = Path(scratch_name)
        preds = predict_split(model, data_root, split, batch_size, tta, store=scratch / split)
        groups = patients.evaluation_patients(prepared_pairs(data_root), split, preds.names)
        val, tuned_on = (tuning(preds, scratch / "tuning") if isinstance(postprocess, str) and postprocess == "tune"
                         else (None, "given"))
        return evaluate_predictions(preds, split, out_dir, source=source, data_root=data_root,
                                    split_mode=prepared.split_mode, groups=groups, val=val, tuned_on=tuned_on,
                                    postprocess=postprocess, n_boot=n_boot,
                                    settings={"batch_size": batch_size, "tta": bool(tta), "device": device or default_device()})


def evaluate_run(run: str | Path, *, split: str = "test", prepared_root: str | Path | None = None, batch_size: int = 8,
                 tta: bool = False, postprocess: str | dict | PostProcess = "tune", out_dir: str | Path | None = None,
                 n_boot: int = 1000, device: str | None = None) -> EvalResult:
    """Predict ``split`` with a run (folder or ``.pth``), score it (mmseg decision and post-processed) and write
    its evaluation folder (default: helpers.runs.eval_dir).

    ``postprocess``: 'tune' tunes every scheme on the val split only (predicted here; never the evaluated one
    unless ``split='val'``), 'none' is ``PostProcess(0.5, 0, 0)``, a dict or :class:`PostProcess` is used as
    given. ``prepared_root``: the prepared folder (default: the run's config's); its size must be the model's,
    or larger to score against finer masks (as the seed scored 512 models on the 1024 masks; ``resolution`` in
    metrics.json says which). Relative paths are from the repository root.
    """
    model = load_model(run, device)
    run_dir, checkpoint = model.run_dir.resolve(), model.checkpoint.resolve()
    data_root = paths.resolve(prepared_root if prepared_root is not None else model.cfg.test_dataloader.dataset.data_root)
    width, height = model.size
    if width != height:
        raise ValueError(f"{model.checkpoint}: a {width}x{height} model; 02_prepare writes square images only")
    source = PredictionSource(run_dir=run_dir, checkpoint=checkpoint, members=[checkpoint], decision=model.decision,
                              model_input=(height, width), library_warnings=model.library_warnings)

    def tuning(preds, store):
        return (preds if split == "val" else predict_split(model, data_root, "val", batch_size, tta, store=store)), "val"

    out_dir = paths.resolve(out_dir) if out_dir is not None else runs.eval_dir(run_dir, split)
    return _evaluate_model(model, source, tuning, split=split, data_root=data_root, batch_size=batch_size, tta=tta,
                           postprocess=postprocess, n_boot=n_boot, out_dir=out_dir, device=device)


def evaluate_ensemble(run_folders: Sequence[str | Path], name: str, *, split: str = "test",
                      prepared_root: str | Path | None = None, batch_size: int = 8, tta: bool = False, top_k: int = 0,
                      n_boot: int = 1000, device: str | None = None, outputs: str | Path = paths.OUTPUTS_DIR) -> EvalResult:
    """Evaluate the mean-probability ensemble of ``run_folders`` (helpers.modeling.ensemble.build_ensemble) on
    ``split`` into ``outputs/eval/ensembles_<name>/<split>/``, like :func:`evaluate_run`; post-processing is
    tuned on out-of-fold predictions for the folds of one sweep, else on val. ``prepared_root``: as for
    :func:`evaluate_run` (default: the first member's config's)."""
    ensemble, members, run_dirs = build_ensemble(run_folders, name, top_k=top_k, tta=tta, device=device, outputs=outputs)
    data_root = paths.resolve(prepared_root if prepared_root is not None else ensemble.cfg.test_dataloader.dataset.data_root)
    width, height = ensemble.size
    source = PredictionSource(run_dir=ensemble.run_dir, checkpoint=ensemble.checkpoint,
                              members=[m.checkpoint.resolve() for m in members],
                              decision={"type": ENSEMBLE_DECISION, "members": len(members)},
                              model_input=(height, width), library_warnings=ensemble.library_warnings)

    def tuning(preds, store):  # the members' probabilities are averaged per batch: memory is one batch's
        return tuning_predictions(ensemble, members, run_dirs, data_root, batch_size, tta, store=store)

    return _evaluate_model(ensemble, source, tuning, split=split, data_root=data_root, batch_size=batch_size, tta=tta,
                           postprocess="tune", n_boot=n_boot, out_dir=runs.eval_dir(ensemble.run_dir, split, outputs),
                           device=device)
