"""The CLI's progress display on a terminal (rich): audio seconds decoded of the total, files done,
elapsed time and ETA. The seconds come from every running input's decoded positions, so one long file
ticks as it goes. Off when stderr is not a terminal or with -q: then only log lines are written.
"""

from __future__ import annotations

import sys

REFRESH_PER_S = 8


# control characters (a newline in a file name) written as escapes: a message stays one line
ONE_LINE = {c: f"\\x{c:02x}" for c in [*range(32), 127] if c != 9} | {10: "\\n", 13: "\\r"}


def say(line: str) -> None:
    """One line on stderr. A closed or full stderr (2>&-, 2>/dev/full) loses the line, never the run.
    A file name's bytes that are not in the locale's encoding (os.fsdecode's surrogate escapes) go out as
    those bytes, as `ls` shows them (not as "\\udce9"); control characters as escapes (ONE_LINE)."""
    line = line.translate(ONE_LINE)
    try:
        stream = sys.stderr
        try:
            data = (line + "\n").encode(stream.encoding or "utf-8", "surrogateescape")
        except (UnicodeEncodeError, LookupError, AttributeError):  # a character the locale lacks
            data = None
        if data is not None and getattr(stream, "buffer", None) is not None:
            stream.flush()  # whatever the text layer holds goes first
            stream.buffer.write(data)
            stream.buffer.flush()
        else:
            stream.write(line + "\n")
            stream.flush()
    except (OSError, ValueError, AttributeError):  # full or failing, closed, or None
        pass


class Progress:
    """`with Progress(files, seconds) as p:` … p.update(seconds_done, files_done); p.log(line)."""

    def __init__(self, total_files: int, total_seconds: float, enabled: bool | None = None):
        self.total_files, self.total_seconds = total_files, total_seconds
        self.enabled = (sys.stderr is not None and sys.stderr.isatty()) if enabled is None else enabled
        self._rich = None
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            to_terminal = sys.stdout is not None and sys.stdout.isatty()
            self._rich = RichProgress(
                BarColumn(),
                TextColumn("{task.fields[files]}/{task.fields[total_files]} files,"),
                TextColumn("{task.completed:.0f}/{task.fields[seconds]:.0f} s audio,"),
                TimeElapsedColumn(),
                TextColumn("elapsed, ETA"),
                TimeRemainingColumn(),
                console=Console(file=sys.stderr),
                transient=True,  # erased at the end
                refresh_per_second=REFRESH_PER_S,
                redirect_stdout=to_terminal,  # text on the same terminal goes above the bar
                redirect_stderr=False,
            )
            self._task = self._rich.add_task(
                "", total=max(total_seconds, 1e-9), files=0, total_files=total_files, seconds=total_seconds
            )

    def __enter__(self) -> Progress:
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()

    def update(self, seconds: float, files: int) -> None:
        """Audio seconds decoded so far (all inputs) and files finished."""
        if self._rich is not None:
            self._rich.update(self._task, completed=min(seconds, self.total_seconds), files=files)

    def log(self, line: str) -> None:
        """One line on stderr, above the display when it is drawn."""
        if self._rich is not None:
            self._rich.console.print(line.translate(ONE_LINE), markup=False, highlight=False, soft_wrap=True)
        else:
            say(line)
