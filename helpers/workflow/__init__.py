"""The orchestration layer: notebooks run by papermill (``notebook_runner``), the stage pipeline that skips what is
done (``pipeline``, ``stage_records``), the learning-rate sweep and its SLURM script (``sweep``, ``slurm``), 04's
model-then-evaluation step (``evaluate_runs``) and the reports' index (``index``)."""
