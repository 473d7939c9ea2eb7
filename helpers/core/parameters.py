"""Every notebook's parameters, declared once: name, default, and the rule its value must follow.

Each notebook has one dataclass here (:data:`NOTEBOOK_PARAMETERS`); its fields are the notebook's
``parameters`` cell (a test compares them name for name and default for default), the keys its YAML file
may hold, and the ``-p`` flags the CLI and ``write_sbatch`` pass. :func:`check_parameters` checks names and
values before any work (the pipeline before a notebook starts, each notebook in its first cell), and an error
names the stage, the parameter, its value and what is allowed. Adding a parameter is one field here and
one line in the notebook's parameters cell.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import yaml

from helpers.core import paths


class ParameterError(ValueError):
    """A parameter that no notebook declares, or a value its rule does not allow."""


@dataclass(frozen=True)
class Rule:
    """What a value may be: a test on it and the same in words (``allowed``); None passes when ``optional``.
    ``path`` names a path that must exist (checked only when ``paths_exist``: a later stage's input may be
    written by an earlier one)."""

    allowed: str
    test: Callable[[Any], bool]
    optional: bool = False
    path: str | None = None  # "file" or "dir": the value must name an existing one


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_number(what: str = "a number") -> Rule:
    return Rule(f"{what} > 0", lambda v: _number(v) and v > 0)


def integer_at_least(low: int, what: str = "an integer") -> Rule:
    return Rule(f"{what} >= {low}", lambda v: _integer(v) and v >= low)


def fraction() -> Rule:
    return Rule("a fraction in (0, 1)", lambda v: _number(v) and 0 < v < 1)


def one_of(*choices: Any) -> Rule:
    return Rule(f"one of {', '.join(map(repr, choices))}", lambda v: isinstance(v, str) and v in choices)


def optional(rule: Rule, meaning: str) -> Rule:
    return Rule(f"{rule.allowed}, or null ({meaning})", rule.test, optional=True, path=rule.path)


def existing(kind: str, what: str) -> Rule:
    return Rule(
        f"{what} (an existing {'folder' if kind == 'dir' else 'file'}; relative paths are from the repository root)",
        lambda v: isinstance(v, str) and v != "",
        path=kind,
    )


def text(what: str = "a string") -> Rule:
    return Rule(what, lambda v: isinstance(v, str) and v != "")


def flag() -> Rule:
    return Rule("true or false", lambda v: isinstance(v, bool))


def auto_or_flag() -> Rule:
    return Rule('"auto", true or false', lambda v: isinstance(v, bool) or v == "auto")


def _config_exists(value: Any) -> bool:
    try:
        paths.config_path(value)
    except (FileNotFoundError, TypeError, ValueError):
        return False
    return True


IMG_MULTIPLE = 16  # the UNet s5-d16 halves the image four times; every config here takes multiples of 16
LR = positive_number("a learning rate: a finite number")
IMG_SIZE = Rule(
    f"a positive multiple of {IMG_MULTIPLE} (pixels)", lambda v: _integer(v) and v > 0 and v % IMG_MULTIPLE == 0
)
CONFIG = Rule("a config name in configs/ or a path to one", _config_exists)
POSITIVE_RATE = Rule(
    "[start, end] or [start, end, iters]: shares in [0, 1] and a positive iteration count",
    lambda v: isinstance(v, (list, tuple))
    and len(v) in (2, 3)
    and all(_number(x) and 0 <= x <= 1 for x in v[:2])
    and (len(v) == 2 or (_integer(v[2]) and v[2] > 0)),
)
TRIPLET_KEYS = ("threshold", "min_component_area", "min_total_area")
POSTPROCESS = Rule(
    f'"tune", "none", or a mapping of {", ".join(TRIPLET_KEYS)}',
    lambda v: v in ("tune", "none") or (isinstance(v, Mapping) and set(v) <= set(TRIPLET_KEYS)),
)
STRINGS = Rule("a list of strings", lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v))
RAW_SPLITS = Rule(
    'a non-empty list of "train" and "test"',
    lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and set(v) <= {"train", "test"},
)


def declared(default: Any, rule: Rule) -> Any:
    """A dataclass field with its default and its rule."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"rule": rule})
    return field(default=default, metadata={"rule": rule})


@dataclass
class ExploreParams:
    """01_explore."""

    raw_root: str | None = declared(
        None, optional(existing("dir", "the raw data folder"), "data/raw, or the demo data")
    )
    stages: list[str] = declared(["train", "test"], RAW_SPLITS)
    max_images: int = declared(0, integer_at_least(0, "an image count (0: all)"))
    seed: int = declared(0, integer_at_least(0))
    workers: int = declared(0, integer_at_least(0, "a worker count (0: all cores)"))
    outputs_dir: str = declared("outputs", text("a folder"))
    patient_table: str | None = declared(None, optional(existing("file", "a patient table"), "the default table"))


@dataclass
class PrepareParams:
    """02_prepare."""

    raw_root: str | None = declared(
        None, optional(existing("dir", "the raw data folder"), "data/raw, or the demo data")
    )
    prepared_root: str | None = declared(
        None, optional(text("the folder to write"), "data/prepared/<split_mode>-<img_size>")
    )
    img_size: int = declared(512, IMG_SIZE)
    val_fraction: float = declared(0.2, fraction())
    seed: int = declared(0, integer_at_least(0))
    split_mode: str = declared("patient", one_of("patient", "official", "seed"))
    folds: int = declared(0, Rule("0, or a fold count >= 2", lambda v: _integer(v) and (v == 0 or v >= 2)))
    test_fraction: float = declared(0.11, fraction())
    patient_table: str | None = declared(None, optional(existing("file", "a patient table"), "the default table"))
    workers: int = declared(0, integer_at_least(0, "a worker count (0: all cores)"))


@dataclass
class TrainParams:
    """03_train: the parameters of one training run."""

    config: str | None = declared(None, optional(CONFIG, "the seed's config, or the demo's without real data"))
    lr: float | None = declared(None, optional(LR, "the config's"))
    max_iters: int | None = declared(None, optional(integer_at_least(1), "the config's"))
    batch_size: int | None = declared(None, optional(integer_at_least(1), "the config's"))
    img_size: int | None = declared(None, optional(IMG_SIZE, "the config's"))
    seed: int = declared(0, integer_at_least(0))
    work_dir: str | None = declared(None, optional(text("a folder"), "outputs/runs/<config>/lr<lr>"))
    prepared_root: str | None = declared(
        None, optional(existing("dir", "the prepared folder"), "the config's data_root")
    )
    resume: bool = declared(False, flag())
    amp: bool | str = declared("auto", auto_or_flag())
    channels_last: bool | str = declared("auto", auto_or_flag())
    gpus: int = declared(1, integer_at_least(0, "a GPU count"))
    nproc: int = declared(1, integer_at_least(1, "a process count"))
    val_interval: int | None = declared(None, optional(integer_at_least(1), "the config's, scaled with max_iters"))
    workers: int | None = declared(
        None, optional(integer_at_least(0, "a worker count"), "the config's or the CPU count's")
    )
    deterministic: bool = declared(False, flag())
    # the SIIM-ACR winners' options (helpers.modeling.winners); None leaves the config as it is
    fold: int | None = declared(None, optional(integer_at_least(0, "a fold index"), "no fold"))
    positive_rate: list[float] | None = declared(None, optional(POSITIVE_RATE, "the config's sampling"))
    load_from: str | None = declared(None, optional(existing("any", "a run folder or a .pth checkpoint"), "none"))
    pretrained: str | None = declared(None, optional(existing("file", "a backbone checkpoint"), "the config's weights"))
    keep_checkpoints: int | None = declared(
        None, optional(integer_at_least(-1, "a checkpoint count (-1: all)"), "the config's")
    )
    mlflow: bool = declared(False, flag())

    def __post_init__(self) -> None:
        if self.config is None:
            self.config = paths.SEED_CONFIG


@dataclass
class EvaluateParams:
    """04_evaluate."""

    runs: list[str] = declared([], STRINGS)
    split: str = declared("test", text("a split of the prepared folder (train, val, test)"))
    batch_size: int = declared(8, integer_at_least(1))
    tta: bool = declared(False, flag())
    postprocess: Any = declared("tune", POSTPROCESS)
    n_boot: int = declared(1000, integer_at_least(0, "a resample count"))
    prepared_root: str | None = declared(None, optional(existing("dir", "a prepared folder"), "each run's own"))
    outputs_dir: str | None = declared(None, optional(text("a folder"), "outputs/, or the demo's"))
    ensemble: bool = declared(False, flag())
    ensemble_top_k: int = declared(0, integer_at_least(0, "a checkpoint count (0: the best)"))


@dataclass
class VisualizeParams:
    """05_visualize."""

    outputs_dir: str | None = declared(None, optional(text("a folder"), "outputs/, or the demo's"))
    split: str = declared("test", text("a split of the prepared folder (train, val, test)"))
    n_examples: int = declared(4, integer_at_least(1, "an image count"))


NOTEBOOK_PARAMETERS: dict[str, type] = {
    "01_explore": ExploreParams,
    "02_prepare": PrepareParams,
    "03_train": TrainParams,
    "04_evaluate": EvaluateParams,
    "05_visualize": VisualizeParams,
}
STAGES = tuple(NOTEBOOK_PARAMETERS)  # the pipeline's stages, in order: one notebook each


def declared_names(stage: str) -> list[str]:
    """The parameter names of a notebook, in its declaration's order."""
    if stage not in NOTEBOOK_PARAMETERS:
        raise ParameterError(f"{stage}: no such notebook (known: {', '.join(NOTEBOOK_PARAMETERS)})")
    return [f.name for f in fields(NOTEBOOK_PARAMETERS[stage])]


def defaults(stage: str) -> dict[str, Any]:
    """A notebook's parameters with their declared defaults."""
    result = {}
    for f in fields(NOTEBOOK_PARAMETERS[stage]):
        result[f.name] = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
    return result


def check_names(stage: str, names, source: str) -> None:
    """Refuse a name the notebook does not declare, naming it and the known ones (``source``: where it came from)."""
    known = declared_names(stage)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ParameterError(
            f"{source}: unknown {stage} parameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; known: {', '.join(known)}"
        )


def check_value(stage: str, name: str, value: Any, rule: Rule, paths_exist: bool = True) -> None:
    """Refuse a value that ``rule`` does not allow, naming the stage, the parameter, the value and the rule."""
    if value is None and rule.optional:
        return
    if not rule.test(value):
        raise ParameterError(f"{stage} parameter {name} = {value!r}: allowed: {rule.allowed}")
    if paths_exist and rule.path is not None:
        path = paths.resolve(value)
        found = path.exists() if rule.path == "any" else path.is_dir() if rule.path == "dir" else path.is_file()
        if not found:
            raise ParameterError(
                f"{stage} parameter {name} = {value!r}: {path} does not exist; allowed: {rule.allowed}"
            )


def check_parameters(
    stage: str, values: Mapping[str, Any], *, source: str = "parameters", paths_exist: bool = True
) -> dict[str, Any]:
    """``values`` checked against the notebook's declaration (names, then each value's rule) and returned as a
    dict; the first problem raises :class:`ParameterError`. ``paths_exist``: also check that input paths exist."""
    check_names(stage, values, source)
    rules = {f.name: f.metadata["rule"] for f in fields(NOTEBOOK_PARAMETERS[stage])}
    for name, value in values.items():
        check_value(stage, name, value, rules[name], paths_exist)
    return dict(values)


PAPERMILL_CELL = "# Parameters"  # the first line of the cell papermill injects (tag injected-parameters)


def injected_names(namespace: Mapping[str, Any]) -> list[str]:
    """The names papermill injected into a kernel: the assignments of every cell in the kernel's input history
    (IPython's ``In``, part of the globals) that begins as papermill's injected-parameters cell does; [] when
    the namespace holds no history (plain Python) or papermill passed nothing."""
    import ast

    history = namespace.get("In")
    names: list[str] = []
    for source in history if isinstance(history, list) else []:
        if not isinstance(source, str) or not source.startswith(PAPERMILL_CELL + "\n"):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
    return names


def check_notebook(stage: str, namespace: Mapping[str, Any]):
    """The notebook's first step: the names papermill injected must be declared (papermill itself only warns
    of an unknown ``-p``, and a typo would run with the default), then its parameters (read from
    ``namespace``, the kernel's globals) checked, as the notebook's dataclass."""
    check_names(stage, injected_names(namespace), f"notebooks/{stage}.ipynb run with papermill -p")
    values = {name: namespace[name] for name in declared_names(stage)}
    return NOTEBOOK_PARAMETERS[stage](**check_parameters(stage, values, source=f"notebooks/{stage}"))


class _NumberLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``2e4`` and ``3e-3`` as numbers (YAML 1.1, PyYAML's, wants a dot in a
    float and takes them for strings; YAML 1.2 and Python do not): an exponent number written without a dot
    whose value is whole (``2e4``) is an int, so that it passes an integer parameter's rule."""


_EXPONENT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")


def _exponent_number(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int | float:
    text = loader.construct_scalar(node)
    value = float(text)
    return int(value) if "." not in text and value.is_integer() and abs(value) < 2**63 else value


_NumberLoader.add_implicit_resolver("!exponent-number", _EXPONENT, list("-+0123456789."))
_NumberLoader.add_constructor("!exponent-number", _exponent_number)


def parse_yaml(text: str, source: str) -> Any:
    """YAML as every parameter is read (the stage files, ``-p key=value``): numbers like ``2e4`` are numbers;
    a syntax error raises :class:`ParameterError` naming ``source`` (a file, or the flag), the line and the
    column, in one line."""
    try:
        return yaml.load(text, Loader=_NumberLoader)  # a SafeLoader: plain data only
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = "; ".join(str(part) for part in (err.context, err.problem) if part)
        raise ParameterError(f"{source}{where}: not valid YAML ({what})") from None
    except yaml.YAMLError as err:
        raise ParameterError(f"{source}: not valid YAML ({err})") from None
