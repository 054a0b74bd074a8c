"""Where a CLI run's text goes, so that nothing is lost or garbled: standard output in input order,
valid in its format, whatever its encoding or state; and the signals that end a run early.

    out = Stdout()                 # encoding errors → replacement characters, never a traceback
    out = Stdout(json=True)        # … → JSON escapes (\u00e9), so JSON stays valid and lossless
    order = InOrder(emit)          # results arrive as inputs finish; emit sees them in input order
    with stop_signals() as stop:   # Ctrl-C and SIGTERM noted; stop.check() raises at safe points
        ...
"""

from __future__ import annotations

import codecs
import signal
import sys
from collections.abc import Callable
from contextlib import contextmanager

from .errors import OutputError

EXIT_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of stdout went away (e.g. `| head -1`)


class Terminated(BaseException):
    """SIGTERM, raised where the run is (a BaseException, like KeyboardInterrupt: cleanups run)."""


class BrokenPipe(Exception):
    """Whoever read standard output closed it: stop quietly (a pipeline's normal end)."""


class StdoutError(OutputError):
    """Standard output is closed or cannot take more (disk full): no later output can be written."""


def _json_escape(error: UnicodeEncodeError) -> tuple[str, int]:
    """Characters the stream's encoding cannot hold → JSON \\uXXXX escapes (UTF-16 code units), which
    are valid wherever JSON has non-ASCII characters: inside strings."""
    units = error.object[error.start : error.end].encode("utf-16-be", "surrogatepass")
    escaped = "".join(f"\\u{units[i] << 8 | units[i + 1]:04x}" for i in range(0, len(units), 2))
    return escaped, error.end


JSON_ESCAPE = "voxtral-json-escape"
codecs.register_error(JSON_ESCAPE, _json_escape)


class Stdout:
    """Standard output for text: characters its encoding cannot hold are replaced (not a traceback), or
    with json=True written as JSON escapes; a closed stdout or a write error (disk full) is a StdoutError
    (its message ends with hint, e.g. " or pass --output-dir"); a broken pipe is BrokenPipe."""

    def __init__(self, hint: str = "", json: bool = False):
        self.hint = hint
        stream = sys.stdout
        if stream is not None and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors=JSON_ESCAPE if json else "replace")
            except (ValueError, OSError):  # a stream that cannot be reconfigured: write as it is
                pass

    def check(self) -> None:
        """StdoutError now if there is no standard output to write to (so before any work)."""
        if sys.stdout is None:
            raise StdoutError(f"standard output is closed; redirect it to a file{self.hint}")

    def write(self, text: str) -> None:
        self.check()
        stream = sys.stdout  # looked up each time: a progress display may have wrapped it
        try:
            stream.write(text)
            stream.flush()
        except BrokenPipeError:
            raise BrokenPipe from None
        except OSError as e:
            raise StdoutError(
                f"cannot write to standard output ({e.strerror}); free some space{self.hint}"
            ) from None


def silence_stdout() -> None:
    """After a broken pipe: send what Python still flushes at exit nowhere (no second error)."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):
        pass


class InOrder:
    """Items that arrive keyed by input index in any order, handed to emit in index order."""

    def __init__(self, emit: Callable[[int, object], None]):
        self.emit, self.next, self.waiting = emit, 0, {}

    def add(self, index: int, item) -> None:
        self.waiting[index] = item
        while self.next in self.waiting:
            self.emit(self.next, self.waiting.pop(self.next))
            self.next += 1


class StopRequest:
    """A stop signal (SIGINT, SIGTERM) noted by its handler and acted on at the run's safe points: an
    exception raised from a signal handler inside a callback from C (audio decoding) would be swallowed."""

    def __init__(self):
        self.signal: int | None = None

    def check(self) -> None:
        """Raise KeyboardInterrupt (Ctrl-C) or Terminated (SIGTERM) if one came; call it at safe points."""
        if self.signal == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signal is not None:
            raise Terminated()


@contextmanager
def stop_signals(signals=(signal.SIGINT, signal.SIGTERM)):
    """For the block, the given signals only note themselves in the yielded StopRequest (the caller
    raises at its safe points with check()); the old handlers come back after. A signal this process
    inherited as ignored (`cmd &` in a script, nohup) stays ignored. Main thread only."""
    request = StopRequest()

    def note(signum, frame):
        request.signal = request.signal or signum

    try:
        old = {s: signal.signal(s, note) for s in signals if signal.getsignal(s) != signal.SIG_IGN}
    except ValueError:  # not the main thread: leave signals alone
        yield request
        return
    try:
        yield request
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def terminated_as(exc: type[BaseException] = Terminated):
    """SIGTERM raises exc in the main thread for the duration of the block (then the old handler): for
    loops that block on input (a live stream), where a noted signal would wait for the next input, and
    for loading the model. A SIGTERM this process inherited as ignored stays ignored."""

    def handler(signum, frame):
        raise exc()

    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        yield
        return
    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
