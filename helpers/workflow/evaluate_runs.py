"""04_evaluate's steps for one model: its predictions (helpers.modeling), then their evaluation
(helpers.evaluation). The thin layer above both, so that neither imports the other.

04's loop over runs (and fold ensembles) is here too (:func:`evaluate_runs`, :func:`evaluate_fold_ensembles`):
each is evaluated on its own in its locked evaluation folder; one that cannot be evaluated (its training
failed, its checkpoint is unreadable or non-finite, anything else it raises) becomes a
:class:`~helpers.evaluation.FailedEvaluation`, a failed row of the comparison, and the others are still
evaluated. Only another writer of the same evaluation folder (helpers.core.locks.FolderLocked) stops the whole
call: two 04s would otherwise race on every folder.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from helpers.core import paths, run_folders
from helpers.core.fileio import remove_dead_scratch, scratch_prefix
from helpers.core.locks import FolderLocked, folder_lock
from helpers.core.parameters import EvaluateParams
from helpers.data import patients
from helpers.data.prepared_folder import check_prepared, prepared_pairs
from helpers.evaluation import EvalResult, FailedEvaluation, PredictionSource, evaluate_predictions
from helpers.modeling.ensemble import ENSEMBLE_DECISION, build_ensemble, fold_groups, tuning_predictions
from helpers.modeling.inference import LoadedModel, default_device, load_model, predict_split
from helpers.postprocessing import PostProcess

log = logging.getLogger(__name__)

EVAL_FOLDER = "evaluation folder"


class TrainingFailed(RuntimeError):
    """A run whose training did not finish well (its metrics.json says ``status: failed``)."""


def _evaluate_model(
    model: LoadedModel,
    source: PredictionSource,
    tuning,
    *,
    split: str,
    data_root: Path,
    batch_size: int,
    tta: bool,
    postprocess,
    n_boot: int,
    out_dir: Path,
    device: str | None,
) -> EvalResult:
    """Predict ``split`` with ``model`` and evaluate it; ``tuning(preds, store)`` gives (val predictions, tuned_on)
    when tuning, predicting into the folder ``store``.

    The per-pixel predictions go to disk batch by batch (helpers.core.stacks), in a scratch folder beside the results:
    the evaluation moves the evaluated split's probs.npy and mmseg_pred.npy out of it, the rest is removed."""
    prepared = check_prepared(data_root, model.size[0], larger_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_dead_scratch(out_dir, run_folders.SCRATCH_PREFIX)  # a killed evaluation's predictions: gigabytes at 1024
    with tempfile.TemporaryDirectory(prefix=scratch_prefix(run_folders.SCRATCH_PREFIX), dir=out_dir) as scratch_name:
        scratch = Path(scratch_name)
        preds = predict_split(model, data_root, split, batch_size, tta, store=scratch / split)
        groups = patients.evaluation_patients(prepared_pairs(data_root), split, preds.names)
        val, tuned_on = (
            tuning(preds, scratch / "tuning")
            if isinstance(postprocess, str) and postprocess == "tune"
            else (None, "given")
        )
        return evaluate_predictions(
            preds,
            split,
            out_dir,
            source=source,
            data_root=data_root,
            split_mode=prepared.split_mode,
            groups=groups,
            val=val,
            tuned_on=tuned_on,
            postprocess=postprocess,
            n_boot=n_boot,
            settings={"batch_size": batch_size, "tta": bool(tta), "device": device or default_device()},
        )


def evaluate_run(
    run: str | Path,
    *,
    split: str = "test",
    prepared_root: str | Path | None = None,
    batch_size: int = 8,
    tta: bool = False,
    postprocess: str | dict | PostProcess = "tune",
    out_dir: str | Path | None = None,
    n_boot: int = 1000,
    device: str | None = None,
) -> EvalResult:
    """Predict ``split`` with a run (folder or ``.pth``), score it (mmseg decision and post-processed) and write
    its evaluation folder (default: helpers.core.run_folders.eval_dir).

    ``postprocess``: 'tune' tunes every scheme on the val split only (predicted here; never the evaluated one
    unless ``split='val'``), 'none' is ``PostProcess(0.5, 0, 0)``, a dict or :class:`PostProcess` is used as
    given. ``prepared_root``: the prepared folder (default: the run's config's); its size must be the model's,
    or larger to score against finer masks (as the seed scored 512 models on the 1024 masks; ``resolution`` in
    metrics.json says which). Relative paths are from the repository root.
    """
    model = load_model(run, device)
    run_dir, checkpoint = model.run_dir.resolve(), model.checkpoint.resolve()
    data_root = paths.resolve(
        prepared_root if prepared_root is not None else model.cfg.test_dataloader.dataset.data_root
    )
    width, height = model.size
    if width != height:
        raise ValueError(f"{model.checkpoint}: a {width}x{height} model; 02_prepare writes square images only")
    source = PredictionSource(
        run_dir=run_dir,
        checkpoint=checkpoint,
        members=[checkpoint],
        decision=model.decision,
        model_input=(height, width),
        library_warnings=model.library_warnings,
    )

    def tuning(preds, store):
        return (
            preds if split == "val" else predict_split(model, data_root, "val", batch_size, tta, store=store)
        ), "val"

    out_dir = paths.resolve(out_dir) if out_dir is not None else run_folders.eval_dir(run_dir, split)
    return _evaluate_model(
        model,
        source,
        tuning,
        split=split,
        data_root=data_root,
        batch_size=batch_size,
        tta=tta,
        postprocess=postprocess,
        n_boot=n_boot,
        out_dir=out_dir,
        device=device,
    )


def evaluate_ensemble(
    member_runs: Sequence[str | Path],
    name: str,
    *,
    split: str = "test",
    prepared_root: str | Path | None = None,
    batch_size: int = 8,
    tta: bool = False,
    top_k: int = 0,
    n_boot: int = 1000,
    device: str | None = None,
    outputs: str | Path = paths.OUTPUTS_DIR,
) -> EvalResult:
    """Evaluate the mean-probability ensemble of ``member_runs`` (helpers.modeling.ensemble.build_ensemble) on
    ``split`` into ``outputs/eval/ensembles_<name>/<split>/``, like :func:`evaluate_run`; post-processing is
    tuned on out-of-fold predictions for the folds of one sweep, else on val. ``prepared_root``: as for
    :func:`evaluate_run` (default: the first member's config's)."""
    ensemble, members, run_dirs = build_ensemble(
        member_runs, name, top_k=top_k, tta=tta, device=device, outputs=outputs
    )
    data_root = paths.resolve(
        prepared_root if prepared_root is not None else ensemble.cfg.test_dataloader.dataset.data_root
    )
    width, height = ensemble.size
    source = PredictionSource(
        run_dir=ensemble.run_dir,
        checkpoint=ensemble.checkpoint,
        members=[m.checkpoint.resolve() for m in members],
        decision={"type": ENSEMBLE_DECISION, "members": len(members)},
        model_input=(height, width),
        library_warnings=ensemble.library_warnings,
    )

    def tuning(preds, store):  # the members' probabilities are averaged per batch: memory is one batch's
        return tuning_predictions(ensemble, members, run_dirs, data_root, batch_size, tta, store=store)

    return _evaluate_model(
        ensemble,
        source,
        tuning,
        split=split,
        data_root=data_root,
        batch_size=batch_size,
        tta=tta,
        postprocess="tune",
        n_boot=n_boot,
        out_dir=run_folders.eval_dir(ensemble.run_dir, split, outputs),
        device=device,
    )


def training_failure(run: Path | str) -> str | None:
    """The error a run folder's metrics.json records when its training failed (diverged), else None."""
    run = paths.resolve(run)
    if not (run.is_dir() and (run / run_folders.METRICS_FILE).is_file()):
        return None
    metrics = run_folders.read_metrics(run)
    return metrics.get("error", "failed") if metrics.get("status") == "failed" else None


def _attempt(
    run_dir: Path,
    split: str,
    out_dir: Path,
    evaluate_one: Callable[[], EvalResult],
    results: list[EvalResult],
    failures: list[FailedEvaluation],
) -> None:
    try:
        with folder_lock(out_dir, EVAL_FOLDER):
            results.append(evaluate_one())
    except FolderLocked:
        raise
    except Exception as err:  # noqa: BLE001 - reported as this run's failure, the others go on
        log.error("%s: not evaluated: %s: %s", run_dir, type(err).__name__, err, exc_info=True)
        failures.append(FailedEvaluation(run_dir=run_dir, split=split, error=f"{type(err).__name__}: {err}"))


def evaluate_run_folders(
    run_dirs: Sequence[str | Path], *, split: str = "test", outputs: str | Path = paths.OUTPUTS_DIR, **evaluate_kwargs
) -> tuple[list[EvalResult], list[FailedEvaluation]]:
    """:func:`evaluate_run` for each run into ``runs.eval_dir(run, split, outputs)``: the results, and the
    runs that failed (a run whose training failed is not evaluated)."""
    results: list[EvalResult] = []
    failures: list[FailedEvaluation] = []
    for run in run_dirs:
        run_dir = paths.resolve(run)
        out_dir = run_folders.eval_dir(run, split, outputs)

        def evaluate_one(run=run, run_dir=run_dir, out_dir=out_dir) -> EvalResult:
            failure = training_failure(run_dir)
            if failure:
                raise TrainingFailed(f"{run_dir}: its training failed: {failure}")
            return evaluate_run(run, split=split, out_dir=out_dir, **evaluate_kwargs)

        _attempt(run_dir, split, out_dir, evaluate_one, results, failures)
    return results, failures


def evaluate_fold_ensembles(
    run_dirs: Sequence[str | Path],
    *,
    split: str = "test",
    tta: bool = False,
    top_k: int = 0,
    outputs: str | Path = paths.OUTPUTS_DIR,
    skip: Sequence[FailedEvaluation] = (),
    **evaluate_kwargs,
) -> tuple[list[EvalResult], list[FailedEvaluation]]:
    """Each k-fold sweep among ``run_dirs`` (less the failed runs in ``skip``) evaluated as one ensemble
    (:func:`evaluate_ensemble`), named as 04 names it; failures as for :func:`evaluate_run_folders`."""
    skipped = {failure.run_dir for failure in skip}
    healthy = [run for run in run_dirs if paths.resolve(run) not in skipped]
    results: list[EvalResult] = []
    failures: list[FailedEvaluation] = []
    for name, members in fold_groups(healthy).items():
        name = f"{name}{'_tta' if tta else ''}{f'_top{top_k}' if top_k else ''}"
        folder = run_folders.ensemble_dir(name, outputs)
        _attempt(
            folder,
            split,
            run_folders.eval_dir(folder, split, outputs),
            lambda members=members, name=name: evaluate_ensemble(
                members, name, split=split, tta=tta, top_k=top_k, outputs=outputs, **evaluate_kwargs
            ),
            results,
            failures,
        )
    return results, failures


def describe_failures(failures: Sequence[FailedEvaluation]) -> str:
    """One line per failed run, for 04's output."""
    return "\n".join(f"FAILED {f.run_dir} ({f.split}): {f.error}" for f in failures)


@dataclass
class Evaluation:
    """04's results: where they were written, every evaluated run and ensemble, and the ones that failed."""

    outputs: Path
    results: list[EvalResult]
    failed: list[FailedEvaluation]


def evaluate_runs(params: EvaluateParams) -> Evaluation:
    """04's step: every run of ``params.runs`` (all trained runs of the outputs folder when empty) evaluated on
    ``params.split``, each on its own (a failed one is reported and the others go on), then each k-fold sweep
    as one ensemble when ``params.ensemble``. Raises when there is no run, or none could be evaluated."""
    outputs, _ = run_folders.choose_outputs(params.outputs_dir)  # says so when it falls back on the demo's outputs
    run_dirs = list(params.runs) or run_folders.trained_runs(outputs)
    if not run_dirs:
        raise FileNotFoundError(f"no trained runs under {outputs / 'runs'} (run 03_train first)")
    settings = {"prepared_root": params.prepared_root, "batch_size": params.batch_size, "n_boot": params.n_boot}
    results, failed = evaluate_run_folders(
        run_dirs, split=params.split, outputs=outputs, tta=params.tta, postprocess=params.postprocess, **settings
    )
    if params.ensemble:
        more, more_failed = evaluate_fold_ensembles(
            run_dirs,
            split=params.split,
            tta=params.tta,
            top_k=params.ensemble_top_k,
            outputs=outputs,
            skip=failed,
            **settings,
        )
        results, failed = results + more, failed + more_failed
    if not results:
        raise RuntimeError(f"no run could be evaluated:\n{describe_failures(failed)}")
    return Evaluation(outputs=outputs, results=results, failed=failed)
