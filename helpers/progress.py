"""The project's progress bar: tqdm's widget where a person watches a notebook, plain text everywhere else.

``tqdm.auto`` draws an ipywidgets bar in any Jupyter kernel, also in one that papermill drives headless
(``make sweep``, ``make report``), where nobody sees the widget and the terminal gets nothing. A kernel
whose client cannot answer ``input()`` is a headless executor (papermill/nbclient send
``allow_stdin=False``; JupyterLab and VS Code send ``True``); there the bar is tqdm's text bar, which goes
to stderr and so reaches the terminal through papermill's stream. ``PNEUMO_PROGRESS=text`` or
``=widget`` overrides the choice.
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm as _auto_tqdm
from tqdm.std import tqdm as _text_tqdm

PROGRESS_ENV = "PNEUMO_PROGRESS"


def headless_kernel() -> bool:
    """True inside a Jupyter kernel whose current client cannot take input (papermill, nbclient)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    kernel = getattr(get_ipython(), "kernel", None)
    return kernel is not None and not getattr(kernel, "_allow_stdin", True)


def text_progress() -> bool:
    """Whether progress bars are drawn as text (the environment variable, else a headless kernel)."""
    choice = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if choice in ("text", "widget"):
        return choice == "text"
    return headless_kernel()


def tqdm(*args, **kwargs):
    """``tqdm.auto.tqdm``, or the text bar (updated every 5 s at most) where a widget would go unseen."""
    if text_progress():
        kwargs.setdefault("mininterval", 5.0)
        return _text_tqdm(*args, **kwargs)
    return _auto_tqdm(*args, **kwargs)
