"""Errors a user can meet. Each message says what went wrong and what to do.

The CLI turns any `VoxtralError` into one line on stderr and a non-zero exit code;
anything else is a bug and keeps its traceback.
"""


class VoxtralError(Exception):
    """Base class: a problem with the user's input, files or machine, not a bug."""

    exit_code = 1


class AudioError(VoxtralError):
    """Audio that cannot be read or used (missing, unreadable, empty, non-finite, bad rate)."""

    exit_code = 3


class CheckpointError(VoxtralError):
    """A model directory or Hub id that cannot be used (missing file, bad tensor, bad params.json)."""

    exit_code = 4


class ConfigError(CheckpointError):
    """params.json or tekken.json is malformed or lacks a required key."""


class DeviceError(VoxtralError):
    """The requested device cannot be used (no GPU, no CuPy)."""

    exit_code = 5


class OptionError(VoxtralError):
    """An option outside its allowed range (e.g. delay_ms)."""

    exit_code = 2


class OutputError(VoxtralError):
    """An output file that cannot be written, or exists already without --overwrite."""

    exit_code = 6


class SessionError(VoxtralError):
    """A live session that is full, closed, finished or expired (idle too long)."""

    exit_code = 7


class ServeError(VoxtralError):
    """`voxtral serve` cannot start: its address cannot be bound."""

    exit_code = 8
