"""Run one notebook headless: papermill into a folder, its HTML beside it (figures embedded with alt text, code
hidden), Ctrl-C passed on to the kernel."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from helpers.core import paths
from helpers.core.fileio import atomic_write_text, remove_dead_scratch, scratch_prefix
from helpers.core.parameters import check_parameters
from helpers.core.progress import KERNEL_ARGUMENTS

log = logging.getLogger(__name__)


@dataclass
class Report:
    """One executed notebook and its HTML rendering."""

    notebook: Path
    html: Path
    ok: bool
    error: str | None = None
    seconds: float = 0.0
    skipped: bool = False  # up to date: its record matched, nothing ran


PIPELINE_RUN_ENV = "PNEUMO_PIPELINE_RUN"  # set while the pipeline or the sweep runs a notebook: they keep its record


def figure_descriptions(nb) -> list[str]:
    """One alt text per image output of an executed notebook, in order: the section it is drawn in (the
    nearest markdown heading above it), numbered within the section."""
    descriptions, heading, count = [], "", 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines = [line.lstrip("#").strip() for line in cell.source.splitlines() if line.startswith("#")]
            if lines:
                heading, count = lines[0], 0
            continue
        for output in cell.get("outputs", []):
            if "image/png" in output.get("data", {}):
                count += 1
                descriptions.append(f"Figure {count} of the section '{heading}'" if heading else f"Figure {count}")
    return descriptions


# JupyterLab's template without what it loads from a CDN (require.js, MathJax, mermaid, the widget manager): a report
# opened offline, or on a network that forbids those hosts, is the same report, and nothing leaves the machine.
SELF_CONTAINED_TEMPLATE = "self_contained.html.j2"
_SELF_CONTAINED = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{% block data_png scoped %}
<div class="jp-RenderedImage jp-OutputArea-output {{ extra_class }}">
<img src="data:image/png;base64,{{ output.data['image/png'] | escape_html }}"
alt="{{ output | get_metadata('alt', 'image/png') | escape_html }}">
</div>
{%- endblock data_png %}
"""


def report_title(nb, run: str) -> str:
    """A report's title: the notebook's first heading (``04 · Evaluate``) and the run it reports on."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            heading = next((line.lstrip("#").strip() for line in cell.source.splitlines() if line.startswith("#")), "")
            if heading:
                return f"{heading} · {run}"
    return run


def render_html(notebook: Path, html_path: Path, run: str | None = None) -> Path:
    """Render an executed notebook to self-contained HTML without code cells (figures embedded as base64, each
    with alt text naming the section it belongs to; no script from another host), titled with its stage and
    ``run`` (default: the folder it is written to)."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        extra_loaders=[DictLoader({SELF_CONTAINED_TEMPLATE: _SELF_CONTAINED})],
        template_file=SELF_CONTAINED_TEMPLATE,
    )
    nb = nbformat.read(notebook, as_version=4)
    nb.metadata["title"] = report_title(nb, run or _run_label(html_path.parent))
    figures = (
        output for cell in nb.cells for output in cell.get("outputs", []) if "image/png" in output.get("data", {})
    )
    for output, description in zip(figures, figure_descriptions(nb), strict=True):  # nbconvert's image metadata
        output.setdefault("metadata", {}).setdefault("image/png", {})["alt"] = description
    body, _ = exporter.from_notebook_node(nb)
    atomic_write_text(html_path, body)
    return html_path


def _run_label(folder: Path) -> str:
    """The run a report folder belongs to, as a reader knows it: ``outputs/demo`` for a stage report
    (``outputs/demo/reports``), ``outputs/demo/runs/<config>/lr0.003`` for a training run's."""
    folder = folder.resolve()
    if folder.name == "reports":
        folder = folder.parent
    return str(folder.relative_to(paths.REPO_ROOT)) if folder.is_relative_to(paths.REPO_ROOT) else str(folder)


@contextlib.contextmanager
def _run_by_the_pipeline() -> Iterator[None]:
    """The kernels started inside the block see :data:`PIPELINE_RUN_ENV` (a notebook's own record is then the
    caller's to write, with the report: helpers.workflow.interactive)."""
    previous = os.environ.get(PIPELINE_RUN_ENV)
    os.environ[PIPELINE_RUN_ENV] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PIPELINE_RUN_ENV, None)
        else:
            os.environ[PIPELINE_RUN_ENV] = previous


@contextlib.contextmanager
def _ctrl_c_reaches_the_kernel() -> Iterator[list[bool]]:
    """While a notebook runs, Ctrl-C (SIGINT) is passed on to its kernel, which jupyter_client starts in a
    session of its own that the terminal's Ctrl-C does not reach: the running cell stops with
    KeyboardInterrupt and papermill ends normally (no half-closed kernel, no asyncio tracebacks). The
    yielded list says whether it happened; a second Ctrl-C stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    import psutil

    interrupted: list[bool] = []

    def forward(signum, frame):
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(True)
        for child in psutil.Process().children():
            try:
                if any("ipykernel" in part for part in child.cmdline()):
                    os.killpg(os.getpgid(child.pid), signal.SIGINT)
            except (psutil.Error, ProcessLookupError, PermissionError):
                pass

    previous = signal.signal(signal.SIGINT, forward)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def run_notebook(
    stage: str, parameters: dict, output_dir: Path | str, *, name: str | None = None, stream: bool = True
) -> Report:
    """Execute ``notebooks/<stage>.ipynb`` with papermill into ``output_dir`` and render its HTML.

    The kernel runs in the repository root. With ``stream``, the notebook's output goes to this process's
    stdout/stderr while it runs (progress bars and mmengine's log lines reach the terminal directly, never
    the notebook: helpers.core.progress), and a failed cell's traceback to stderr. A failing notebook still gets
    its executed copy and HTML (showing the error), except one refused because another process is writing its
    folder (helpers.core.locks), which leaves that process's report as it is; the returned Report says it
    failed. The scratch folder of a run of the same notebook whose process died (kill -9) is removed first.
    Ctrl-C stops the
    running cell and raises KeyboardInterrupt here, keeping no executed copy of the interrupted notebook.
    Parameters the notebook does not declare, or values its declaration (helpers.core.parameters) does not allow,
    raise ParameterError before anything is created.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    check_parameters(stage, parameters, source=f"{stage}'s parameters")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    name = name or stage
    executed = output_dir / f"{name}.ipynb"
    html_path = output_dir / f"{name}.html"
    start = time.perf_counter()
    error, refused = None, False
    remove_dead_scratch(output_dir, f".{name}-")  # a killed run's partial notebook
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=scratch_prefix(f".{name}-")) as tmp:
        partial = Path(tmp) / executed.name
        with _ctrl_c_reaches_the_kernel() as interrupted, _run_by_the_pipeline():
            try:
                papermill.execute_notebook(
                    str(paths.NOTEBOOKS_DIR / f"{stage}.ipynb"),
                    str(partial),
                    parameters=parameters,
                    cwd=str(paths.REPO_ROOT),
                    progress_bar=False,
                    log_output=False,
                    extra_arguments=KERNEL_ARGUMENTS,
                    stdout_file=sys.stdout if stream else None,
                    stderr_file=sys.stderr if stream else None,
                )
            except Exception as err:  # noqa: BLE001 - papermill's execution error, or a kernel that died: reported
                if interrupted or (isinstance(err, PapermillExecutionError) and err.ename == "KeyboardInterrupt"):
                    raise KeyboardInterrupt from None  # the partial notebook goes with the temporary folder
                error = f"{type(err).__name__}: {err}"
                # another process holds the folder: its report is not overwritten with this refusal
                refused = isinstance(err, PapermillExecutionError) and err.ename == "FolderLocked"
                if stream and isinstance(err, PapermillExecutionError):
                    print(f"{name} failed:{err}", file=sys.stderr, flush=True)  # the cell's traceback
                    log.error("%s failed: %s: %s (traceback above)", name, err.ename, err.evalue)
                else:
                    log.error("%s failed: %s", name, error)
        if partial.exists() and not refused:
            partial.replace(executed)
    if executed.exists() and not refused:
        render_html(executed, html_path)
    if interrupted:  # Ctrl-C came between cells: the notebook ran to its end, and the caller stops now
        raise KeyboardInterrupt
    return Report(notebook=executed, html=html_path, ok=error is None, error=error, seconds=time.perf_counter() - start)
