"""Pneumothorax segmentation on chest X-rays with MMSegmentation: the project's package.

Its folders are its layers; a module imports only from its own layer or the ones below it:

- ``core``: paths, run folders, atomic writes, locks, on-disk stacks, each stage's parameters, metric formulas,
  progress, the process pool, provenance;
- ``data``: the Kaggle layout, patients, the demo dataset, image / DICOM / RLE I/O, the SIIM release, 01's
  statistics, 02's split and the prepared folder, the mmseg dataset, sampler and transforms;
- ``postprocessing``: the schemes (triplet, dual threshold), arrays in and arrays out;
- ``modeling`` and ``evaluation`` (siblings, neither imports the other): training, inference, ensembles and
  export; predictions and labels in, metrics, intervals and comparisons out (never loads a model);
- ``workflow``, ``plots``, ``predict``: the notebooks run by papermill, the pipeline, sweeps and SLURM, 04's
  model-then-evaluation step, the index; figures; prediction on new radiographs;
- ``__main__``: the command line (``python -m helpers --help``).
"""

__version__ = "0.1.0"

from helpers.core.progress import quiet_reports as _quiet_reports  # noqa: E402

_quiet_reports()  # in a headless kernel (papermill): chatter to the terminal, never into the report
