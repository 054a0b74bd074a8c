"""A one-line progress bar for many files (files and audio seconds done, ETA), drawn on a terminal.

`bar_line` is a pure function; `ProgressBar` redraws it in place on its stream when that stream is
a terminal and otherwise draws nothing, and moves it out of the way of other lines written through it.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from typing import TextIO

BAR_CELLS = 24
CLEAR_LINE = "\r\x1b[K"  # carriage return, then erase to the end of the line


@dataclass
class Done:
    files: int = 0
    seconds: float = 0.0  # audio seconds


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def eta_seconds(done: Done, total: Done, elapsed: float) -> float | None:
    """Time left at the rate so far (by audio seconds; by files when durations are unknown)."""
    if total.seconds > 0 and done.seconds > 0:
        return elapsed * (total.seconds - done.seconds) / done.seconds
    if done.files > 0:
        return elapsed * (total.files - done.files) / done.files
    return None


def bar_line(done: Done, total: Done, elapsed: float, width: int = 80) -> str:
    """`[#####.....] 3/10 files, 45/120 s audio, 0:12 elapsed, ETA 0:20`, cut to width."""
    fraction = done.seconds / total.seconds if total.seconds > 0 else done.files / max(total.files, 1)
    filled = round(BAR_CELLS * min(max(fraction, 0.0), 1.0))
    eta = eta_seconds(done, total, elapsed)
    line = (
        f"[{'#' * filled}{'.' * (BAR_CELLS - filled)}] {done.files}/{total.files} files, "
        f"{done.seconds:.0f}/{total.seconds:.0f} s audio, {_clock(elapsed)} elapsed, "
        f"ETA {'?' if eta is None else _clock(eta)}"
    )
    return line[: max(width - 1, 0)]


class ProgressBar:
    """Draws bar_line on stream (a terminal only); write() puts other lines above it."""

    def __init__(self, total: Done, stream: TextIO, enabled: bool | None = None):
        self.total, self.done, self.stream = total, Done(), stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.start = time.monotonic()
        self._drawn = False
        self.draw()

    def draw(self) -> None:
        """Redraw the bar in place."""
        if self.enabled:
            width = shutil.get_terminal_size().columns
            line = bar_line(self.done, self.total, time.monotonic() - self.start, width)
            self.stream.write(CLEAR_LINE + line)
            self.stream.flush()
            self._drawn = True

    def clear(self) -> None:
        """Erase the bar (before other output, and at the end)."""
        if self._drawn:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()
            self._drawn = False

    def advance(self, files: int, seconds: float) -> None:
        """Count files and audio seconds as done, then redraw."""
        self.done.files += files
        self.done.seconds += seconds
        self.draw()

    def write(self, text: str, stream: TextIO) -> None:
        """Write text (whole lines) to stream above the bar."""
        self.clear()
        stream.write(text)
        stream.flush()
        self.draw()
