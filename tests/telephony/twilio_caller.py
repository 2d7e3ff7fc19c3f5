"""Twilio's side of a call, for tests: the voice webhook and a Media Stream over a real socket.

``TwilioCaller`` speaks the Media Streams protocol as Twilio does: ``connected``
and ``start``, then 20 ms μ-law ``media`` at real-time pace. It plays the
agent's audio into a simulated phone: media queues up and plays at real time,
each ``mark`` is echoed once the audio before it has played, and ``clear``
drops what has not played (echoing the marks it dropped), as Twilio does.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np
import websockets
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from cascade.telephony import g711

FRAME_BYTES = 160
ULAW_SILENCE = bytes([0xFF]) * FRAME_BYTES


def sign(auth_token: str, url: str, form: Mapping[str, str]) -> str:
    return str(RequestValidator(auth_token).compute_signature(url, dict(form)))


async def webhook(base: str, auth_token: str | None, form: Mapping[str, str],
                  path: str = "/twilio/voice", signature: str | None = None,
                  headers: Mapping[str, str] | None = None) -> httpx.Response:
    """POST the voice webhook as Twilio does (signed with ``auth_token`` unless None)."""
    url = base + path
    sent = dict(headers or {})
    if signature is not None:
        sent["X-Twilio-Signature"] = signature
    elif auth_token is not None:
        sent["X-Twilio-Signature"] = sign(auth_token, url, form)
    sent["Content-Type"] = "application/x-www-form-urlencoded"
    async with httpx.AsyncClient(verify=False) as client:  # plain http: skip loading CAs
        return await client.post(url, content=urlencode(dict(form)), headers=sent)


def stream_url(twiml: str) -> str:
    start = twiml.index('url="') + 5
    return twiml[start : twiml.index('"', start)]


@dataclass
class Heard:
    """What the simulated phone played: agent audio chunks with their play times."""

    chunks: list[tuple[float, np.ndarray]] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    marks_echoed: list[str] = field(default_factory=list)
    media_messages: int = 0

    def seconds(self) -> float:
        return sum(len(pcm) for _, pcm in self.chunks) / 8000

    def first_audio(self) -> float | None:
        return self.chunks[0][0] if self.chunks else None


class TwilioCaller:
    """One call's Media Stream, as Twilio would run it."""

    def __init__(self, url: str, call_sid: str = "CA0001", stream_sid: str = "MZ0001",
                 custom: Mapping[str, str] | None = None, encoding: str = "audio/x-mulaw",
                 sample_rate: int = 8000) -> None:
        self.url = url
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.custom = dict(custom or {})
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.heard = Heard()
        self.ws: Any = None
        self.chunk = 0
        self.started = 0.0
        self._play_end = 0.0
        self._pending_marks: list[tuple[float, str]] = []
        self._reader: asyncio.Task[None] | None = None
        self.closed: Any = None

    async def connect(self, send_start: bool = True) -> TwilioCaller:
        self.ws = await websockets.connect(self.url, max_size=2**20)
        self.started = time.monotonic()
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        if send_start:
            await self.start()
        self._reader = asyncio.create_task(self._read())
        return self

    async def start(self) -> None:
        await self.send({
            "event": "start", "sequenceNumber": "1", "streamSid": self.stream_sid,
            "start": {"accountSid": "AC0001", "streamSid": self.stream_sid,
                      "callSid": self.call_sid, "tracks": ["inbound"],
                      "mediaFormat": {"encoding": self.encoding,
                                      "sampleRate": self.sample_rate, "channels": 1},
                      "customParameters": self.custom}})

    async def send(self, message: Mapping[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    def media(self, payload: bytes, chunk: int | None = None) -> dict[str, Any]:
        if chunk is None:
            self.chunk += 1
            chunk = self.chunk
        return {"event": "media", "streamSid": self.stream_sid,
                "media": {"track": "inbound", "chunk": str(chunk),
                          "timestamp": str(chunk * 20),
                          "payload": base64.b64encode(payload).decode()}}

    async def play(self, ulaw: bytes) -> None:
        """Send ``ulaw`` as 20 ms media messages at real-time pace."""
        began = time.monotonic()
        for index in range(0, len(ulaw), FRAME_BYTES):
            frame = ulaw[index : index + FRAME_BYTES].ljust(FRAME_BYTES, b"\xff")
            await self.send(self.media(frame))
            await asyncio.sleep(max(0.0, began + (index // FRAME_BYTES + 1) * 0.02
                                    - time.monotonic()))

    async def silence(self, seconds: float) -> None:
        await self.play(ULAW_SILENCE * int(seconds * 50))

    async def silence_until(self, condition: Any, timeout: float) -> bool:
        """Keep sending silence until ``condition()`` holds (True) or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            await self.play(ULAW_SILENCE)
        return bool(condition())

    def agent_quiet_for(self, seconds: float) -> bool:
        """The agent spoke, and its audio finished playing ``seconds`` ago."""
        return bool(self.heard.chunks) and time.monotonic() > self._play_end + seconds

    async def hang_up(self) -> None:
        await self.send({"event": "stop", "streamSid": self.stream_sid,
                         "stop": {"accountSid": "AC0001", "callSid": self.call_sid}})
        await self.close()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.wait([self._reader], timeout=2)

    async def _echo_marks(self) -> None:
        now = time.monotonic()
        while self._pending_marks and self._pending_marks[0][0] <= now:
            _, name = self._pending_marks.pop(0)
            self.heard.marks_echoed.append(name)
            await self.send({"event": "mark", "streamSid": self.stream_sid,
                             "mark": {"name": name}})

    async def _read(self) -> None:
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(self.ws.recv(), 0.01)
                except TimeoutError:
                    await self._echo_marks()
                    continue
                message = json.loads(raw)
                now = time.monotonic()
                if message["event"] == "media":
                    pcm = g711.ulaw_decode(base64.b64decode(message["media"]["payload"]))
                    start = max(now, self._play_end)
                    self._play_end = start + len(pcm) / 8000
                    self.heard.chunks.append((start, pcm))
                    self.heard.media_messages += 1
                elif message["event"] == "mark":
                    self._pending_marks.append((max(now, self._play_end),
                                                message["mark"]["name"]))
                elif message["event"] == "clear":
                    self.heard.clears.append(now)
                    self.heard.chunks = [(t, p) for t, p in self.heard.chunks if t < now]
                    self._play_end = now
                    self._pending_marks = [(now, name) for _, name in self._pending_marks]
                await self._echo_marks()
        except websockets.ConnectionClosed as exc:
            self.closed = exc
