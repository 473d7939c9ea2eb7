"""The project's progress bar: tqdm's widget where a person watches a notebook, plain text everywhere else;
and, in a notebook's kernel, the library chatter sent to the terminal instead of the notebook and its report.

``tqdm.auto`` draws an ipywidgets bar in any Jupyter kernel, also in one that papermill drives headless
(``make sweep``, ``make report``), where nobody sees the widget and the terminal gets nothing. A kernel
whose client cannot answer ``input()`` is a headless executor (papermill/nbclient send
``allow_stdin=False``; JupyterLab and VS Code send ``True``); there the bar is tqdm's text bar, written to
the kernel process's own stderr (:func:`terminal_stream`: the terminal papermill runs in), which ipykernel
does not copy into the notebook, so the HTML report shows results and no progress. ``PNEUMO_PROGRESS=text``
or ``=widget`` overrides the choice.

In any kernel (JupyterLab's too) mmengine's console logger writes to that terminal (:func:`console_to_terminal`,
:func:`quiet_reports`): its log is for the terminal and the run's log file, not for the notebook.
:func:`quiet_reports` (called when ``helpers`` is imported) also sends, in a headless kernel, warnings and
logging's last-resort output to the terminal, and drops the known library notices (:data:`KNOWN_NOTICES`)
everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from typing import IO, Iterator

from tqdm.auto import tqdm as _auto_tqdm
from tqdm.std import tqdm as _text_tqdm

PROGRESS_ENV = "PNEUMO_PROGRESS"


def _kernel():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return getattr(get_ipython(), "kernel", None)


def in_kernel() -> bool:
    """True inside a Jupyter kernel (JupyterLab's, papermill's, nbclient's)."""
    return _kernel() is not None


def headless_kernel() -> bool:
    """True inside a Jupyter kernel whose current client cannot take input (papermill, nbclient)."""
    kernel = _kernel()
    return kernel is not None and not getattr(kernel, "_allow_stdin", True)


def watched_notebook() -> bool:
    """True inside a Jupyter kernel whose client can take input: a person watches the notebook (JupyterLab)."""
    return in_kernel() and not headless_kernel()


def text_progress() -> bool:
    """Whether progress bars are drawn as text (the environment variable, else a headless kernel)."""
    choice = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if choice in ("text", "widget"):
        return choice == "text"
    return headless_kernel()


def tqdm(*args, **kwargs):
    """``tqdm.auto.tqdm``, or the text bar (updated every 5 s at most) where a widget would go unseen; in a
    headless kernel the text bar goes to the terminal, not into the notebook."""
    if text_progress():
        kwargs.setdefault("mininterval", 5.0)
        if headless_kernel():
            kwargs.setdefault("file", terminal_stream())
        return _text_tqdm(*args, **kwargs)
    return _auto_tqdm(*args, **kwargs)


# Notices of libraries that say nothing about the results: never shown (the start of each message, literally).
KNOWN_NOTICES = (
    "pkg_resources is deprecated as an API",
    "Deprecated call to `pkg_resources.declare_namespace",
)
# The kernel application's own log: its notice at each start ("Kernel is running over TCP without
# encryption": it listens on 127.0.0.1 only) and, after a Ctrl-C has closed its sockets, the errors of
# replies it can no longer send. Critical messages only; the notebook's own warnings and errors are unaffected
# (a failing cell reaches the terminal through papermill, a dead kernel as papermill's error).
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]

_terminal: IO[str] | None = None


def terminal_stream() -> IO[str]:
    """The kernel process's own stderr: the terminal (or log) of whoever started it, never the notebook.

    ipykernel points file descriptor 2 at a pipe it copies into the notebook and keeps a duplicate of the
    original (``_original_stdstream_copy``); outside such a kernel this is ``sys.__stderr__``."""
    global _terminal
    if _terminal is None:
        original = getattr(sys.stderr, "_original_stdstream_copy", None)
        _terminal = os.fdopen(os.dup(original), "w", buffering=1) if original is not None else sys.__stderr__
    return _terminal


@contextlib.contextmanager
def console_to_terminal() -> Iterator[None]:
    """In a Jupyter kernel, what is printed (and the console handlers that loggers such as mmengine's
    create) inside the block goes to the terminal, not into the notebook; elsewhere nothing changes."""
    if not in_kernel():
        yield
        return
    with contextlib.redirect_stdout(terminal_stream()):
        yield


def ignore_known_notices() -> None:
    """Drop the library notices of :data:`KNOWN_NOTICES` (in this process and, through ``PYTHONWARNINGS``,
    the processes it starts: kernels, torchrun); every other warning still shows."""
    given = [entry for entry in os.environ.get("PYTHONWARNINGS", "").split(",") if entry]
    for notice in KNOWN_NOTICES:
        warnings.filterwarnings("ignore", message=re.escape(notice))
        if f"ignore:{notice}" not in given:
            given.append(f"ignore:{notice}")
    os.environ["PYTHONWARNINGS"] = ",".join(given)


def quiet_reports() -> None:
    """The known notices dropped; in a Jupyter kernel, mmengine's console logger created now, on the terminal
    (its later messages, such as "Loads checkpoint by local backend", stay out of the notebook); in a headless
    kernel, warnings and logging's last-resort output to the terminal too."""
    ignore_known_notices()
    if not in_kernel():
        return
    if headless_kernel():
        terminal = terminal_stream()

        def show_on_terminal(message, category, filename, lineno, file=None, line=None):
            terminal.write(warnings.formatwarning(message, category, filename, lineno, line))

        warnings.showwarning = show_on_terminal
        logging.lastResort = logging.StreamHandler(terminal)
        logging.lastResort.setLevel(logging.WARNING)
    try:
        from mmengine.logging import MMLogger
    except ImportError:
        return
    with console_to_terminal():
        MMLogger.get_instance("mmengine")
