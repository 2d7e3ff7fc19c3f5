"""Local servers that replay recorded vendor protocol exchanges (tests/vendors/fixtures)
and record what the client sent, so a test can check both directions."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
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
    order: list[str] = field(default_factory=list)
    """Websocket messages in order: "audio" (a run of them) or the control message type."""
    ended: str = ""
    """How a websocket ended: "CloseStream", "fault", "idle", "client closed", ..."""


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


LISTEN_OPTIONS = ("interim_results", "endpointing")
"""Query parameters deepgram-asr sends only when asked to: the replay accepts them."""
FAULTS = ("drop-mid-audio", "drop-at-finalize", "malformed-at-finalize",
          "unanswered-then-drop")
SERVER_LOG = logging.getLogger("tests.vendors.replay")
SERVER_LOG.setLevel(logging.INFO)  # websockets logs the headers it receives at DEBUG


@dataclass
class Turn:
    """One Finalize-delimited stretch of a live stream, as the replay answers it."""

    offset: float  # stream seconds before it
    audio: float = 0.0  # seconds of audio in it
    sent: int = 0  # results recorded before the Finalize already sent
    sent_end: float = 0.0  # recorded time those cover


class DeepgramReplay:
    """A websocket server speaking Deepgram's live protocol from one recorded exchange.

    The recording holds one utterance: the results sent while its audio streamed,
    the client's Finalize, the flush's results, then CloseStream, Metadata and the
    close. Every Finalize-delimited stretch of audio on a connection (a turn) gets
    that utterance retimed to it, as the service would answer: results recorded
    before the Finalize go out once the turn's audio reaches their end (interim
    ones only with ``interim_results=true``), the rest at the Finalize, all moved
    to the turn's place in the stream and stretched to end with its audio.

    Per connection, ``Seen`` records the audio, the control messages, their
    ``order`` and how it ``ended``; an exception in the handler (such as the
    client closing before the Metadata) lands in ``problems``. ``idle_timeout``
    closes a quiet socket as the service does (NET-0001); ``faults`` gives the
    connections, in order, one of ``FAULTS`` each ("" for none);
    ``metadata_delay`` holds the closing Metadata back that many seconds.
    """

    def __init__(self, name: str, faults: Sequence[str] = (),
                 idle_timeout: float | None = None, metadata_delay: float = 0.0) -> None:
        self.recorded = fixture(name)
        self.faults = list(faults)
        assert set(self.faults) <= {"", *FAULTS}, self.faults
        self.idle_timeout = idle_timeout
        self.metadata_delay = metadata_delay
        self.seen: list[Seen] = []
        self._by_connection: dict[int, tuple[Seen, str]] = {}
        self._heard = threading.Condition()  # audio arrived, or a connection ended
        self._handlers = 0
        steps = self.recorded.get("exchange", [])
        finalize = steps.index({"client": {"type": "Finalize"}}) if steps else 0
        close = steps.index({"client": {"type": "CloseStream"}}) if steps else 0
        self.streaming = [s["server"] for s in steps[:finalize] if "server" in s]
        self.flush = [s["server"] for s in steps[finalize:close] if "server" in s]
        self.closing = [s["server"] for s in steps[close:] if "server" in s]
        self.length = max((_end(r) for r in self.streaming + self.flush), default=0.0)

    def wait_for_audio(self, size: int, timeout: float) -> bool:
        """Block until the connections got ``size`` bytes of audio in all (False: timed out)."""
        with self._heard:
            return self._heard.wait_for(
                lambda: sum(s.audio_bytes for s in self.seen) >= size, timeout)

    def _check_request(self, connection: Any, request: Any) -> Any:
        url = urlsplit(request.path)
        seen = Seen(url.path, dict(parse_qsl(url.query)),
                    {k.lower(): v for k, v in request.headers.raw_items()})
        index = len(self.seen)
        self.seen.append(seen)
        self._by_connection[id(connection)] = (
            seen, self.faults[index] if index < len(self.faults) else "")
        want = self.recorded["request"]
        asked = {k: v for k, v in seen.query.items() if k not in LISTEN_OPTIONS}
        if seen.path != want["path"] or asked != want["query"]:
            seen.problems.append(f"request {seen.path} {seen.query} != {want}")
        if not seen.headers.get("authorization", "").startswith("Token "):
            seen.problems.append("no 'Authorization: Token ...' header")
        reject = self.recorded.get("reject")
        if reject or seen.problems:
            status = reject["status"] if reject else 400
            body = json.dumps(reject["body"] if reject else seen.problems)
            return connection.respond(status, body)
        return None

    def _handle(self, socket: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        seen, fault = self._by_connection[id(socket)]
        with self._heard:
            self._handlers += 1
        try:
            seen.ended = self._converse(socket, seen, fault)
        except ConnectionClosed as exc:
            seen.ended = "client closed"
            seen.problems.append(f"the client closed the connection ({exc})")
        except Exception as exc:  # a test reads it from seen.problems
            seen.ended = "error"
            seen.problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            with self._heard:
                self._handlers -= 1
                self._heard.notify_all()

    def _converse(self, socket: Any, seen: Seen, fault: str) -> str:
        """Answer until the stream ends; returns how it ended."""
        rate = int(seen.query.get("sample_rate", "16000"))
        interims = seen.query.get("interim_results") == "true"
        streaming = [r for r in self.streaming if interims or r.get("is_final")]
        turn, total = Turn(0.0), 0.0
        while True:
            try:
                message = socket.recv(timeout=self.idle_timeout)
            except TimeoutError:
                socket.close(1011, "NET-0001: no audio or text message within the "
                             "timeout window")
                return "idle"
            if isinstance(message, bytes):
                self._note(seen, "audio", audio=len(message))
                turn.audio += len(message) / 2 / rate
                total += len(message) / 2 / rate
                if fault == "drop-at-audio" or (fault == "drop-mid-audio" and turn.audio >= 0.5):
                    socket.close(1011, "injected fault")
                    return "fault"
                while turn.sent < len(streaming) and _end(streaming[turn.sent]) <= turn.audio:
                    socket.send(json.dumps(_retimed(streaming[turn.sent], turn.offset)))
                    turn.sent_end = _end(streaming[turn.sent])
                    turn.sent += 1
                continue
            control = json.loads(message)
            seen.messages.append(control)
            kind = control.get("type")
            self._note(seen, kind)
            if kind == "Finalize":
                if fault == "unanswered-then-drop":  # no results; a drop at the next audio
                    turn, fault = Turn(turn.offset + turn.audio), "drop-at-audio"
                    continue
                if fault == "drop-at-finalize":
                    socket.close(1011, "injected fault")
                    return "fault"
                if fault == "malformed-at-finalize":
                    socket.send("{not json")
                    fault = ""
                    continue
                done = turn.sent_end
                span = self.length - done
                scale = (turn.audio - done) / span if span > 0 else 1.0
                for result in streaming[turn.sent :] + self.flush:
                    socket.send(json.dumps(_retimed(result, turn.offset, done, scale)))
                turn = Turn(turn.offset + turn.audio)
            elif kind == "CloseStream":
                time.sleep(self.metadata_delay)
                for reply in self.closing:  # the Metadata
                    socket.send(json.dumps({**reply, "duration": round(total, 3)}))
                socket.close(1000)
                if socket.protocol.close_rcvd_then_sent:
                    seen.problems.append("the client closed before the service did")
                return "CloseStream"
            elif kind != "KeepAlive":
                seen.problems.append(f"unexpected message {control}")
                socket.close(1008, "unexpected message")
                return "unexpected message"

    def _note(self, seen: Seen, what: str, audio: int = 0) -> None:
        if not (seen.order and seen.order[-1] == what == "audio"):
            seen.order.append(what)
        if audio:
            with self._heard:
                seen.audio_bytes += audio
                self._heard.notify_all()

    @contextlib.contextmanager
    def serving(self) -> Iterator[str]:
        """Serve on a free port in a thread; yields the ws:// base URL (…/v1)."""
        from websockets.sync.server import serve

        port = free_port()
        # max_queue=None: a handler that stops reading (an injected drop) still gets the
        # client's closing frame behind the audio it left unread.
        with serve(self._handle, "127.0.0.1", port, max_queue=None, logger=SERVER_LOG,
                   process_request=self._check_request) as server:
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            try:
                yield f"ws://127.0.0.1:{port}/v1"
            finally:
                with self._heard:  # let the connections finish what they were saying
                    self._heard.wait_for(lambda: not self._handlers, 5.0)
                server.shutdown()
                thread.join(5)


def _end(result: dict[str, Any]) -> float:
    return float(result["start"]) + float(result["duration"])


def _retimed(result: dict[str, Any], offset: float, after: float = 0.0, scale: float = 1.0
             ) -> dict[str, Any]:
    """``result`` moved by ``offset`` in the stream, its times past ``after`` scaled."""

    def moved(t: float) -> float:
        return round(offset + (t if t <= after else after + (t - after) * scale), 4)

    out = copy.deepcopy(result)
    out["start"], end = moved(result["start"]), moved(_end(result))
    out["duration"] = round(end - out["start"], 4)
    for word in (out.get("channel") or {}).get("alternatives", [{}])[0].get("words", []):
        word["start"], word["end"] = moved(word["start"]), moved(word["end"])
    return out
