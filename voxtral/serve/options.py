"""The settings and limits of `voxtral serve` (no dependencies: the command line reads its defaults here)."""

from __future__ import annotations

from dataclasses import dataclass

MAX_SESSIONS = 32
MAX_QUEUE = 64
MAX_UPLOAD_MB = 100.0
MAX_AUDIO_S = 3600.0
MAX_BACKLOG_S = 30.0  # a realtime client this far ahead of the engine is not read from until it catches up
DRAIN_TIMEOUT_S = 60.0  # seconds (--drain-timeout)
IDLE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ServeOptions:
    """The limits and settings of one server (see `voxtral serve --help`)."""

    model_id: str  # the name /v1/models reports and responses echo
    max_sessions: int = MAX_SESSIONS  # uploads and realtime sessions running at once
    max_queue: int = MAX_QUEUE  # uploads waiting for a place; more get 503
    api_key: str | None = None  # required as `Authorization: Bearer KEY` on every route when set
    max_upload_mb: float = MAX_UPLOAD_MB
    max_audio_s: float = MAX_AUDIO_S  # longest upload or realtime session, seconds of audio
    idle_timeout: float = IDLE_TIMEOUT_S  # a realtime session not fed this long is closed
    drain_timeout: float = DRAIN_TIMEOUT_S  # longest a SIGTERM waits for open work before it is cut
