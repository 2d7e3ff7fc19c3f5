"""One browser voice page connection served by one Cascade conversation.

The wire, over one websocket (``cascade.servers.browser`` serves the page):

* page -> server, text: ``{"type": "hello", "sample_rate": 48000}`` first (the
  rate of the page's audio), then ``{"type": "interrupt"}`` when the user
  presses to talk over the agent.
* page -> server, binary: the microphone as PCM16 little-endian mono at that
  rate, continuously (push-to-talk sends silence while the button is up, so
  the pipeline's VAD hears the turn end).
* server -> page, binary: agent audio, PCM16 mono at the page's rate, sent as
  playout plays it (a little ahead: the page's jitter buffer).
* server -> page, text (JSON, ``type`` first): ``ready``; ``state``
  (listening / thinking / speaking); ``user_speech``; ``transcript`` (partial
  and final); ``user_turn``; ``agent_text`` (as generated); ``agent_started``;
  ``agent_stopped`` (the words actually heard, cut or not); ``clear`` (drop
  queued agent audio now: barge-in); ``span`` (every trace span as it closes);
  ``turn`` (a finished turn's latencies, from ``cascade.metrics``); ``error``.

Resampling both ways happens here with soxr, so the page needs no DSP.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict
from typing import Any

import numpy as np
import soxr

from cascade.audio import FrameCutter
from cascade.clock import RealClock
from cascade.conversation import Pipeline
from cascade.frames import (
    PCM,
    AgentAudio,
    AgentSpeechStarted,
    AgentSpeechStopped,
    EndOfTurn,
    ErrorFrame,
    Frame,
    Interrupt,
    LLMText,
    SpeechStarted,
    SpeechStopped,
    Transcript,
)
from cascade.metrics import turn_metrics
from cascade.playout import Playout
from cascade.servers.connection import Outbox
from cascade.tracing import Span, TraceSink

log = logging.getLogger("cascade.browser")
Message = str | bytes
MIN_RATE, MAX_RATE = 8000, 192000


class SpanRelay:
    """A ``TraceSink`` that forwards each span, and each finished turn's latencies."""

    def __init__(self, emit: Callable[[dict[str, Any]], None]) -> None:
        self.emit = emit
        self.spans: list[Span] = []

    def write(self, span: Span) -> None:
        self.spans.append(span)
        self.emit({"type": "span", **asdict(span)})
        if span.name == "agent_speech":
            for metrics in turn_metrics(s for s in self.spans if s.turn == span.turn):
                self.emit({"type": "turn", **metrics.as_dict()})

    def close(self) -> None:
        pass


class BrowserSession:
    """Page messages in, page messages out, one ``Conversation`` in between."""

    def __init__(self, pipeline: Pipeline, send: Callable[[Message], Awaitable[None]], *,
                 client_rate: int, lead: float = 0.15, traces: Iterable[TraceSink] = ()) -> None:
        if not MIN_RATE <= client_rate <= MAX_RATE:
            raise ValueError(f"sample_rate {client_rate} is outside {MIN_RATE}..{MAX_RATE} Hz")
        self.client_rate = client_rate
        self.clock = RealClock()
        self.relay = SpanRelay(self._emit)
        self.conversation = pipeline.conversation(
            self.clock, sink=self, traces=[self.relay, *traces])
        self.id = self.conversation.id
        self.rate = self.conversation.rate
        graph = self.conversation.graph
        graph.observers.append(self._observe)
        playout = graph.stages.get("playout")
        if isinstance(playout, Playout):
            playout.lead = lead
        self.state = "listening"
        self.frames_in = 0
        self.dropped = 0
        self.samples_out = 0
        self._outbox = Outbox(send, log, f"session {self.id}")
        self._input: Any = soxr.ResampleStream(client_rate, self.rate, 1, dtype="int16")
        self._output: Any = None
        self._frames = FrameCutter(self.rate)
        self._speaking_turn: int | None = None

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._outbox.start()
        await self.conversation.start()
        self._emit({"type": "ready", "conversation": self.id, "sample_rate": self.client_rate,
                    "pipeline_rate": self.rate})

    async def close(self) -> None:
        await self.conversation.stop()
        await self._outbox.close()

    def _emit(self, event: dict[str, Any]) -> None:
        self._outbox.put(json.dumps(event, default=str))

    # --- what the page sends ----------------------------------------------------------

    def audio(self, data: bytes) -> None:
        """Microphone PCM16 at the page's rate: resample, cut 20 ms frames, offer them."""
        if len(data) % 2:
            data = data[:-1]
        pcm: PCM = self._input.resample_chunk(np.frombuffer(data, "<i2").astype(np.int16))
        for frame in self._frames.cut(pcm):
            self.frames_in += 1
            if not self.conversation.offer_audio(frame):
                self.dropped += 1

    async def command(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "interrupt":
            await self.interrupt("user pressed to talk")
        else:
            self._emit({"type": "error", "message": f"unknown message type {kind!r}"})

    async def interrupt(self, reason: str) -> None:
        """Cut the reply being played, as a barge-in would."""
        turn = self._speaking_turn
        if turn is None:
            return
        ctx = self.conversation.ctx
        now = self.clock.now()
        ctx.tracer.record("interruption", "browser", turn, now, now, reason=reason)
        await self.conversation.graph.broadcast(Interrupt(
            conversation=ctx.conversation, turn=turn, time=now, reason="client"))

    # --- AudioSink: agent audio as playout plays it ------------------------------------

    def play(self, frame: AgentAudio, at: float) -> None:
        if self._output is None:
            self._output = soxr.ResampleStream(frame.sample_rate, self.client_rate, 1,
                                               dtype="int16")
        pcm: PCM = self._output.resample_chunk(frame.pcm, last=frame.reply_end)
        if frame.reply_end:
            self._output = None
        if len(pcm):
            self.samples_out += len(pcm)
            self._outbox.put(pcm.astype("<i2").tobytes())

    def clear(self, at: float) -> None:
        self._output = None
        self._emit({"type": "clear"})

    # --- what the pipeline does --------------------------------------------------------

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._emit({"type": "state", "state": state})

    def _observe(self, stage: str, frame: Frame) -> None:
        turn = frame.turn
        if isinstance(frame, SpeechStarted):
            self._emit({"type": "user_speech", "speaking": True, "turn": turn})
        elif isinstance(frame, SpeechStopped):
            self._emit({"type": "user_speech", "speaking": False, "turn": turn})
        elif isinstance(frame, Transcript):
            self._emit({"type": "transcript", "turn": turn, "text": frame.text.strip(),
                        "final": frame.final})
        elif isinstance(frame, EndOfTurn):
            self._emit({"type": "user_turn", "turn": turn, "text": frame.text.strip(),
                        "reason": frame.reason})
            self._set_state("thinking")
        elif isinstance(frame, LLMText):
            if frame.text.strip():
                self._emit({"type": "agent_text", "turn": turn, "text": frame.text.strip()})
        elif isinstance(frame, AgentSpeechStarted):
            self._speaking_turn = turn
            self._emit({"type": "agent_started", "turn": turn})
            self._set_state("speaking")
        elif isinstance(frame, AgentSpeechStopped):
            self._speaking_turn = None
            self._emit({"type": "agent_stopped", "turn": turn, "text": frame.spoken_text,
                        "interrupted": frame.interrupted})
            self._set_state("listening")
        elif isinstance(frame, Interrupt):
            if self.state == "thinking":
                self._set_state("listening")
        elif isinstance(frame, ErrorFrame):
            self._emit({"type": "error", "message": f"stage '{frame.stage}' failed: "
                        f"{frame.message}"})
