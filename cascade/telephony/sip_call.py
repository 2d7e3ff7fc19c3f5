"""One SIP call's media: RTP in through a jitter buffer, agent audio out in 20 ms packets.

The server's ``MediaClock`` runs ``tick_calls`` every 20 ms over every call:
the jitter buffer releases one frame of caller audio (real, concealed or
silence), which is offered to the conversation (dropped, never queued without
bound, when the pipeline is behind); and one packet of agent audio goes out
(silence when the agent is quiet, so the far end's jitter buffer and any NAT
binding stay alive). ``RtpSink`` is where ``Playout`` puts agent audio: a short
FIFO the ticks drain at line rate; a barge-in empties it. Because all calls
tick together, the resampling of all calls is one numpy product each way.

RTP is accepted only from the caller's address (the SDP's or the SIGNALING
source's IP). DTMF telephone-events become ``Event(name="dtmf")``. A caller
that sends far more packets than real time, or none for ``media_timeout``, is
hung up on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cascade.conversation import Conversation, Pipeline
from cascade.frames import PCM, AgentAudio
from cascade.telephony import g711
from cascade.telephony.calls import CallHook, CallSession, TraceFactory
from cascade.telephony.jitter import JitterBuffer
from cascade.telephony.line import FRAME_SAMPLES, PhoneLine, agents_line, callers_pcm
from cascade.telephony.rtp import DtmfReceiver, MediaSocket, RtpPacket, RtpSender
from cascade.telephony.sdp import Negotiated
from cascade.telephony.telemetry import PhoneMetrics

log = logging.getLogger("cascade.telephony")
COMFORT_NOISE = 13
TICK = 0.02


@dataclass(slots=True)
class MediaSettings:
    """Per-call media behaviour of the SIP server."""

    jitter_frames: int = 3
    """Frames (20 ms each) the jitter buffer holds before playing: absorbs network jitter."""
    media_timeout: float = 30.0
    """Seconds without RTP before the caller counts as gone (BYE)."""
    playout_lead: float = 0.06
    """Agent audio handed to the sender ahead of time, so no tick finds it empty."""
    send_silence: bool = True
    flood_factor: float = 4.0
    """Packets beyond this multiple of real time (plus a burst) cut the call off."""


class RtpSink:
    """Agent audio waiting to be packetised: 8 kHz samples, bounded.

    Audio at the pipeline rate waits in ``pending`` until the next tick converts
    it (``tick_calls`` converts every call's at once); ``take`` converts
    whatever is still pending itself."""

    PENDING_LIMIT = 50
    """Chunks kept unconverted at most (no tick for a second: convert them here)."""

    def __init__(self, line: PhoneLine, limit_seconds: float = 5.0) -> None:
        self.line = line
        self.limit = int(limit_seconds * 8000)
        self.pending: deque[PCM] = deque()
        self._chunks: deque[PCM] = deque()
        self._held = 0
        self._stalled = False
        self._ending = False
        self.dropped = 0

    def play(self, frame: AgentAudio, at: float) -> None:
        self._ending = frame.reply_end  # nothing follows: a short tail goes out padded
        if frame.sample_rate == self.line.rate and len(self.pending) < self.PENDING_LIMIT:
            if len(frame.pcm):
                self.pending.append(frame.pcm)
            return
        self.convert()  # what is pending goes first, in order
        self.store(self.line.agent_line(frame.pcm, frame.sample_rate))

    def convert(self) -> None:
        """Convert the pending pipeline-rate audio to line rate, one chunk at a time."""
        while self.pending:
            self.store(self.line.agent_line(self.pending.popleft(), self.line.rate))

    def store(self, pcm: PCM) -> None:
        """Queue line-rate (8 kHz) agent audio; beyond the limit the oldest is dropped."""
        if not len(pcm):
            return
        self._chunks.append(pcm)
        self._held += len(pcm)
        while self._held > self.limit:
            self.dropped += len(self._chunks[0])
            self._held -= len(self._chunks.popleft())

    def clear(self, at: float) -> None:
        self.pending.clear()
        self._chunks.clear()
        self._held = 0
        self._ending = False
        self.line.reset_agent()

    def take(self, n: int = FRAME_SAMPLES) -> PCM | None:
        """``n`` samples to send now; None when there is no agent audio.

        A tail shorter than a packet waits one tick for more, then goes out padded;
        the end of a reply goes out padded at once.
        """
        if self.pending:
            self.convert()
        if self._held < n and (self._held == 0 or not (self._stalled or self._ending)):
            self._stalled = self._held > 0
            return None
        self._stalled = False
        if len(self._chunks[0]) == n:  # the usual case: one 20 ms frame, sent as it is
            self._held -= n
            return self._chunks.popleft()
        out = np.zeros(n, np.int16)
        filled = 0
        while filled < n and self._chunks:
            chunk = self._chunks[0]
            used = min(n - filled, len(chunk))
            out[filled : filled + used] = chunk[:used]
            filled += used
            if used == len(chunk):
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[used:]
        self._held -= filled
        return out


class SipCall:
    """A call's conversation and RTP; ticked by the server's media clock."""

    def __init__(self, call_id: str, negotiated: Negotiated, socket: MediaSocket,
                 signalling_ip: str, pipeline: Pipeline, metrics: PhoneMetrics,
                 settings: MediaSettings, parameters: dict[str, str],
                 traces: TraceFactory | None = None, on_call: CallHook | None = None) -> None:
        self.id = f"sip-{call_id}"
        self.call_id = call_id
        self.negotiated = negotiated
        self.socket = socket
        self.remote = negotiated.remote
        self.allowed_sources = {negotiated.remote[0], signalling_ip}
        self.pipeline = pipeline
        self.metrics = metrics
        self.settings = settings
        self.parameters = parameters
        self.session = CallSession(self.id, pipeline, metrics, traces, on_call)
        self.clock = self.session.clock
        self.line = PhoneLine(pipeline.config.sample_rate, negotiated.codec)
        self.sink = RtpSink(self.line)
        self.jitter = JitterBuffer(delay=settings.jitter_frames)
        self.sender = RtpSender(negotiated.payload_type)
        self.dtmf = DtmfReceiver()
        self.conversation: Conversation | None = None
        self.ended: str | None = None
        self.stopped = False
        self.packets_in = 0
        self.packets_out = 0
        self._silence = bytes([g711.SILENCE[negotiated.codec]]) * FRAME_SAMPLES
        self._last_packet = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepted = metrics.media.labels("in", "accepted")
        self._dropped = metrics.media.labels("in", "dropped")

    async def start(self) -> None:
        self.conversation = await self.session.start(self.sink, self.settings.playout_lead,
                                                     self.parameters)
        self._last_packet = self.clock.now()

    def _send_event(self, name: str, data: dict[str, str]) -> None:
        conversation = self.conversation
        if conversation is None:
            return
        event = self.session.event(name, data)
        task = asyncio.get_running_loop().create_task(conversation.send(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- in ----------------------------------------------------------------

    def on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.ended:
            return
        if addr[0] not in self.allowed_sources:
            self.metrics.error("rtp_wrong_source")
            return
        now = self.clock.now()
        self.packets_in += 1
        if self.packets_in > now * 50 * self.settings.flood_factor + 250:
            self.metrics.error("flooding")
            self.ended = "flooding"
            return
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            self.metrics.error("rtp_malformed")
            return
        self._last_packet = now
        if packet.payload_type == self.negotiated.payload_type:
            if len(packet.payload) > 8 * FRAME_SAMPLES:
                self.metrics.error("rtp_oversized")
                return
            pcm = g711.decode(packet.payload, self.negotiated.codec)
            self.jitter.push(packet.sequence, packet.timestamp, packet.ssrc, pcm)
        elif packet.payload_type == self.negotiated.dtmf_payload_type:
            try:
                digit = self.dtmf.receive(packet)
            except ValueError:
                self.metrics.error("rtp_malformed")
                return
            if digit is not None:
                self._send_event("dtmf", {"digit": digit})
        elif packet.payload_type != COMFORT_NOISE:
            self.metrics.error("rtp_wrong_codec")

    def dtmf_info(self, digit: str) -> None:
        """A digit signalled in a SIP INFO (application/dtmf-relay) instead of RTP."""
        self._send_event("dtmf", {"digit": digit})

    # --- the 20 ms tick ----------------------------------------------------

    @property
    def live(self) -> bool:
        """Answered and not ended: media moves on every tick."""
        return self.conversation is not None and not self.ended

    def deliver(self, pcm: PCM) -> None:
        """Offer one frame of caller audio (pipeline rate) to the conversation."""
        conversation = self.conversation
        assert conversation is not None
        if conversation.offer_audio(pcm):
            self._accepted.inc()
        else:
            self._dropped.inc()

    def send_agent(self) -> None:
        """One packet out: agent audio, or silence; then check the caller is still there."""
        agent = self.sink.take()
        if agent is not None:
            self.socket.send(self.sender.packet(self.line.encode(agent)), self.remote)
            self.packets_out += 1
        elif self.settings.send_silence:
            self.socket.send(self.sender.packet(self._silence, speech=False), self.remote)
            self.packets_out += 1
        if self.clock.now() - self._last_packet > self.settings.media_timeout:
            self.metrics.error("media_timeout")
            self.ended = "media_timeout"

    async def stop(self) -> None:
        """End the call: its conversation (one still starting stops once started), its
        socket, its media counts. Stopping again does nothing."""
        if self.stopped:
            return
        self.stopped = True
        self.ended = self.ended or "hangup"
        await self.session.stop()
        self.socket.close()
        stats = self.jitter.stats
        media = self.metrics.media
        for fate, value in (("late", stats.late), ("duplicate", stats.duplicate),
                            ("concealed", stats.concealed)):
            if value:
                media.labels("in", fate).inc(value)


def tick_calls(calls: Sequence[SipCall],
               failed: Callable[[SipCall, Exception], None]) -> None:
    """One tick for many calls: each call's caller frame and its pending agent audio are
    resampled together with every other call's (one matrix product per direction),
    then offered and sent per call. A call that raises is reported to ``failed``; the
    others carry on."""
    live = [call for call in calls if call.live]
    arrived: list[SipCall] = []
    frames: list[PCM] = []
    for call in live:
        try:
            frame = call.jitter.pop()
        except Exception as exc:
            failed(call, exc)
            continue
        if frame is not None:
            arrived.append(call)
            frames.append(frame)
    for call, pcm in _together(callers_pcm, arrived, frames, failed):
        try:
            call.deliver(pcm)
        except Exception as exc:
            failed(call, exc)
    waiting = [call for call in live if call.sink.pending]
    while waiting:  # usually one round; a call with several chunks pending takes more
        chunks = [call.sink.pending.popleft() for call in waiting]
        for call, pcm in _together(agents_line, waiting, chunks, failed):
            call.sink.store(pcm)
        waiting = [call for call in waiting if call.sink.pending and not call.ended]
    for call in live:
        try:
            call.send_agent()
        except Exception as exc:
            failed(call, exc)


def _together(convert: Callable[[Sequence[PhoneLine], Sequence[PCM]], list[PCM]],
              calls: list[SipCall], chunks: list[PCM],
              failed: Callable[[SipCall, Exception], None]) -> list[tuple[SipCall, PCM]]:
    """``convert`` every call's chunk at once; if that raises, call by call, so only the
    call whose audio is bad is reported (and ends) while the others go on."""
    try:
        return list(zip(calls, convert([c.line for c in calls], chunks), strict=True))
    except Exception:
        done = []
        for call, chunk in zip(calls, chunks, strict=True):
            try:
                done.append((call, convert([call.line], [chunk])[0]))
            except Exception as exc:
                failed(call, exc)
        return done


class MediaClock:
    """Calls ``tick`` every 20 ms on absolute deadlines, and notes how late it woke up."""

    def __init__(self, tick: Callable[[], None]) -> None:
        self.tick = tick
        self.ticks = 0
        self.late_ticks = 0
        self.worst_lag = 0.0
        """Seconds it woke up late, at worst (benchmarks reset it)."""

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            self.worst_lag = max(self.worst_lag, loop.time() - due)
            due += TICK
            try:
                self.tick()
            except Exception:  # the clock of every call must outlive a bad tick
                log.exception("media tick failed")
            self.ticks += 1
            delay = due - loop.time()
            if delay < -TICK:
                self.late_ticks += 1
                if delay < -0.2:
                    due = loop.time()  # fell far behind: skip ahead rather than burst
            await asyncio.sleep(max(0.0, delay))
