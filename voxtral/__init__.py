"""voxtral: speech to text with Mistral's Voxtral Mini 4B Realtime on NVIDIA GPUs (CuPy) or the CPU."""

TYPE_CHECKING = False  # as typing's (type checkers read it as True), without importing typing at start-up
if TYPE_CHECKING:
    from .api import Model, Trace, load
    from .checkpoint import DEFAULT_MODEL
    from .errors import (
        AudioError,
        CheckpointError,
        ConfigError,
        DeviceError,
        OptionError,
        SessionError,
        VoxtralError,
    )
    from .stream import Piece, Session
    from .transcript import Segment, Transcript, Word

# The public names, imported on first use (PEP 562): `import voxtral` stays cheap, so the command line
# can take over Ctrl-C before NumPy and the model code load (voxtral/entry.py).
_HOMES = {
    "Model": "api", "Trace": "api", "load": "api", "DEFAULT_MODEL": "checkpoint",
    "AudioError": "errors", "CheckpointError": "errors", "ConfigError": "errors", "DeviceError": "errors",
    "OptionError": "errors", "SessionError": "errors", "VoxtralError": "errors",
    "Piece": "stream", "Session": "stream", "Segment": "transcript", "Transcript": "transcript",
    "Word": "transcript",
}  # fmt: skip


def __getattr__(name: str):
    import importlib

    if name in _HOMES:
        value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
        globals()[name] = value
        return value
    try:  # a submodule not imported yet (`voxtral.api` after a bare `import voxtral`)
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module 'voxtral' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


__version__ = "0.1.0"
__all__ = [
    "DEFAULT_MODEL",
    "AudioError",
    "CheckpointError",
    "ConfigError",
    "DeviceError",
    "Model",
    "OptionError",
    "Piece",
    "Segment",
    "Session",
    "SessionError",
    "Trace",
    "Transcript",
    "VoxtralError",
    "Word",
    "load",
]
