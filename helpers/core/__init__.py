"""The bottom layer, imported by every other: where files go (``paths``, ``run_folders``, ``data_profile``), how they
are written (``fileio``: atomic writes; ``locks``: one writer per folder; ``stacks``: arrays on disk), each stage's
declared parameters (``parameters``), the metric formulas (``metrics``), progress and quiet reports
(``progress``), the process pool (``parallel``) and what a result was made with (``provenance``). Nothing here
imports another layer."""
