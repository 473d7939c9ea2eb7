"""A notebook as JupyterLab leaves it once run and saved."""

from __future__ import annotations

from pathlib import Path

import nbformat


def save_as_lab_does(notebook: Path) -> None:
    """What Run All and save in JupyterLab leave in a notebook: outputs, execution counts, cell and notebook
    metadata (nbformat writes it as Lab does)."""
    nb = nbformat.read(notebook, as_version=4)
    for count, cell in enumerate((c for c in nb.cells if c.cell_type == "code"), start=1):
        cell.execution_count = count
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"cell {count} ran\n")]
        cell.metadata["execution"] = {"iopub.status.idle": "2026-12-01T10:00:00Z"}
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7"}
    nb.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2, "version_minor": 0}
    }
    nbformat.write(nb, notebook)
