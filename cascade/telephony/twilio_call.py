"""One Twilio Media Stream: caller audio into a conversation, agent audio back, marks, clear.

``TwilioCall.run`` reads the websocket until the caller hangs up (``stop``),
the socket goes away, or it falls silent for ``idle_timeout``. Caller audio is
offered to the conversation without waiting (``offer_audio`` drops a frame when
the pipeline is behind, so a call's memory stays bounded). Duplicate or stale
``chunk`` numbers are dropped, a short gap is filled with silence, and a caller
sending faster than real time or a stream of garbage is cut off. No bad input
raises out of ``run``.

Agent audio goes out through ``TwilioSink`` at the pace ``Playout`` sets: each
20 ms frame as one ``media`` message, a ``mark`` every second and at each
clause end. Twilio echoes a mark once the audio before it has played, which
confirms when the caller heard it (the ``playout_confirm`` histogram). Because
audio is sent as it is due, Twilio's buffer holds only ``playout_lead``: on a
barge-in, ``clear`` drops that much and the caller heard exactly what Playout
counts as played, so ``agent_speech`` and the heard text in the history are
exact (the transport delay is the same for the audio and for the ``clear``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import MutableMapping
from dataclasses import dataclass, field

from starlette.websockets import WebSocket, WebSocketDisconnect

from cascade.clock import Clock
from cascade.conversation import Conversation, Pipeline
from cascade.frames import AgentAudio
from cascade.telephony import twilio_protocol as tp
from cascade.telephony.calls import CallHook, CallSession, TraceFactory
from cascade.telephony.line import FRAME_SAMPLES, PhoneLine
from cascade.telephony.telemetry import PhoneMetrics

log = logging.getLogger("cascade.telephony")


@dataclass(slots=True)
class CallLimits:
    """What one call may do before input is dropped or the call is cut off."""

    idle_timeout: float = 10.0
    """Seconds without any message before the caller counts as gone."""
    max_message_bytes: int = 64 * 1024
    max_media_bytes: int = 8000
    """Largest media payload accepted (bytes of μ-law: 8000 = one second)."""
    max_gap_frames: int = 50
    """Missing chunks up to this many are filled with silence; longer gaps are not."""
    flood_burst: float = 2.0
    """Seconds of audio a caller may send ahead of real time before being cut off."""
    max_messages_per_second: float = 150.0
    max_bad_messages: int = 100
    outbox_frames: int = 250
    """Agent frames queued for a slow socket (5 s); older ones are dropped."""
    mark_every: int = 50
    """A mark after every this many 20 ms frames (1 s), besides one at each clause end."""
    playout_lead: float = 0.1
    """Seconds of agent audio sent ahead of time, so network jitter causes no gaps."""


@dataclass(slots=True)
class Ticket:
    """A stream the webhook started: the one-time token and what the signed request said."""

    token: str
    call_sid: str
    parameters: dict[str, str] = field(default_factory=dict)
    expires: float = 0.0


class Hangup(Exception):
    """End the call: the caller left, or broke the rules (``code``/``reason`` to close with)."""

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Outbox:
    """Messages waiting for the socket; agent media beyond ``limit`` drops the oldest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: deque[str] = deque()
        self.ready = asyncio.Event()
        self.dropped = 0

    def put(self, text: str) -> None:
        if len(self.items) >= self.limit:
            self.items.popleft()
            self.dropped += 1
        self.items.append(text)
        self.ready.set()

    def discard(self) -> None:
        self.items.clear()


class TwilioSink:
    """Plays agent audio into the stream: media, marks, and ``clear`` on a barge-in."""

    def __init__(self, line: PhoneLine, stream_sid: str, outbox: Outbox, clock: Clock,
                 metrics: PhoneMetrics, mark_every: int = 50) -> None:
        self.line = line
        self.stream_sid = stream_sid
        self.outbox = outbox
        self.clock = clock
        self.metrics = metrics
        self.mark_every = max(1, mark_every)
        self.marks: dict[str, float] = {}
        """Marks sent and not yet echoed: name -> pipeline time the audio before it ends."""
        self.cleared = 0
        self._frames = 0
        self._next_mark = 0
        self._sent = metrics.media.labels("out", "sent")
        self._media = tp.media_messages(stream_sid)

    def play(self, frame: AgentAudio, at: float) -> None:
        pcm = self.line.agent_line(frame.pcm, frame.sample_rate)
        if len(pcm):
            self.outbox.put(self._media(self.line.encode(pcm)))
            self._sent.inc()
        self._frames += 1
        if frame.clause_end or frame.reply_end or self._frames % self.mark_every == 0:
            self._mark(at + len(frame.pcm) / frame.sample_rate)

    def _mark(self, ends: float) -> None:
        if len(self.marks) >= 256:
            del self.marks[next(iter(self.marks))]
        self._next_mark += 1
        name = f"m{self._next_mark}"
        self.marks[name] = ends
        self.outbox.put(tp.mark_message(self.stream_sid, name))

    def clear(self, at: float) -> None:
        self.outbox.discard()
        self.outbox.put(tp.clear_message(self.stream_sid))
        self.line.reset_agent()
        self.cleared += len(self.marks)
        self.marks.clear()

    def confirmed(self, name: str) -> None:
        """Twilio says the audio before mark ``name`` has played."""
        ends = self.marks.pop(name, None)
        if ends is None:
            return  # cleared by a barge-in, or not ours
        self.metrics.playout_confirm.observe(max(0.0, self.clock.now() - ends))
        for older in [n for n, t in self.marks.items() if t <= ends]:
            del self.marks[older]  # marks come back in order: these played too


class TwilioCall:
    """Runs one media stream from ``start`` to hang-up."""

    def __init__(self, ws: WebSocket, ticket: Ticket, pipeline: Pipeline,
                 metrics: PhoneMetrics, limits: CallLimits,
                 traces: TraceFactory | None = None, on_call: CallHook | None = None) -> None:
        self.ws = ws
        self.ticket = ticket
        self.pipeline = pipeline
        self.metrics = metrics
        self.limits = limits
        self.id = self.id_for(ticket.call_sid or ticket.token[:8])
        self.session = CallSession(self.id, pipeline, metrics, traces, on_call)
        self.clock = self.session.clock
        self.outbox = Outbox(limits.outbox_frames)
        self.conversation: Conversation | None = None
        self.sink: TwilioSink | None = None
        self.line: PhoneLine | None = None
        self._last_chunk: int | None = None
        self._messages = 0
        self._bad = 0
        self._audio_in = 0.0
        self._started_at = 0.0
        self._waiting_since = self.clock.now()
        self._idle = False
        self._waiting = False
        media = metrics.media
        self._accepted = media.labels("in", "accepted")
        self._dropped = media.labels("in", "dropped")

    @staticmethod
    def id_for(call_sid: str) -> str:
        """The call id (in logs, traces and the active calls) of Twilio call ``call_sid``."""
        return f"twilio-{call_sid}"

    async def run(self) -> None:
        writer = asyncio.create_task(self._write(), name=f"{self.id}:writer")
        reader = asyncio.current_task()
        assert reader is not None
        watchdog = asyncio.create_task(self._watch_idle(reader), name=f"{self.id}:idle")
        code, reason = 1000, ""
        try:
            while True:
                self._waiting_since = self.clock.now()
                self._waiting = True
                message = await self.ws.receive()
                self._waiting = False
                if message["type"] == "websocket.disconnect":
                    self.metrics.error("vanished")  # gone without a stop message
                    break
                await self._received(message)
                if writer.done():
                    break
        except Hangup as stop:
            code, reason = stop.code, stop.reason
        except asyncio.CancelledError:
            if not self._idle:
                raise
            reader.uncancel()
            self.metrics.error("idle_timeout")
            code, reason = 1001, "no message for too long"
        except WebSocketDisconnect:
            self.metrics.error("vanished")
        finally:
            writer.cancel()
            watchdog.cancel()
            await self._close(code, reason)

    async def _watch_idle(self, reader: asyncio.Task[None]) -> None:
        """Cancels the reader once it waited ``idle_timeout`` for a message (one timer per
        call, instead of a timeout around every 20 ms receive). Time spent handling a
        message does not count: only a reader parked in ``receive`` is cancelled."""
        timeout = self.limits.idle_timeout
        while True:
            silent = self.clock.now() - self._waiting_since
            if self._waiting and silent >= timeout:
                self._idle = True
                reader.cancel()
                return
            await asyncio.sleep(max(timeout - silent, timeout / 10))

    async def _received(self, message: MutableMapping[str, object]) -> None:
        now = self.clock.now()
        self._messages += 1
        if self._messages > now * self.limits.max_messages_per_second + 500:
            self.metrics.error("flooding")
            raise Hangup(1008, "too many messages")
        text = message.get("text")
        if not isinstance(text, str):
            self._bad_input("binary_frame")
            return
        if len(text) > self.limits.max_message_bytes:
            self._bad_input("oversized")
            return
        try:
            parsed = tp.parse(text)
        except tp.ProtocolError as exc:
            self._bad_input("malformed", str(exc))
            return
        await self._handle(parsed)

    def _bad_input(self, kind: str, detail: str = "") -> None:
        self.metrics.error(kind)
        self._bad += 1
        log.debug("%s: %s %s", self.id, kind, detail)
        if self._bad > self.limits.max_bad_messages:
            raise Hangup(1008, f"too many bad messages ({kind})")

    async def _handle(self, message: tp.Message) -> None:
        if isinstance(message, tp.Media):
            self._media(message)
        elif isinstance(message, tp.Mark):
            if self.sink is not None:
                self.sink.confirmed(message.name)
        elif isinstance(message, tp.Start):
            await self._start(message)
        elif isinstance(message, tp.Dtmf):
            if self.conversation is not None:
                await self.conversation.send(self.session.event("dtmf",
                                                                {"digit": message.digit}))
        elif isinstance(message, tp.Stop):
            raise Hangup(1000, "")
        elif isinstance(message, tp.Unknown):
            self._bad_input("unknown_event", message.event)

    async def _start(self, start: tp.Start) -> None:
        if self.conversation is not None:
            self._bad_input("duplicate_start")
            return
        if (start.encoding != tp.MULAW or start.sample_rate not in (0, 8000)
                or start.channels not in (0, 1)):
            self.metrics.call("bad_media_format")
            raise Hangup(1003, f"unsupported media format {start.encoding} "
                         f"{start.sample_rate} Hz x{start.channels}: expected "
                         f"{tp.MULAW} 8000 Hz mono")
        if self.ticket.call_sid and start.call_sid != self.ticket.call_sid:
            self.metrics.call("wrong_call")
            raise Hangup(1008, "this stream belongs to another call")
        self.line = PhoneLine(self.pipeline.config.sample_rate, "PCMU")
        self.sink = TwilioSink(self.line, start.stream_sid, self.outbox, self.clock,
                               self.metrics, self.limits.mark_every)
        data = {**self.ticket.parameters, "call_sid": start.call_sid,
                "stream_sid": start.stream_sid}
        self.conversation = await self.session.start(self.sink, self.limits.playout_lead, data)
        self._started_at = self.clock.now()
        self.metrics.call("answered")

    def _media(self, media: tp.Media) -> None:
        conversation, line = self.conversation, self.line
        if conversation is None or line is None:
            self._bad_input("media_before_start")
            return
        if not media.payload or len(media.payload) > self.limits.max_media_bytes:
            self._bad_input("bad_media_size")
            return
        filled = 0
        if media.chunk is not None:
            last = self._last_chunk
            if last is not None and media.chunk <= last:
                self.metrics.media.labels("in", "stale").inc()
                return
            gap = 0 if last is None else media.chunk - last - 1
            self._last_chunk = media.chunk
            if 0 < gap <= self.limits.max_gap_frames:
                filled = gap
        # silence filling a gap is audio too: skipping chunk numbers cannot flood
        self._audio_in += (len(media.payload) + filled * FRAME_SAMPLES) / 8000
        if self._audio_in > self.clock.now() - self._started_at + self.limits.flood_burst:
            self.metrics.error("flooding")
            raise Hangup(1008, "media arrives faster than real time")
        if filled:
            self.metrics.media.labels("in", "gap_filled").inc(filled)
            for _ in range(filled):
                conversation.offer_audio(line.caller_silence(FRAME_SAMPLES))
        if conversation.offer_audio(line.caller_pcm(media.payload)):
            self._accepted.inc()
        else:
            self._dropped.inc()

    async def _write(self) -> None:
        outbox = self.outbox
        try:
            while True:
                await outbox.ready.wait()
                outbox.ready.clear()
                while outbox.items:
                    await self.ws.send_text(outbox.items.popleft())
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            log.debug("%s: cannot send to the socket (%s)", self.id, exc)

    async def _close(self, code: int, reason: str) -> None:
        await self.session.stop()
        if self.outbox.dropped:
            self.metrics.media.labels("out", "dropped").inc(self.outbox.dropped)
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):  # already closed
            await self.ws.close(code, reason)
