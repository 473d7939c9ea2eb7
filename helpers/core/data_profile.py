"""The data profile: the full data (``data/raw``, ``data/prepared``, ``outputs/``, the seed's config) or the
demo's (``data/demo``, ``outputs/demo``, the demo config, which ``make demo`` writes). One rule decides, for
every default that could fall back on the demo (01/02's raw data, 03's prepared data and config, 04/05's
outputs), and one sentence announces it, the same everywhere, once per process (a notebook's kernel, a script)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from helpers.core import paths

FULL, DEMO = "full", "demo"

_announced: list[str] = []  # the announcement this process has printed, if any


def announcement(what: str, full_place: Path | str, demo_place: Path | str) -> str:
    """The sentence that says the demo profile is used, and where the full data's ``what`` would be."""
    return (
        f"Using the demo profile: the demo's {what} in {demo_place} (config {paths.DEMO_CONFIG}), since there are "
        f"none in {full_place}, where the full data's go (README, 'Data')."
    )


def choose_profile(
    what: str,
    full_place: Path | str,
    demo_place: Path | str,
    full_has: Callable[[], bool],
    demo_has: Callable[[], bool],
) -> tuple[str, str | None]:
    """(:data:`FULL` or :data:`DEMO`, the announcement or None): the full profile when it has ``what``, or when the
    demo has none either (the full one's error then says what to do); else the demo's, whose announcement is
    printed the first time a fallback chooses it in this process (later ones return it, silently)."""
    if full_has() or not demo_has():
        return FULL, None
    note = announcement(what, full_place, demo_place)
    if not _announced:
        _announced.append(note)
        print(note)
    return DEMO, note
