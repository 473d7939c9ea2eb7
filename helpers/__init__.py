"""Pneumothorax segmentation on chest X-rays with MMSegmentation: the project's package.

One module per concern: ``paths`` (every default path and config name), ``rawdata`` (the Kaggle layout),
``demo_data`` (the generated dataset), ``images`` (image I/O) and ``dicom`` (DICOM radiographs), ``explore``,
``prepare`` and ``prepared`` (writing and reading a prepared folder), ``dataset`` (the mmseg dataset class)
and ``samplers``, ``runs`` (a run's and an evaluation's folder), ``modeling`` (training, checkpoints,
``modeling.inference``, ``modeling.ensemble``, ``modeling.export`` to ONNX), ``metrics``, ``postprocessing``
(the schemes: triplet, dual threshold), ``evaluation`` (scores predictions, never loads a model),
``evaluate_models`` (a model's predictions, then their evaluation), ``plots``, ``pipeline`` (papermill and
HTML), ``predict``.
``python -m helpers --help`` lists the commands.
"""

__version__ = "0.1.0"
