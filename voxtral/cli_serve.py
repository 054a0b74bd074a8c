"""`voxtral serve`: the model behind OpenAI-compatible HTTP and a vLLM-compatible realtime websocket.

Exit codes: 0 after SIGINT/SIGTERM (open sessions drained first), 128 + the signal's number after a second
one (130 or 143: stopped at once, open work cut), 2 for a bad option or a missing `serve` extra, the
load's code (4 checkpoint, 5 device) when the model cannot be loaded, 8 when the address cannot be bound.
"""

from __future__ import annotations

import errno
import logging
import socket
from pathlib import Path
from typing import Annotated

import typer

from .checkpoint import DEFAULT_MODEL
from .cli import (
    EXIT_INTERRUPTED,
    DelayOpt,
    DeviceOpt,
    ModelOpt,
    QuietOpt,
    VerboseOpt,
    _check_device_and_delay,
    _exit_on,
    _load,
    _setup_logging,
    _stop_said,
    app,
)
from .config import MAX_CAPACITY
from .errors import OptionError, ServeError, VoxtralError
from .outputs import EXIT_TERMINATED, Terminated
from .progress import say
from .serve.options import (
    DRAIN_TIMEOUT_S,
    IDLE_TIMEOUT_S,
    MAX_AUDIO_S,
    MAX_QUEUE,
    MAX_SESSIONS,
    MAX_UPLOAD_MB,
    ServeOptions,
)

SERVE_HINT = "the server needs the `serve` extra: pip install 'voxtral[serve]'"


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", metavar="ADDR", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="N", help="TCP port.")] = 8000,
    model: ModelOpt = DEFAULT_MODEL,
    device: DeviceOpt = "auto",
    delay_ms: DelayOpt = None,
    max_sessions: Annotated[
        int,
        typer.Option("--max-sessions", metavar="N", help="Uploads and realtime sessions running at once."),
    ] = MAX_SESSIONS,
    max_queue: Annotated[
        int, typer.Option("--max-queue", metavar="N", help="Uploads waiting for a place; more get 503.")
    ] = MAX_QUEUE,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            metavar="KEY",
            envvar="VOXTRAL_API_KEY",
            help="Require `Authorization: Bearer KEY` (or $VOXTRAL_API_KEY).",
        ),
    ] = None,
    max_upload_mb: Annotated[
        float, typer.Option("--max-upload-mb", metavar="MB", help="Largest upload.")
    ] = MAX_UPLOAD_MB,
    max_audio_s: Annotated[
        float,
        typer.Option("--max-audio-s", metavar="S", help="Longest audio of an upload or a realtime session."),
    ] = MAX_AUDIO_S,
    idle_timeout: Annotated[
        float, typer.Option("--idle-timeout", metavar="S", help="Close a realtime session not fed this long.")
    ] = IDLE_TIMEOUT_S,
    drain_timeout: Annotated[
        float,
        typer.Option(
            "--drain-timeout",
            metavar="S",
            help="On SIGINT/SIGTERM, wait this long at most for open sessions and uploads, then cut them.",
        ),
    ] = DRAIN_TIMEOUT_S,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Serve the model: OpenAI's /v1/audio/transcriptions over HTTP, a realtime websocket at /v1/realtime."""
    _setup_logging(verbose, quiet)
    try:
        limits = (max_upload_mb, max_audio_s, idle_timeout, drain_timeout)
        options = _options(model, max_sessions, max_queue, api_key, *limits)
        _check_device_and_delay(device, delay_ms)
        _check_port(host, port)
    except VoxtralError as e:
        raise _exit_on(e) from None
    from .serve.app import create_app, run

    m = _load(model, device, delay_ms, quiet, verbose, max_sessions, interrupted="the server did not start")
    _prepare(m)
    where = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL

    def ready(bound: int) -> None:  # once it listens (port 0: the one it got); a signal after it drains
        key = ", API key required" if api_key else ""
        say(
            f"voxtral: serving {m.checkpoint.directory} on {m.device} at http://{where}:{bound} "
            f"({max_sessions} session{'' if max_sessions == 1 else 's'}, delay {m.schedule.delay_ms} ms{key})"
        )

    logging.getLogger("voxtral.serve.access").setLevel(logging.INFO if verbose else logging.WARNING)
    # the serving line also with -q: it is neither progress nor a timing, and with --port 0 it is the one
    # place that names the port
    run(create_app(m, options), host, port, log_level="info" if verbose else "warning", on_ready=ready)


def _prepare(m) -> None:
    """Before the first request: every CUDA graph a request could need is captured (else the first live
    tick of each batch size stalls every session ~0.1–0.2 s). (_load has frozen what loading made out of
    the garbage collector's full passes; the graphs add few objects.)"""
    try:
        m.engine.warm_up()
    except VoxtralError as e:
        raise _exit_on(e) from None
    except KeyboardInterrupt:
        _stop_said("interrupted (Ctrl-C) before the server started")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Terminated:
        _stop_said("terminated (SIGTERM) before the server started")
        raise typer.Exit(EXIT_TERMINATED) from None


def _options(
    model, max_sessions, max_queue, api_key, max_upload_mb, max_audio_s, idle_timeout, drain_timeout
):
    try:
        from .serve import app as _  # noqa: F401  (Starlette, uvicorn, … are there)
    except ImportError as e:
        raise OptionError(f"{SERVE_HINT} ({e.name} is missing)") from None
    if not 1 <= max_sessions <= MAX_CAPACITY:
        raise OptionError(f"--max-sessions must be from 1 to {MAX_CAPACITY}, got {max_sessions}")
    if max_queue < 0:
        raise OptionError(f"--max-queue must be ≥ 0, got {max_queue}")
    for name, value in (
        ("--max-upload-mb", max_upload_mb),
        ("--max-audio-s", max_audio_s),
        ("--idle-timeout", idle_timeout),
    ):
        if not value > 0:
            raise OptionError(f"{name} must be a positive number, got {value:g}")
    if not drain_timeout >= 0:
        raise OptionError(f"--drain-timeout must be ≥ 0, got {drain_timeout:g}")
    if api_key is not None and not api_key.strip():
        raise OptionError("--api-key must not be empty")
    model_id = Path(model).name if Path(model).exists() else model
    return ServeOptions(
        model_id=model_id, max_sessions=max_sessions, max_queue=max_queue, api_key=api_key,
        max_upload_mb=max_upload_mb, max_audio_s=max_audio_s, idle_timeout=idle_timeout,
        drain_timeout=drain_timeout,
    )  # fmt: skip


def _check_port(host: str, port: int) -> None:
    """Bind once before loading the model: a taken port fails in a second, not after the load."""
    if not 0 <= port <= 65535:
        raise OptionError(f"--port must be in 0 … 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise OptionError(f"--host {host!r}: {e.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            why = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be bound ({e.strerror})"
            fix = "pick another with --port"
            if e.errno == errno.EADDRNOTAVAIL:  # not an address of this machine: the host is wrong
                fix = "pass an address of this machine with --host"
            raise ServeError(f"{host}:{port} {why}; {fix}") from None
