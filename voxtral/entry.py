"""The `voxtral` command's entry point: Ctrl-C while the program is still loading exits 130 quietly.

Importing the command line pulls in NumPy, SciPy, PyAV and the model code (a fraction of a second warm,
seconds on a cold disk). A KeyboardInterrupt raised inside an import can surface as a traceback, as an
ImportError from a half-initialised module, or be swallowed by the import machinery; so SIGINT is only
noted while importing, and acted on once the imports are done; and ignored once the command has
returned (its outputs written), so that it cannot turn a finished run into an interrupted one.
"""

from __future__ import annotations

import _signal as signal  # the C module: `signal` imports enum, itself long enough to be interrupted
import sys

EXIT_INTERRUPTED = 130  # 128 + SIGINT (= outputs.EXIT_INTERRUPTED, not imported: this module loads first)


def main() -> None:
    interrupted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        import typer.main

        from .cli import app
        from .cli import main as run

        command = typer.main.get_command(app)  # builds every command's options: also worth protecting
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        sys.stderr.write("voxtral: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    try:
        run(command)
    finally:  # the command is over (its outputs are written): a Ctrl-C now changes nothing
        signal.signal(signal.SIGINT, signal.SIG_IGN)
