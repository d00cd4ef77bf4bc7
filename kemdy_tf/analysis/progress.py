"""A one-line progress display on stderr (no dependency, safe in logs and CI)."""

from __future__ import annotations

import sys
import time
import typing


class ProgressLine:
    """Prints `label done/total` on one stderr line, at most every `interval` seconds.

    Usable as the `progress(label, done, total)` callback of `kemdy_tf.data.bio`.

    Example:
        >>> progress = ProgressLine()
        >>> for i, path in enumerate(paths, 1):
        ...     progress("wav headers", i, len(paths))
    """

    def __init__(self, stream: typing.TextIO | None = None, interval: float = 0.5, enabled: bool = True):
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.enabled = enabled
        self._last = 0.0

    def __call__(self, label: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        finished = done >= total
        if not finished and now - self._last < self.interval:
            return
        self._last = now
        # A carriage return rewrites the line on a terminal; the final count ends it.
        end = "\n" if finished else ""
        self.stream.write(f"\r{label}: {done}/{total}{end}")
        self.stream.flush()

    def note(self, message: str) -> None:
        """A whole line (a stage starting), shown even between counts."""
        if self.enabled:
            self.stream.write(f"{message}\n")
            self.stream.flush()
