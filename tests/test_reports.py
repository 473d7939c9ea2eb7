"""A report a reader reads: titled with its stage and run, self-contained (no script from another host), no table
wider than the page (at most helpers.evaluation.tables.MAX_TABLE_COLUMNS columns: the whole-demo test checks every
report of a demo run with :func:`widest_table`)."""

from __future__ import annotations

import re

import nbformat

from helpers.workflow.notebook_runner import render_html

SCRIPT_FROM_A_HOST = re.compile(r"<script[^>]*\bsrc=[\"']?(https?:)?//", re.I)
TABLE_CELL = re.compile(r"<t[hd]\b([^>]*)>", re.I)
COLSPAN = re.compile(r"colspan=[\"']?(\d+)", re.I)


def widest_table(html: str) -> int:
    """The most columns in one row of any table in ``html`` (a cell with ``colspan`` counts its columns); 0 without
    a table."""
    widths = [0]
    for table in re.findall(r"<table\b.*?</table>", html, re.S | re.I):
        for row in re.findall(r"<tr\b.*?</tr>", table, re.S | re.I):
            widths.append(sum(int(m[1]) if (m := COLSPAN.search(cell)) else 1 for cell in TABLE_CELL.findall(row)))
    return max(widths)


def test_widest_table_counts_the_columns_of_the_widest_row():
    html = (
        "<p>x</p><table><thead><tr><th>run</th><th colspan='3'>image_dice</th></tr></thead>"
        "<tbody><tr><td>a</td><td>1</td><td>2</td></tr></tbody></table><table><tr><td>b</td></tr></table>"
    )
    assert widest_table(html) == 4 and widest_table("<p>no table</p>") == 0


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


def test_every_figure_gets_its_alt_text_from_nbconvert_s_image_metadata(tmp_path, caplog):
    """Each figure's alt text names its section, set as the image output's metadata that the template reads:
    nbconvert adds no placeholder and warns of no missing alternative text."""
    import base64

    png = base64.b64encode(
        bytes.fromhex(
            "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8cfc0"
            "f01f0005000201e221bc330000000049454e44ae426082"
        )
    ).decode()
    figure = nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"})
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# 05 · Visualize"),
            nbformat.v4.new_markdown_cell("## Worst examples"),
            nbformat.v4.new_code_cell("plot()", outputs=[figure, figure]),
        ]
    )
    notebook = tmp_path / "05_visualize.ipynb"
    nbformat.write(nb, notebook)
    with caplog.at_level("WARNING"):
        html = render_html(notebook, tmp_path / "05_visualize.html", "outputs/demo").read_text()
    images = re.findall(r"<img\b[^>]*>", html)
    alts = [re.search(r'alt="([^"]*)"', image).group(1) for image in images if "data:image/png;base64," in image]
    assert alts == ["Figure 1 of the section 'Worst examples'", "Figure 2 of the section 'Worst examples'"]
    assert "No description has been provided" not in html
    assert "Alternative text is missing" not in caplog.text
