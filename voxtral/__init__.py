"""voxtral: speech to text with Mistral's Voxtral Mini 4B Realtime on NVIDIA GPUs (CuPy) or the CPU."""

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
