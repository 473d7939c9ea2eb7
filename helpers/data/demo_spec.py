"""What the demo generator makes (helpers.data.demo_dataset): a dataclass with no heavy imports, so that the command
line shows its defaults without loading OpenCV or pandas."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DemoSpec:
    """What to generate: image counts per stage, size, positive rate, seed, largest patient."""

    n_train: int = 240
    n_test: int = 60
    size: int = 256
    positive_rate: float = 0.22
    seed: int = 0
    max_images_per_patient: int = 6  # 1: every image its own patient
