"""One writer per folder: a run folder (03_train), a prepared folder (02_prepare), an evaluation folder (04).

:func:`folder_lock` takes an exclusive ``fcntl.flock`` on ``<folder>/.lock`` and writes its holder (pid, host,
start time, command) into it. A second writer, in this process or another, gets :class:`FolderLocked`
at once, naming the holder. The kernel releases a flock when its process ends however it ends (SIGKILL
too), so a lock can never outlive its holder: a lock file left behind by a killed process still names it,
and the next writer takes the lock over and says so (a *stale* lock). The file is removed on release.

flock works on local file systems and on NFSv4 (Linux emulates it with byte-range locks there); the holder's
host is recorded because a shared folder may be written from several nodes.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


COMMAND_ENV = "PNEUMO_COMMAND"  # the command the user ran, for the processes it starts (notebook kernels, torchrun)


def user_command() -> str:
    """The command the user ran: :data:`COMMAND_ENV` when a parent set it (``python -m helpers`` does, so a
    lock taken in a notebook's kernel names ``python -m helpers sweep ...``, not ``ipykernel_launcher -f ...``),
    else this process's own command line."""
    return os.environ.get(COMMAND_ENV) or " ".join(sys.argv)


class FolderLocked(RuntimeError):
    """Another process (or another writer in this one) is writing the folder."""


def describe_holder(holder: dict) -> str:
    """'pid 123 on host node1 since 2026-12-01T09:00:00+0000 (python -m ...)' from a lock file's record."""
    if not holder:
        return "a process that has not written its name yet"
    command = f" ({holder['command']})" if holder.get("command") else ""
    return f"pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('started')}{command}"


def read_holder(folder: Path | str) -> dict:
    """The record in ``folder``'s lock file ({} when there is none or it is empty)."""
    try:
        text = (Path(folder) / LOCK_FILE).read_text()
    except FileNotFoundError:
        return {}
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return {"pid": "?", "host": "?", "started": "?", "command": f"unreadable lock file: {text[:80]!r}"}


def _open_locked(path: Path) -> int:
    """An fd of ``path`` holding its exclusive flock; raises BlockingIOError when another holds it.

    The lock file is unlinked on release, so a lock taken on a file that was unlinked meanwhile is taken
    again on the new one (the usual flock-and-unlink dance)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask gives the mode, as for open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def folder_lock(folder: Path | str, what: str = "folder") -> Iterator[Path]:
    """Hold ``folder``'s lock for the block (the folder is created when missing, and removed again on
    exit when the block left it empty). ``what`` names the folder's kind in the messages ('run folder').

    Raises :class:`FolderLocked` naming the holder when another writer holds it.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    try:
        fd = _open_locked(path)
    except BlockingIOError:
        if created:
            _remove_if_empty(folder)
        raise FolderLocked(
            f"{folder}: this {what} is being written by {describe_holder(_holder_of(folder))}; "
            f"wait for it to finish, or write elsewhere (lock file {path})"
        ) from None
    try:
        stale = read_holder(folder)
        if stale:
            log.warning(
                "%s: took over the lock of %s, which ended without releasing it", folder, describe_holder(stale)
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": user_command()[:300],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        yield folder
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
        if created:
            _remove_if_empty(folder)


def _holder_of(folder: Path, wait_s: float = 2.0) -> dict:
    """The holder's record; a holder that has just taken the lock writes it a moment later, so wait for it
    a little (``wait_s``) before naming nobody."""
    deadline = time.monotonic() + wait_s
    holder = read_holder(folder)
    while not holder and time.monotonic() < deadline:
        time.sleep(0.05)
        holder = read_holder(folder)
    return holder


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
