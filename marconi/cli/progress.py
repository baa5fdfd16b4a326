"""Progress bars on a terminal, bound to the library's ``progress(stage, done, total)``.

The library never prints: long calls take a `progress` callback (the simulator's replays,
the main job's steps). `progress_for` gives the CLI one that draws a tqdm bar on stderr,
or None where a bar would not help: stderr is not a terminal (a pipe, a log file, CI) or
``-v`` logs there. Nothing shows during the first `SHOW_AFTER_S` seconds, so a quick run
stays quiet; the bar is erased at the end, so the report follows a clean line. A ticker
thread redraws the bar while a step reports nothing (a solve, a plan's tuning), so its
elapsed time keeps moving.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Callable, TextIO

from tqdm import tqdm

SHOW_AFTER_S = 3.0            # runs shorter than this never show a bar
TICK_S = 0.5
FALLBACK_SIZE = (80, 24)       # columns, lines of a terminal that reports no size


class TerminalProgress:
    """`progress(stage, done, total)` as one tqdm bar per stage (``total`` 0: a step
    without a count, shown with its elapsed time); use as a context manager."""

    def __init__(self, file: TextIO, show_after_s: float = SHOW_AFTER_S,
                 clock: Callable[[], float] = time.monotonic, tick_s: float | None = TICK_S):
        self._file = file
        self._show_at = clock() + show_after_s
        self._clock = clock
        self._tick_s = tick_s
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._ticker: threading.Thread | None = None
        self._state: tuple[str, int, int] | None = None
        self._bar = None
        self._bar_stage: tuple[str, bool] | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            self._state = (stage, done, total)
            self._draw()

    def __enter__(self) -> TerminalProgress:
        if self._tick_s is not None:
            self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopped.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            self._close_bar()

    # ------------------------------------------------------------ private helpers

    def _tick(self) -> None:
        while not self._stopped.wait(self._tick_s):
            with self._lock:
                self._draw()

    def _draw(self) -> None:
        if self._state is None or self._clock() < self._show_at:
            return
        stage, done, total = self._state
        if self._bar is None or (stage, bool(total)) != self._bar_stage:
            self._close_bar()
            # total 0: a step without a count (planning, a solve) shows its elapsed time
            counted = {} if total else {"bar_format": "{desc}: {elapsed}"}
            self._bar = tqdm(total=total or None, desc=stage, file=self._file, leave=False,
                             mininterval=0, **_width(self._file), **counted)
            self._bar_stage = (stage, bool(total))
        if total:
            self._bar.total = total
            self._bar.n = done
        self._bar.refresh()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._bar_stage = None


def _width(file: TextIO) -> dict:
    """tqdm's size arguments for `file`: follow the terminal where it reports its size; a
    fixed `FALLBACK_SIZE` where it reports 0 × 0 (a pty nobody sized, as under `script` or
    `docker run -t` without a console), on which tqdm's own sizing draws nothing."""
    try:
        size = os.get_terminal_size(file.fileno())
    except (AttributeError, OSError, ValueError):
        size = os.terminal_size((0, 0))
    if size.columns and size.lines:
        return {"dynamic_ncols": True}
    return {"ncols": size.columns or FALLBACK_SIZE[0], "nrows": size.lines or FALLBACK_SIZE[1]}


def progress_for(args: argparse.Namespace) -> TerminalProgress | None:
    """A terminal progress bar for this run, or None (stderr not a terminal, or -v)."""
    if getattr(args, "verbose", 0) or not sys.stderr.isatty():
        return None
    return TerminalProgress(sys.stderr, SHOW_AFTER_S)
