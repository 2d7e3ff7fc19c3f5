"""Local servers that replay recorded vendor protocol exchanges (tests/vendors/fixtures)
and record what the client sent, so a test can check both directions."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.vendors.servers import free_port

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return loaded


@dataclass
class Seen:
    """What the client sent: request line, headers, body or messages, and any mismatch."""

    path: str = ""
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    audio_bytes: int = 0
    messages: list[Any] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class ElevenLabsReplay:
    """Answers one recorded ElevenLabs request; anything else is a 400 naming the mismatch."""

    def __init__(self, name: str) -> None:
        self.recorded = fixture(name)
        self.seen: list[Seen] = []
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> Response:
        want = self.recorded["request"]
        seen = Seen(request.url.path, dict(request.query_params), dict(request.headers),
                    await request.json())
        self.seen.append(seen)
        for key, value in [("path", want["path"]), ("query", want["query"]),
                           ("body", want["json"])]:
            if getattr(seen, key) != value:
                seen.problems.append(f"{key}: {getattr(seen, key)!r} != {value!r}")
        if "xi-api-key" not in seen.headers:
            seen.problems.append("no xi-api-key header")
        if seen.problems:
            return JSONResponse({"detail": seen.problems}, status_code=400)
        answer = self.recorded["response"]
        if "body" in answer:
            return JSONResponse(answer["body"], status_code=answer["status"])
        return StreamingResponse(self._chunks(answer["chunks_base64"]), answer["status"],
                                 media_type=answer["headers"]["content-type"])

    @staticmethod
    async def _chunks(chunks: list[str]) -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield base64.b64decode(chunk)


class DeepgramReplay:
    """A websocket server that plays one recorded /v1/listen exchange per connection."""

    def __init__(self, name: str) -> None:
        self.recorded = fixture(name)
        self.seen: list[Seen] = []

    def _check_request(self, connection: Any, request: Any) -> Any:
        url = urlsplit(request.path)
        seen = Seen(url.path, dict(parse_qsl(url.query)),
                    {k.lower(): v for k, v in request.headers.raw_items()})
        self.seen.append(seen)
        want = self.recorded["request"]
        if seen.path != want["path"] or seen.query != want["query"]:
            seen.problems.append(f"request {seen.path} {seen.query} != {want}")
        if not seen.headers.get("authorization", "").startswith("Token "):
            seen.problems.append("no 'Authorization: Token ...' header")
        reject = self.recorded.get("reject")
        if reject or seen.problems:
            status = reject["status"] if reject else 400
            body = json.dumps(reject["body"] if reject else seen.problems)
            response = connection.respond(status, body)
            return response
        return None

    def _handle(self, socket: Any) -> None:
        seen = self.seen[-1]
        pending: Any = None
        for step in self.recorded["exchange"]:
            if step.get("client") == "audio":
                while isinstance(message := socket.recv(), bytes):
                    seen.audio_bytes += len(message)
                pending = json.loads(message)
                seen.messages.append(pending)
            elif "client" in step:
                if pending is None:
                    pending = json.loads(socket.recv())
                    seen.messages.append(pending)
                if pending != step["client"]:
                    seen.problems.append(f"expected {step['client']}, got {pending}")
                    socket.close(1008, "unexpected message")
                    return
                pending = None
            elif "server" in step:
                socket.send(json.dumps(step["server"]))
            elif "close" in step:
                socket.close(step["close"])
                return

    @contextlib.contextmanager
    def serving(self) -> Iterator[str]:
        """Serve on a free port in a thread; yields the ws:// base URL (…/v1)."""
        from websockets.sync.server import serve

        port = free_port()
        with serve(self._handle, "127.0.0.1", port,
                   process_request=self._check_request) as server:
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            try:
                yield f"ws://127.0.0.1:{port}/v1"
            finally:
                server.shutdown()
                thread.join(5)
