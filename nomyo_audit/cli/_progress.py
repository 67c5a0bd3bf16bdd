"""Progress for long CLI runs: a live line on a terminal, a plain line about every 10 s elsewhere.

One implementation for ``verify --log``, ``report`` and ``log verify``. On a
terminal the line is redrawn in place (at most a few times a second); when
stderr is not a terminal (a CI log) a whole line is printed about every
``interval`` seconds, so a long job shows it is alive without flooding the log.
Nothing is printed for runs that finish before the first interval.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``with Progress("verifying", total) as step: ... step(done)``.

    ``total`` may be ``None`` when it is not known in advance. ``clock`` and
    ``stream`` are injectable for tests.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        interval: float = 10.0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        unit: str = "records",
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.live = _isatty(self.stream)
        # on a terminal redraw at most 4 times a second; in a log print every interval
        self.interval = 0.25 if self.live else interval
        self._start = clock()
        self._next = self._start + (1.0 if self.live else interval)
        self._drawn = False
        self.done = 0

    def __call__(self, done: int) -> None:
        self.done = done
        now = self.clock()
        if now < self._next:
            return
        self._next = now + self.interval
        self._emit(now)

    def _emit(self, now: float) -> None:
        if self.total:
            percent = min(100, 100 * self.done // max(self.total, 1))
            text = f"{self.label} {self.done:,}/{self.total:,} {self.unit} ({percent}%)"
        else:
            text = f"{self.label} {self.done:,} {self.unit}"
        text += f", {now - self._start:.0f}s"
        if self.live:
            self.stream.write("\r" + text + "\x1b[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End a live line with a newline, so what follows starts on its own line."""
        if self.live and self._drawn:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
