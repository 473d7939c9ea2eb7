"""04's loop over runs (and fold ensembles): each evaluated on its own in its locked evaluation folder; one
that cannot be evaluated (its training failed, its checkpoint is unreadable or non-finite, anything else it
raises) is reported as a failed row of the comparison, and the others are still evaluated.

Only another writer of the same evaluation folder (helpers.locks.FolderLocked) stops the whole call: two
04s would otherwise race on every folder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from helpers import evaluate, paths, runs
from helpers.locks import FolderLocked, folder_lock

log = logging.getLogger(__name__)

EVAL_FOLDER = "evaluation folder"
STATUS_OK, STATUS_FAILED, STATUS_REFERENCE = "ok", "failed", "reference"


class TrainingFailed(RuntimeError):
    """A run whose training did not finish well (its metrics.json says ``status: failed``)."""


@dataclass
class FailedEvaluation:
    """A run (or ensemble) that could not be evaluated, and why."""

    run_dir: Path
    split: str
    error: str


def training_failure(run: Path | str) -> str | None:
    """The error a run folder's metrics.json records when its training failed (diverged), else None."""
    run = paths.resolve(run)
    if not (run.is_dir() and (run / runs.METRICS_FILE).is_file()):
        return None
    metrics = runs.read_metrics(run)
    return metrics.get("error", "failed") if metrics.get("status") == "failed" else None


def _attempt(run_dir: Path, split: str, out_dir: Path, evaluate_one: Callable[[], evaluate.EvalResult],
             results: list, failures: list) -> None:
    try:
        with folder_lock(out_dir, EVAL_FOLDER):
            results.append(evaluate_one())
    except FolderLocked:
        raise
    except Exception as err:  # noqa: BLE001: reported as this run's failure, the others go on
        log.error("%s: not evaluated: %s: %s", run_dir, type(err).__name__, err, exc_info=True)
        failures.append(FailedEvaluation(run_dir=run_dir, split=split, error=f"{type(err).__name__}: {err}"))


def evaluate_runs(run_dirs: Sequence[str | Path], *, split: str = "test", outputs: str | Path = paths.OUTPUTS_DIR,
                  **evaluate_kwargs) -> tuple[list[evaluate.EvalResult], list[FailedEvaluation]]:
    """:func:`helpers.evaluate.evaluate_run` for each run into ``runs.eval_dir(run, split, outputs)``: the
    results, and the runs that failed (a run whose training failed is not evaluated)."""
    results: list[evaluate.EvalResult] = []
    failures: list[FailedEvaluation] = []
    for run in run_dirs:
        run_dir = paths.resolve(run)

        def evaluate_one(run=run, run_dir=run_dir) -> evaluate.EvalResult:
            failure = training_failure(run_dir)
            if failure:
                raise TrainingFailed(f"{run_dir}: its training failed: {failure}")
            return evaluate.evaluate_run(run, split=split, out_dir=runs.eval_dir(run, split, outputs), **evaluate_kwargs)

        _attempt(run_dir, split, runs.eval_dir(run, split, outputs), evaluate_one, results, failures)
    return results, failures


def evaluate_fold_ensembles(run_dirs: Sequence[str | Path], *, split: str = "test", tta: bool = False, top_k: int = 0,
                            outputs: str | Path = paths.OUTPUTS_DIR, skip: Sequence[FailedEvaluation] = (),
                            **evaluate_kwargs) -> tuple[list[evaluate.EvalResult], list[FailedEvaluation]]:
    """Each k-fold sweep among ``run_dirs`` (less the failed runs in ``skip``) evaluated as one ensemble
    (helpers.modeling.ensemble.evaluate_ensemble), named as 04 names it; failures as for :func:`evaluate_runs`."""
    from helpers.modeling import ensemble as ensembles

    skipped = {failure.run_dir for failure in skip}
    healthy = [run for run in run_dirs if paths.resolve(run) not in skipped]
    results: list[evaluate.EvalResult] = []
    failures: list[FailedEvaluation] = []
    for name, members in ensembles.fold_groups(healthy).items():
        name = f"{name}{'_tta' if tta else ''}{f'_top{top_k}' if top_k else ''}"
        folder = runs.ensemble_dir(name, outputs)
        _attempt(folder, split, runs.eval_dir(folder, split, outputs),
                 lambda members=members, name=name: ensembles.evaluate_ensemble(
                     members, name, split=split, tta=tta, top_k=top_k, outputs=outputs, **evaluate_kwargs),
                 results, failures)
    return results, failures


def comparison_with_failures(results: Sequence[evaluate.EvalResult],
                             failures: Sequence[FailedEvaluation]) -> pd.DataFrame:
    """:func:`helpers.evaluate.comparison_table` of ``results`` with a ``status`` column (ok, failed,
    reference) and one row per failed run after the evaluated ones, its ``error`` said."""
    table = evaluate.comparison_table(list(results))
    table.insert(2, "status", [STATUS_OK] * len(results) + [STATUS_REFERENCE] * (len(table) - len(results)))
    table["error"] = ""
    failed_rows = []
    for failure in failures:
        config, lr = runs.run_label(failure.run_dir)
        failed_rows.append({"config": config, "lr": lr, "status": STATUS_FAILED, "split": failure.split,
                            "error": failure.error, "checkpoint": ""})
    if not failed_rows:
        return table
    failed = pd.DataFrame(failed_rows).reindex(columns=table.columns)
    for column in failed.columns:  # keep the numeric columns numeric (NaN), the text ones text
        if table[column].dtype.kind in "fiu":
            failed[column] = failed[column].astype(float)
    parts = [table.iloc[: len(results)], failed, table.iloc[len(results):]]
    return pd.concat([p for p in parts if len(p)], ignore_index=True)


def describe_failures(failures: Sequence[FailedEvaluation]) -> str:
    """One line per failed run, for 04's output."""
    return "\n".join(f"FAILED {f.run_dir} ({f.split}): {f.error}" for f in failures)
