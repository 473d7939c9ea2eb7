"""A report a reader reads: titled with its stage and run, self-contained (no script from another host)."""

from __future__ import annotations

import re

import nbformat

from helpers.workflow.notebook_runner import render_html

SCRIPT_FROM_A_HOST = re.compile(r"<script[^>]*\bsrc=[\"']?(https?:)?//", re.I)


def test_a_report_is_titled_with_its_stage_and_run_and_loads_nothing_from_elsewhere(tmp_path):
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# 04 · Evaluate\n\nInference, metrics."),
            nbformat.v4.new_markdown_cell("Below: $x^2$, which MathJax would typeset."),
            nbformat.v4.new_code_cell("1", outputs=[nbformat.v4.new_output("stream", name="stdout", text="1\n")]),
        ]
    )
    notebook = tmp_path / "04_evaluate.ipynb"
    nbformat.write(nb, notebook)
    html = render_html(notebook, tmp_path / "04_evaluate.html", "outputs/demo").read_text()
    assert re.search(r"<title>04 · Evaluate · outputs/demo</title>", html), re.findall(r"<title>.*?</title>", html)
    assert not SCRIPT_FROM_A_HOST.search(html) and "cdnjs" not in html, "a report asks another host for a script"
    assert "Inference, metrics." in html and ">1\n<" in html

    report = tmp_path / "outputs" / "demo" / "reports" / "04_evaluate.html"
    report.parent.mkdir(parents=True)
    default = render_html(notebook, report).read_text()  # the run: the folder the report is in, less "reports"
    assert f"<title>04 · Evaluate · {tmp_path / 'outputs' / 'demo'}</title>" in default
