"""``cascade serve`` (protocol ``browser``): a voice page for any pipeline, in the browser.

A Starlette app served by uvicorn: ``GET /`` is the page (plain HTML and JS
under ``static/``, an AudioWorklet captures the microphone and plays the agent),
``/ws`` is one websocket per conversation carrying audio both ways and JSON
events (see ``browser_session`` for the wire). The pipeline's models are loaded
once and shared by every connection. With a token (required by the CLI when
bound to a non-loopback address), the page and the websocket both need
``?token=TOKEN`` (or ``Authorization: Bearer TOKEN``); the websocket also
refuses pages from another origin, so a site the user visits cannot drive the
agent through their browser.

Echo: the page asks the browser for its own echo cancellation
(``getUserMedia`` with ``echoCancellation``); with loudspeakers, push-to-talk
(or headphones) keeps the agent from hearing itself. The server adds no echo
stage of its own.

Starlette and uvicorn are the ``[web]`` extra, imported when the server starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cascade.config import PipelineConfig
from cascade.conversation import Pipeline
from cascade.errors import CascadeError, MissingDependency
from cascade.servers.browser_session import BrowserSession
from cascade.servers.connection import announce, closing_line

if TYPE_CHECKING:
    import uvicorn
    from rich.console import Console
    from starlette.applications import Starlette
    from starlette.requests import HTTPConnection, Request
    from starlette.responses import Response
    from starlette.websockets import WebSocket

log = logging.getLogger("cascade.browser")
STATIC = Path(str(files("cascade.servers").joinpath("static")))
POLICY_VIOLATION = 1008
MAX_SESSIONS = 8


def _web() -> None:
    """Fail early, naming the extra, when Starlette or uvicorn is missing."""
    for module in ("starlette", "uvicorn"):
        try:
            __import__(module)
        except ModuleNotFoundError:
            raise MissingDependency("cascade serve --protocol browser", module, "web") from None


def token_ok(conn: HTTPConnection, token: str | None) -> bool:
    """True when no token is required, or the query or the header carries it."""
    if token is None:
        return True
    given = conn.query_params.get("token", "")
    scheme, _, bearer = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and not given:
        given = bearer.strip()
    return hmac.compare_digest(given.encode(), token.encode())


def same_origin(conn: HTTPConnection) -> bool:
    """A websocket opened by a page from this server (or by a non-browser client)."""
    origin = conn.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == conn.headers.get("host", "").lower()


class BrowserServer:
    """The voice page and its websocket for one pipeline."""

    def __init__(self, pipeline: Pipeline, *, token: str | None = None, lead: float = 0.15,
                 max_sessions: int = MAX_SESSIONS, console: Console | None = None) -> None:
        _web()
        self.pipeline = pipeline
        self.token = token
        self.lead = lead
        self.max_sessions = max_sessions
        self.console = console
        self.sessions: set[BrowserSession] = set()
        self.app = self._build()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    def _build(self) -> Starlette:
        from starlette.applications import Starlette
        from starlette.routing import Mount, Route, WebSocketRoute
        from starlette.staticfiles import StaticFiles

        return Starlette(routes=[
            Route("/", self._page),
            WebSocketRoute("/ws", self._socket_endpoint),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ])

    async def _page(self, request: Request) -> Response:
        from starlette.responses import HTMLResponse, PlainTextResponse

        if not token_ok(request, self.token):
            return PlainTextResponse("this Cascade server needs its token: open "
                                     "/?token=TOKEN\n", status_code=401)
        html = (STATIC / "index.html").read_text(encoding="utf-8")
        html = html.replace("{{pipeline}}", self.pipeline.config.name)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def _socket_endpoint(self, websocket: WebSocket) -> None:
        from starlette.websockets import WebSocketDisconnect

        if not token_ok(websocket, self.token) or not same_origin(websocket):
            await websocket.close(code=POLICY_VIOLATION)  # before accept: HTTP 403
            return
        await websocket.accept()
        if len(self.sessions) >= self.max_sessions:
            await websocket.close(code=1013, reason="too many conversations; try later")
            return
        session: BrowserSession | None = None
        try:
            hello = json.loads(await websocket.receive_text())
            rate = int(hello.get("sample_rate", 0)) if isinstance(hello, dict) else 0
            session = BrowserSession(self.pipeline, _sender(websocket),
                                     client_rate=rate, lead=self.lead)
        except (ValueError, TypeError, KeyError) as exc:
            await websocket.close(code=POLICY_VIOLATION,
                                  reason=f"first message must be hello: {exc}"[:120])
            return
        except WebSocketDisconnect:
            return
        self.sessions.add(session)
        self._say(f"conversation {session.id} opened from {_peer(websocket)}")
        try:
            await session.start()
            await self._converse(websocket, session)
        except WebSocketDisconnect:
            pass
        except CascadeError as exc:
            log.error("conversation %s: %s", session.id, exc)
            with contextlib.suppress(Exception):
                await websocket.close(code=1011, reason=str(exc)[:120])
        finally:
            self.sessions.discard(session)
            await session.close()
            self._closed(session)

    async def _converse(self, websocket: WebSocket, session: BrowserSession) -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is not None:
                session.audio(data)
                continue
            try:
                event = json.loads(message.get("text") or "")
            except ValueError:
                event = None
            if isinstance(event, dict):
                await session.command(event)

    def _closed(self, session: BrowserSession) -> None:
        self._say(closing_line(f"conversation {session.id}", session.relay.spans,
                               session.dropped))

    def _say(self, line: str) -> None:
        announce(log, self.console, line)

    # --- running ----------------------------------------------------------------------

    def listen(self, host: str, port: int) -> socket.socket:
        """Bind now, so a busy port is a clear error rather than a log line."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.create_server((host, port), family=family)
        except OSError as exc:
            raise CascadeError(f"cannot listen on {host}:{port}: {exc.strerror}; choose "
                               "another --port or stop what is using it") from None
        self._socket = sock
        return sock

    @property
    def port(self) -> int:
        if self._socket is None:
            raise CascadeError("the browser server is not listening yet: call listen() first")
        return int(self._socket.getsockname()[1])

    def _uvicorn(self) -> uvicorn.Server:
        import uvicorn

        config = uvicorn.Config(self.app, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=2, ws_per_message_deflate=False)
        self._server = uvicorn.Server(config)
        return self._server

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve in the running event loop (tests, embedding); ``close`` stops it."""
        sock = self.listen(host, port)
        server = self._uvicorn()
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                await self._task  # raises what stopped it
                raise CascadeError("the browser server stopped while starting")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            await self._task

    def run(self, sock: socket.socket) -> None:
        """Serve on ``sock`` (from ``listen``) until Ctrl-C or SIGTERM (uvicorn's handling)."""
        with contextlib.suppress(KeyboardInterrupt):
            self._uvicorn().run(sockets=[sock])


def _sender(websocket: WebSocket) -> Any:
    async def send(message: str | bytes) -> None:
        if isinstance(message, bytes):
            await websocket.send_bytes(message)
        else:
            await websocket.send_text(message)
    return send


def _peer(websocket: WebSocket) -> str:
    client = websocket.client
    return f"{client.host}:{client.port}" if client is not None else "an unknown peer"


def page_url(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def serve(config: PipelineConfig, *, host: str, port: int, token: str | None,
          console: Console | None) -> None:
    """The ``cascade serve --protocol browser`` entry point: load models, serve the page."""
    from cascade.run_command import load_for_serving

    pipeline = Pipeline(config)
    server = BrowserServer(pipeline, token=token, console=console)
    sock = server.listen(host, port)  # a busy port fails before minutes of model loading
    load_for_serving(pipeline, console)
    if console is not None:
        console.print(f"pipeline '{config.name}' talks on "
                      f"{page_url(host, server.port, token)} — open it in a browser; "
                      "Ctrl-C stops", highlight=False, soft_wrap=True)
    server.run(sock)
