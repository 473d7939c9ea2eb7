"""Pneumothorax segmentation on chest X-rays with MMSegmentation: the project's package.

One module per concern: ``paths`` (every default path), ``rawdata`` (the Kaggle layout), ``demo_data``
(the generated dataset), ``explore``, ``prepare``, ``dataset`` (the mmseg dataset class),
``modeling`` (training, checkpoints, inference), ``metrics``, ``evaluate``, ``plots``, ``reports`` and
``pipeline`` (papermill and HTML), ``predict``. ``python -m helpers --help`` lists the commands.
"""

__version__ = "0.1.0"
