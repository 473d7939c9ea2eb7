"""Pneumothorax segmentation on chest X-rays with MMSegmentation: the project's package.

One module per concern: ``paths`` (every default path and config name), ``rawdata`` (the Kaggle layout),
``demo_data`` (the generated dataset), ``images`` (image I/O) and ``dicom`` (DICOM radiographs), ``rle``
(run-length masks), ``siim`` and ``siim_release`` (the original SIIM-ACR release, ``convert-siim``), ``explore``,
``prepare`` and ``prepared`` (writing and reading a prepared folder), ``dataset`` (the mmseg dataset class)
and ``samplers``, ``runs`` (a run's and an evaluation's folder), ``modeling`` (training, checkpoints,
``modeling.inference``, ``modeling.ensemble``, ``modeling.export`` to ONNX), ``metrics``, ``postprocessing``
(the schemes: triplet, dual threshold), ``evaluation`` (scores predictions, never loads a model; its ``paired``
compares runs with the best one), ``evaluate_models`` (a model's predictions, then their evaluation), ``plots``,
``pipeline`` (papermill and HTML) and ``records`` (what each step was made from, so re-runs skip it),
``parameters``, ``progress``, ``predict``.
``python -m helpers --help`` lists the commands.
"""

__version__ = "0.1.0"

from helpers.progress import quiet_reports as _quiet_reports  # noqa: E402

_quiet_reports()  # in a headless kernel (papermill): chatter to the terminal, never into the report
