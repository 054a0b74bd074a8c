"""The ASGI app of `voxtral serve` (its routes, Bearer key, access log) and the uvicorn runner that drains."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.routing import Route, WebSocketRoute

from ..progress import say
from . import http
from .options import ServeOptions
from .realtime import realtime
from .state import ServerState

access_log = logging.getLogger("voxtral.serve.access")
# python-multipart logs each malformed form as a warning of its own (a parser's message, no request named)
# as well as raising it, which the route answers with a 400 naming the problem: the log line is dropped
for _name in ("python_multipart", "multipart"):  # its module's name since 0.0.13, and before
    logging.getLogger(_name).setLevel(logging.ERROR)


def create_app(model, options: ServeOptions) -> Starlette:
    """The ASGI app serving `model` (loaded with at least options.max_sessions slots)."""
    state = ServerState(model, options)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        state.pump.stop()

    routes = [
        Route("/v1/audio/transcriptions", http.transcriptions, methods=["POST"]),
        Route("/v1/models", http.models, methods=["GET"]),
        Route("/health", http.health, methods=["GET"]),
        Route("/metrics", http.metrics, methods=["GET"]),
        WebSocketRoute("/v1/realtime", realtime),
    ]

    async def routing_error(request, exc: HTTPException):  # no such route (404), a wrong method (405)
        path = request.url.path
        what = {404: f"no route {path}", 405: f"{request.method} is not served at {path}"}
        response = http.error(exc.status_code, what.get(exc.status_code, exc.detail))
        response.headers.update(exc.headers or {})  # 405's Allow
        return response

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: routing_error})
    app.state.voxtral = state
    return _with_auth_and_log(app, state)


def _with_auth_and_log(app, state: ServerState):
    """Bearer key on every HTTP route, one JSON access-log line per request, request counts."""

    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        t0, status = time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        if not http.authorized(state, Headers(scope=scope)):
            response = http.error(401, "missing or wrong API key: send `Authorization: Bearer KEY`")
            await response(scope, receive, send_status)
        else:
            await app(scope, receive, send_status)
        path = scope["path"]
        state.metrics.requests.labels(path if path in _ROUTES else "other", str(status[0])).inc()
        client = scope.get("client") or ("", 0)
        access_log.info(json.dumps({
            "method": scope["method"], "path": path, "status": status[0], "client": client[0],
            "ms": round(1000 * (time.perf_counter() - t0), 1),
        }))  # fmt: skip

    wrapped.state = app.state  # tests and run() reach the ServerState through the app
    return wrapped


_ROUTES = {"/v1/audio/transcriptions", "/v1/models", "/health", "/metrics"}


async def drain(state: ServerState) -> None:
    """Refuse new work, end every realtime utterance (its text and done are sent), wait for uploads
    (those still sending their bodies too), all within options.drain_timeout seconds; what is still open
    then is cut (said on stderr)."""
    state.draining = True
    t0, timeout = time.monotonic(), state.options.drain_timeout
    conns = list(state.connections)
    if conns and timeout > 0:
        await asyncio.wait([asyncio.ensure_future(c.drain()) for c in conns], timeout=timeout)
    while (state.uploads or state.receiving) and time.monotonic() - t0 < timeout:
        await asyncio.sleep(0.05)
    left = len([c for c in state.connections if not c.closed]) + state.uploads + state.receiving
    if left:
        say(f"voxtral: the drain passed --drain-timeout {timeout:g} s: {left} open request(s) cut")
        logging.getLogger("uvicorn.error").addFilter(_cut_quietly)  # that line says it: no traceback


def _cut_quietly(record: logging.LogRecord) -> bool:
    """uvicorn's records of the requests a drain cut (their tasks cancelled at shutdown) are dropped."""
    cut = record.exc_info is not None and isinstance(record.exc_info[1], asyncio.CancelledError)
    return not (cut or record.getMessage().startswith("Cancel "))


def run(
    app, host: str, port: int, log_level: str = "info", on_ready: Callable[[int], None] | None = None
) -> None:
    """Serve `app` with uvicorn until SIGINT/SIGTERM; a signal first drains (see drain), then exits 0; a
    second one exits at once, 128 + its number, whatever runs (open sessions and uploads are cut).
    on_ready: called with the port it listens on (port 0: the one the system gave) once it takes
    connections and the signals are ours."""
    import uvicorn

    class Server(uvicorn.Server):
        """The first SIGINT/SIGTERM drains, then stops the server (exit 0); a second one stops it now."""

        draining = False

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started and on_ready is not None:
                bound = [s.getsockname()[1] for server in self.servers for s in server.sockets]
                on_ready(bound[0] if bound else port)

        def handle_exit(self, sig, frame) -> None:  # a signal handler, in the event loop's thread
            if self.draining or self.should_exit:  # now: uvicorn's own exit would wait for open connections
                say("voxtral: stopped at once (a second signal): open sessions and uploads were cut")
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(128 + sig)
            self.draining = True
            loop = asyncio.get_event_loop()

            def start() -> None:
                task = loop.create_task(drain(app.state.voxtral))
                task.add_done_callback(lambda _: setattr(self, "should_exit", True))

            loop.call_soon_threadsafe(start)

    from uvicorn.config import WS_PROTOCOLS

    ws = "websockets-sansio" if "websockets-sansio" in WS_PROTOCOLS else "auto"  # uvicorn ≥ 0.35 / older
    # after the drain, uvicorn's own shutdown gives what is still open (a body that stopped arriving) a
    # second, not forever
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, ws=ws, lifespan="on", timeout_graceful_shutdown=1
    )
    Server(config).run()
