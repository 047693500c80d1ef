"""The dashboard's read-only HTTP server: starlette on uvicorn, in a background thread.

Routes (GET only; the page has no write actions):

    /               the page (static/index.html)
    /static/...     its script, style and the vendored cytoscape.js and uPlot
    /events         server-sent events from the hub (meta, then coalesced updates, then end)
    /api/meta       the runs' descriptions (graph, retentions, labels, settings)
    /api/snapshot   everything the hub holds, as one JSON document

The socket is bound before the server thread starts, so a port in use is an error the caller
sees (``DashboardError``, one line naming the port) before any node is started.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcepl.launcher.dashboard.hub import EventHub

STATIC = Path(__file__).with_name("static")
DEFAULT_PORT = 8050
PORT_TRIES = 20  # without an explicit port: DEFAULT_PORT, or the next free one up to +19
# everything from this server, nothing from elsewhere (the page works offline)
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'")


class DashboardError(RuntimeError):
    """The dashboard cannot start (port in use, bad address); one line."""


def create_app(hub: EventHub) -> Starlette:
    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def meta(request: Request) -> Response:
        return JSONResponse(hub.meta())

    async def snapshot(request: Request) -> Response:
        return JSONResponse(hub.snapshot())

    async def events(request: Request) -> Response:
        return StreamingResponse(hub.stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    return Starlette(routes=[
        Route("/", index), Route("/events", events), Route("/api/meta", meta),
        Route("/api/snapshot", snapshot),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ], middleware=[Middleware(SecurityHeaders)])


class SecurityHeaders:
    """Adds the content security policy (nothing from elsewhere) to every response; a plain
    ASGI middleware, so the event stream is passed through unbuffered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = CSP
                headers["X-Content-Type-Options"] = "nosniff"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def bind_socket(host: str, port: int | None) -> socket.socket:
    """A listening socket on host:port; with port None, DEFAULT_PORT or the next free one."""
    tries = [port] if port is not None else list(range(DEFAULT_PORT, DEFAULT_PORT + PORT_TRIES))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    last: OSError | None = None
    for p in tries:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, p))
            sock.listen(64)
        except OSError as exc:
            sock.close()
            last = exc
            if exc.errno == errno.EADDRINUSE:
                continue
            raise DashboardError(f"dashboard: cannot listen on {host}:{p}: "
                                 f"{exc.strerror or exc}") from None
        sock.set_inheritable(False)
        return sock
    if port is not None:
        raise DashboardError(f"dashboard: port {port} on {host} is in use "
                             "(choose another port)")
    raise DashboardError(f"dashboard: ports {tries[0]}-{tries[-1]} on {host} are all in use "
                         f"(give a port)") from last


class DashboardServer:
    """Serves ``hub`` on host:port from a daemon thread until ``stop``."""

    def __init__(self, hub: EventHub, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.hub, self.host = hub, host
        self.sock = bind_socket(host, port)
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(create_app(hub), log_level="warning", lifespan="off",
                                access_log=False, timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if self.host == "0.0.0.0" else "[::1]"
        return f"http://{host}:{self.port}/"

    def start(self) -> DashboardServer:
        # uvicorn logs "Uvicorn running on ..." at INFO; the CLI prints its own line
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self.sock]},
                                        name="mcepl-dashboard", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive() \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise DashboardError(f"dashboard: the server on {self.url} did not start")
        return self

    def stop(self, drain_s: float = 1.0) -> None:
        """Close the hub (open pages get their last update and an end event), then stop."""
        self.hub.close()
        time.sleep(min(drain_s, 2 * self.hub.interval_s + 0.1) if drain_s > 0 else 0)
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sock.close()

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
