"""Progress of every long wait, one style everywhere.

In a terminal: a tqdm bar on stderr that stays when done. Elsewhere (CI logs, nohup, a notebook):
one plain line at most every 30 seconds, with the count, the rate and the time left, and a last
line when done. ``set_enabled(False)`` (the CLI's ``--quiet``) silences all of it.
"""
from __future__ import annotations

import sys
from typing import Iterable, Optional

from tqdm import tqdm

_enabled = True
LOG_INTERVAL = 30.0   # seconds between lines when stderr is not a terminal


def set_enabled(on: bool) -> None:
    """Show (True) or silence (False) every progress display of this process."""
    global _enabled
    _enabled = bool(on)


class _Lines:
    """A stream that passes whole lines through and drops tqdm's bare line ends and carriage returns."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        if text.strip("\r\n"):
            self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


class _LogLines(tqdm):
    """tqdm that writes whole lines (no carriage returns), for logs and notebooks: one when it
    starts, then at most one per ``mininterval`` seconds, and one when done."""

    def display(self, msg=None, pos=None):
        if getattr(self, "_shown", None) == self.n:   # nothing new since the last line
            return True
        self._shown = self.n
        self.fp.write((msg if msg is not None else self.__str__()).strip() + "\n")
        self.fp.flush()
        return True

    def clear(self, *args, **kwargs):   # nothing to erase in a log
        pass


def bar(iterable: Optional[Iterable] = None, *, total: Optional[float] = None, desc: str = "",
        unit: str = "it", unit_scale: bool = False, disable: bool = False, leave: bool = True, **kw) -> tqdm:
    """A progress bar over ``iterable`` (or updated by hand up to ``total``)."""
    off = disable or not _enabled
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit_scale, disable=off,
                    leave=leave, dynamic_ncols=True, file=sys.stderr, **kw)
    return _LogLines(iterable, total=total, desc=desc, unit=unit, unit_scale=unit_scale, disable=off,
                     leave=leave, mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL, file=_Lines(sys.stderr),
                     ascii=True, **kw)
