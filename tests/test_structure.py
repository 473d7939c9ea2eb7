"""The package's shape: layers that are folders, imports that only go down, evaluation and modeling as siblings that do
not import each other, post-processing without model code, no cycles, and predict loads no evaluation or
plotting."""

from __future__ import annotations

import ast
import subprocess
import sys

from helpers.core import paths

PACKAGE = paths.REPO_ROOT / "helpers"


def _module(path) -> str:
    parts = path.relative_to(paths.REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each helpers module -> the helpers modules it imports (at the top or inside functions)."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("helpers"):
                targets |= {
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                }
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("helpers")}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


# The layers, top to bottom, as folders of helpers/ (and the three modules at its top): a module's layer is the folder
# it is saved in, so a new module is placed by where it is saved. A module imports its own layer or the ones below.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("command line", ("helpers.__main__",)),
    ("orchestration", ("helpers.workflow", "helpers.plots", "helpers.predict")),
    ("evaluation | modeling", ("helpers.evaluation", "helpers.modeling")),
    ("post-processing", ("helpers.postprocessing",)),
    ("data", ("helpers.data",)),
    ("core", ("helpers.core", "helpers")),
]
SIBLINGS = ("helpers.evaluation", "helpers.modeling")  # the same layer, and neither imports the other


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_of(module: str) -> int:
    """The index in LAYERS of a module's folder (or, at the top of helpers/, of the module itself)."""
    for index, (_, members) in enumerate(LAYERS):
        if any(module == m if m == "helpers" else _in(module, m) for m in members):
            return index
    raise AssertionError(f"{module}: not in a layer's folder; save it in one of {[m for _, ms in LAYERS for m in ms]}")


def test_every_module_is_in_a_layer_and_the_top_stays_small():
    for module in import_graph():
        layer_of(module)
    top = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__" and not p.name.startswith("."))
    assert [n for n in top if not n.startswith("__")] == [
        "core",
        "data",
        "evaluation",
        "modeling",
        "plots.py",
        "postprocessing",
        "predict.py",
        "workflow",
    ], top


def test_every_import_points_to_the_same_layer_or_below():
    wrong = [
        f"{module} ({LAYERS[layer_of(module)][0]}) -> {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in import_graph().items()
        for target in targets
        if layer_of(target) < layer_of(module)
    ]
    assert not wrong, "imports that run up the layers:\n" + "\n".join(wrong)


def test_evaluation_and_modeling_do_not_import_each_other():
    graph = import_graph()
    for package, other in (SIBLINGS, SIBLINGS[::-1]):
        crossing = [f"{m} -> {t}" for m, targets in graph.items() if _in(m, package) for t in targets if _in(t, other)]
        assert not crossing, crossing


def test_postprocessing_imports_no_model_code():
    """Nothing under helpers.postprocessing imports helpers.modeling, torch, mmengine or mmseg (at any depth:
    importing it in a fresh process loads none of them)."""
    code = (
        "import sys, helpers.postprocessing; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'mmengine', 'mmseg', 'mmcv') or m.startswith('helpers.modeling'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


def test_helpers_imports_have_no_cycle():
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in graph[module]:
            if target.startswith(module + "."):  # a package importing its own submodules (registration)
                continue
            assert state.get(target) != 1, " -> ".join(trail + [module, target])
            if target not in state:
                visit(target, trail + [module])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


def test_predict_loads_neither_the_evaluation_nor_the_plots():
    code = "import sys, helpers.predict; print(' '.join(sorted(m for m in sys.modules if m.startswith('helpers'))))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "helpers.predict" in loaded and "helpers.modeling.inference" in loaded
    assert not [m for m in loaded if _in(m, "helpers.evaluation") or m == "helpers.workflow.evaluate_runs"]
    assert "helpers.plots" not in loaded
