"""The `voxtral` command's entry point: Ctrl-C or SIGTERM while the program is still loading exits 130
or 143 with one line.

Importing the command line pulls in NumPy, SciPy, PyAV and the model code (a fraction of a second warm,
seconds on a cold disk). A KeyboardInterrupt raised inside an import can surface as a traceback, as an
ImportError from a half-initialised module, or be swallowed by the import machinery, and SIGTERM's
default action ends the process without a word; so both are only noted while importing, and acted on
once the imports are done (a signal this process inherited as ignored stays ignored). SIGINT is ignored
once the command has returned (its outputs written), so that it cannot turn a finished run into an
interrupted one.
"""

from __future__ import annotations

import _signal as signal  # the C module: `signal` imports enum, itself long enough to be interrupted
import os
import sys

EXIT_INTERRUPTED = 130  # 128 + SIGINT (= outputs.EXIT_INTERRUPTED, not imported: this module loads first)
EXIT_TERMINATED = 143  # 128 + SIGTERM (= outputs.EXIT_TERMINATED)
STOPPED = (EXIT_INTERRUPTED, EXIT_TERMINATED)  # the exit codes of a run stopped by Ctrl-C or SIGTERM


def main() -> None:
    noted: list[int] = []
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: noted.append(signum)) for s in stops}
    try:
        import typer.main

        from .cli import app
        from .cli import main as run

        command = typer.main.get_command(app)  # builds every command's options: also worth protecting
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    noted = [s for s in noted if previous[s] != signal.SIG_IGN]  # an inherited ignore stays one
    if signal.SIGINT in noted:
        sys.stderr.write("voxtral: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    if signal.SIGTERM in noted:
        sys.stderr.write("voxtral: terminated (SIGTERM)\n")
        sys.exit(EXIT_TERMINATED)
    try:
        run(command)
    except SystemExit as e:
        if e.code in STOPPED and "voxtral.scheduler" in sys.modules:
            _exit_now_if_reading(e.code)
        raise
    finally:  # the command is over (its outputs are written): a Ctrl-C now changes nothing
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _exit_now_if_reading(code: int) -> None:
    """A run stopped by Ctrl-C or SIGTERM has written what it will write and said so; a reader thread
    still inside a pipe or FIFO (waiting for its writer, or spooling /dev/zero) would hold the exit until
    that input ends (Python joins the pool's threads at exit). Exit at once instead: nothing of ours is
    open for writing, and a spooled input's temporary file has no name."""
    from .scheduler import readers_busy

    if readers_busy():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os._exit(code)
