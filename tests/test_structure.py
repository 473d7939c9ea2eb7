"""The package's shape: imports only go downward (no cycles), and predict loads no evaluation or plotting."""

from __future__ import annotations

import ast
import subprocess
import sys

from helpers import paths

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
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("helpers")}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


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
    assert "helpers.evaluate" not in loaded and "helpers.plots" not in loaded
