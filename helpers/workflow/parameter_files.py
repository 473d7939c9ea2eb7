"""The pipeline's YAML parameter files: ``pipeline/NN_stage.yaml`` for the full data on a GPU node,
``pipeline/demo/NN_stage.yaml`` for the demo, and ``shared.yaml`` beside them naming the profile's data folders
once (``raw_root``, ``prepared_root``) for every stage whose parameters cell declares them."""

from __future__ import annotations

import logging
from pathlib import Path

from helpers.core import paths
from helpers.core.parameters import NOTEBOOK_PARAMETERS, ParameterError, check_names, declared_names, parse_yaml

log = logging.getLogger(__name__)


SHARED_FILE = "shared"  # shared.yaml: the data folders of a profile, named once, given to each stage that takes them


SWEEP_KEY = "lrs"  # in 03_train.yaml: the learning rates of the sweep; everything else goes to each run


def load_stage_parameters(stage: str, params_dir: Path | str = paths.PIPELINE_PARAMS_DIR) -> dict:
    """The YAML parameter file of one stage (empty when the file does not exist); a key its notebook does not
    declare (``lrs`` besides, for 03_train) raises ParameterError naming the file, the key and the known ones,
    and so does a syntax error (with its line and column). Numbers like ``2e4`` are numbers
    (:func:`helpers.core.parameters.parse_yaml`).
    ``shared.yaml`` may hold any key that some notebook declares."""
    path = Path(params_dir) / f"{stage}.yaml"
    if not path.exists():
        return {}
    loaded = parse_yaml(path.read_text(), str(path)) or {}
    if not isinstance(loaded, dict):
        raise ParameterError(f"{path}: expected a mapping of parameter names to values")
    if stage == SHARED_FILE:
        known = {name for notebook in NOTEBOOK_PARAMETERS for name in declared_names(notebook)}
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise ParameterError(
                f"{path}: {', '.join(map(repr, unknown))} is no notebook's parameter; known: {', '.join(sorted(known))}"
            )
    else:
        check_names(stage, [k for k in loaded if not (stage == "03_train" and k == SWEEP_KEY)], str(path))
    return loaded


def stage_parameters(stage: str, params_dir: Path | str = paths.PIPELINE_PARAMS_DIR) -> dict:
    """A stage's parameters: the profile's shared ones that its notebook declares, then its own YAML's."""
    shared = load_stage_parameters(SHARED_FILE, params_dir)
    declared = declared_names(stage)
    return {**{k: v for k, v in shared.items() if k in declared}, **load_stage_parameters(stage, params_dir)}
