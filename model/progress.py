"""Progress display for long work: a tqdm bar on a terminal, nothing in a log, and periodic lines on a
terminal that reports zero columns (a serial console, some CI ptys), where tqdm would draw an empty line."""
from __future__ import annotations

import os
import sys

from tqdm import tqdm

LINE_INTERVAL_S = 10.0  # how often the line display prints, at most
LINE_WIDTH = 100  # the width tqdm formats each line to


class _Lines:
    """A stream for tqdm that turns each redraw ("\\r" + text) into one line and drops the clearing ones."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def terminal_columns(stream) -> int | None:
    """The width the terminal behind ``stream`` reports; None when it is not a terminal."""
    try:
        return os.get_terminal_size(stream.fileno()).columns if stream.isatty() else None
    except (AttributeError, OSError, ValueError):
        return None


def progress(*args, **kwargs) -> tqdm:
    """``tqdm(*args, **kwargs)``, except on a terminal with no width: there, a line every 10 s."""
    stream = kwargs.get("file") or sys.stderr
    if kwargs.get("disable") is not True and terminal_columns(stream) == 0:
        kwargs.update(file=_Lines(stream), ncols=LINE_WIDTH, dynamic_ncols=False, leave=True,
                      mininterval=max(kwargs.get("mininterval", 0.1), LINE_INTERVAL_S))
    return tqdm(*args, **kwargs)
