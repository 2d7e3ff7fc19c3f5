"""``cascade serve --protocol openai-realtime``: any pipeline behind an OpenAI-Realtime socket.

Clients written for the OpenAI Realtime API (the official ``openai`` SDK, or
Cascade's own ``openai-realtime`` fused adapter) talk to a Cascade pipeline
instead: ``AsyncOpenAI(base_url="http://127.0.0.1:8765/v1").realtime.connect(...)``
opens ``ws://127.0.0.1:8765/v1/realtime?model=…``. Each websocket gets its own
``Conversation`` (see ``realtime_session``); the pipeline's models are loaded
once and shared. With a token, clients must send ``Authorization: Bearer TOKEN``;
others are refused with HTTP 401 before the websocket opens.

The protocol subset: client events ``session.update``, ``input_audio_buffer.append``
/ ``commit`` / ``clear``, ``response.create`` / ``cancel``,
``conversation.item.truncate``; audio is PCM16 at 24 kHz (resampled to and from
the pipeline's rate). A malformed or unknown event is answered with an
``error`` event and the connection stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from cascade.config import PipelineConfig
from cascade.conversation import Pipeline
from cascade.errors import CascadeError, MissingDependency
from cascade.servers.connection import announce, closing_line
from cascade.servers.realtime_session import RealtimeSession
from cascade.tracing import MemoryTrace

if TYPE_CHECKING:
    from rich.console import Console
    from websockets.asyncio.server import Server, ServerConnection
    from websockets.http11 import Request, Response

log = logging.getLogger("cascade.realtime")
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
"""The API allows 15 MiB of audio per append, which is ~20 MiB once base64-encoded."""


class RealtimeServer:
    """A websocket server speaking the OpenAI Realtime protocol for one pipeline."""

    def __init__(self, pipeline: Pipeline, *, token: str | None = None,
                 reply_timeout: float = 10.0, lead: float = 0.2,
                 console: Console | None = None) -> None:
        self.pipeline = pipeline
        self.token = token
        self.reply_timeout = reply_timeout
        self.lead = lead
        self.console = console
        self.sessions: set[RealtimeSession] = set()
        self._server: Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise CascadeError("the realtime server is not listening yet: await start() first")
        return int(next(iter(self._server.sockets)).getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        try:
            from websockets.asyncio.server import serve
        except ModuleNotFoundError as exc:
            raise MissingDependency("cascade serve --protocol openai-realtime",
                                    exc.name or "websockets", "realtime") from None
        try:
            self._server = await serve(self._connection, host, port,
                                       process_request=self._admit,
                                       max_size=MAX_MESSAGE_BYTES, compression=None)
        except OSError as exc:
            raise CascadeError(f"cannot listen on {host}:{port}: {exc.strerror}; choose "
                               "another --port or stop what is using it") from None

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        """Route and authenticate the HTTP upgrade, before the websocket opens."""
        path = request.path.partition("?")[0].rstrip("/")
        if not path.endswith("/realtime"):
            return connection.respond(HTTPStatus.NOT_FOUND, "this server speaks the OpenAI "
                                      "Realtime protocol at /v1/realtime\n")
        if self.token is not None:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                    given.strip().encode(), self.token.encode()):
                return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token: "
                                          "send the header 'Authorization: Bearer TOKEN'\n")
        return None

    async def _connection(self, websocket: ServerConnection) -> None:
        from websockets.exceptions import ConnectionClosed

        query = parse_qs(websocket.request.path.partition("?")[2] if websocket.request else "")
        trace = MemoryTrace()
        session = RealtimeSession(self.pipeline, websocket.send,
                                  model=query.get("model", [""])[0],
                                  reply_timeout=self.reply_timeout, lead=self.lead,
                                  traces=[trace])
        self.sessions.add(session)
        self._say(f"session {session.settings.id} opened from {websocket.remote_address}")
        failure: str | None = None
        try:
            await session.start()
            async for message in websocket:
                await session.handle(message)
        except ConnectionClosed:
            pass
        except CascadeError as exc:  # the pipeline could not start (a stage's setup failed)
            failure = str(exc)
            log.error("session %s: %s", session.settings.id, failure)
            session.report(exc)
        finally:
            self.sessions.discard(session)
            await session.close()
            if failure is not None:
                await websocket.close(1011, failure[:100])
            self._say(closing_line(f"session {session.settings.id}", trace.spans))

    def _say(self, line: str) -> None:
        announce(log, self.console, line)


async def start_server(config: PipelineConfig | Pipeline, host: str = "127.0.0.1",
                       port: int = 0, token: str | None = None, *, reply_timeout: float = 10.0,
                       lead: float = 0.2, console: Console | None = None) -> RealtimeServer:
    """Load the pipeline's models and start listening (``port=0``: any free port)."""
    pipeline = config if isinstance(config, Pipeline) else Pipeline(config)
    await asyncio.to_thread(pipeline.preload)
    server = RealtimeServer(pipeline, token=token, reply_timeout=reply_timeout, lead=lead,
                            console=console)
    await server.start(host, port)
    return server


def serve(config: PipelineConfig, *, host: str, port: int, token: str | None,
          console: Console | None) -> None:
    """Serve until interrupted (Ctrl-C); the ``cascade serve`` entry point."""

    from cascade.run_command import freeze_heap

    async def main() -> None:
        server = await start_server(config, host, port, token, console=console)
        freeze_heap()  # models are in: collections now skip them
        where = f"{host}:{server.port}"
        if console is not None:
            console.print(f"pipeline '{config.name}' speaks the OpenAI Realtime protocol on "
                          f"ws://{where}/v1/realtime", highlight=False, soft_wrap=True)
            key = "TOKEN" if token else "'unused'"
            console.print(f"  e.g. AsyncOpenAI(base_url='http://{where}/v1', api_key={key})"
                          ".realtime.connect(model='cascade')", highlight=False, soft_wrap=True)
        try:
            await server.serve_forever()
        finally:
            await server.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
