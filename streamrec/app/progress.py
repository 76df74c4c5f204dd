"""Progress of the long commands (fit, tune, publish, replay, loadgen): a bar on a terminal,
a plain line every ``every_s`` seconds elsewhere (a log file, a container's stderr).

The code that does the work knows nothing of it: ``model.train.fit``, ``model.tune.tune``,
``model.publish.publish``, ``producer.replay.replay`` and ``producer.loadgen.run_load`` each
take an optional callback, ``progress(done, total)``; the commands build a ``Progress`` and
pass it. The bar is tqdm's (already installed with implicit), drawn on stderr only when stderr
is a terminal; otherwise the lines go through logging (``streamrec.app.progress``), so
``STREAMREC_LOG_FORMAT=json`` covers them.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from types import TracebackType
from typing import Any, TextIO

log = logging.getLogger(__name__)


def is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class Progress:
    """One step's progress. Call it with how much is done (absolute, not a delta) and,
    when known or changed, the total: ``progress(done, total)``.

    ``bar``: draw a tqdm bar (default: when ``stream`` is a terminal); else log a line at most
    every ``every_s`` seconds, and one at ``close`` (the step's total time). ``rate``: show
    how fast it goes (not for a step measured in seconds).
    """

    def __init__(
        self,
        what: str,
        total: float | None = None,
        unit: str = "",
        *,
        stream: TextIO | None = None,
        bar: bool | None = None,
        every_s: float = 10.0,
        rate: bool = True,
    ) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.done: float = 0
        self.every_s = every_s
        self.rate = rate and bool(unit)
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.monotonic()
        self._next = self.started + every_s
        self._bar: Any = None
        self._redirect: Any = None
        if is_terminal(self.stream) if bar is None else bar:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(
                total=total, desc=what, unit=f" {unit}" if unit else "it", file=self.stream,
                ncols=_columns(self.stream), leave=True, smoothing=0.1, mininterval=0.2,
                # A step measured in seconds (tune's budget) has no rate worth showing.
                bar_format=None if rate else "{desc}: {percentage:3.0f}%|{bar}| "
                "{n:.0f}/{total:.0f}" + (f" {unit}" if unit else "") + " [{elapsed}]",
            )  # fmt: skip
            # Log lines meanwhile are printed above the bar, not through it.
            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()

    @property
    def drawing(self) -> bool:
        """Whether a bar is drawn (then whoever prints lines meanwhile should stay quiet)."""
        return self._bar is not None

    def __call__(self, done: float, total: float | None = None) -> None:
        if total is not None and total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
                self._bar.refresh()
        self.done = done
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            return
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.every_s
            log.info("%s: %s", self.what, self._line(now))

    def _line(self, now: float) -> str:
        elapsed = now - self.started
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            share = (
                f"{_num(self.done)}/{_num(self.total)}{unit} ({100 * self.done / self.total:.0f}%)"
            )
        else:
            share = f"{_num(self.done)}{unit}"
        rate = f", {self.done / elapsed:,.1f}{unit}/s" if elapsed > 0 and self.rate else ""
        return f"{share} in {elapsed:.1f} s{rate}"

    def _stop_drawing(self) -> None:
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None
        self._bar.close()
        self._bar = None

    def close(self) -> None:
        if self._bar is not None:
            self._stop_drawing()
        else:
            log.info("%s: done, %s", self.what, self._line(time.monotonic()))

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        elif self._bar is not None:  # leave the bar where it stopped; the error follows it
            self._stop_drawing()


def _columns(stream: TextIO) -> int:
    """The terminal's width (a fresh pseudo-terminal may say 0: then 100)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        columns = 0
    return columns if columns > 0 else 100


def _num(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"
