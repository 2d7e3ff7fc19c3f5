"""Fused stage: one unified speech model in place of the ASR -> LLM -> TTS sub-graph.

A speech-to-speech model (GPT-realtime, StepAudio, Qwen-Omni, an in-process
transformers model ...) takes caller audio and answers with agent audio, plus
transcripts of both sides when it has them. ``FusedStage`` turns whatever the
model reports into the same frames and spans as the cascade (``user_speech``,
``end_of_turn``, ``asr``, ``llm``, ``tts``, ``agent_speech``, ``interruption``),
so both are measured the same way.

Turn-taking is configurable and recorded in every ``end_of_turn`` span:

* ``controller`` - our ``TurnController`` sits in front (``vad -> turn ->
  fused``): the stage streams caller audio to the model and asks for a reply at
  each ``EndOfTurn``; barge-in comes from the controller's ``Interrupt``.
* ``model`` - the model's own voice activity detection decides (the stage is the
  graph's entry): its speech-start while the agent talks becomes an
  ``Interrupt``, its speech-stop an ``end_of_turn``.

A vendor implements a ``FusedSession`` (open, send audio, commit, cancel, and an
event stream); the base class does the frames, spans and interruption rules.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from cascade.audio import FrameCutter, resample
from cascade.frames import (
    PCM,
    AgentAudio,
    AgentSpeechStarted,
    AgentSpeechStopped,
    EndOfTurn,
    Frame,
    Interrupt,
    LLMReply,
    SpeechStarted,
    SpeechStopped,
    SystemFrame,
    Transcript,
    UserAudio,
)
from cascade.registry import Adapter
from cascade.tracing import OpenSpan

# --- what a model session reports --------------------------------------------


@dataclass(slots=True)
class UserStarted:
    """The model heard the caller start speaking (at ``at`` seconds of input audio)."""

    at: float


@dataclass(slots=True)
class UserStopped:
    """The model decided the caller stopped (at ``at`` seconds of input audio)."""

    at: float


@dataclass(slots=True)
class UserText:
    """The model's transcript of what the caller said."""

    text: str


@dataclass(slots=True)
class AgentText:
    """A piece of the transcript of the agent's reply."""

    text: str


@dataclass(slots=True)
class AgentAudioChunk:
    """A piece of the agent's spoken reply."""

    pcm: PCM
    sample_rate: int


@dataclass(slots=True)
class ReplyDone:
    """The model finished (or abandoned) its reply."""

    cancelled: bool = False


FusedEvent = UserStarted | UserStopped | UserText | AgentText | AgentAudioChunk | ReplyDone


class FusedSession(Protocol):
    """One conversation with a unified speech model (what a vendor adapter provides)."""

    async def send_audio(self, pcm: PCM, sample_rate: int) -> None: ...

    async def commit(self) -> None:
        """The caller's turn is over (controller turn-taking): answer now."""

    async def cancel(self, played_seconds: float) -> None:
        """Stop the reply; the caller heard ``played_seconds`` of it."""

    def events(self) -> AsyncIterator[FusedEvent]: ...

    async def close(self) -> None: ...


class FusedOptions(BaseModel):
    """Options shared by every fused adapter."""

    model_config = ConfigDict(extra="forbid")

    turn_taking: Literal["controller", "model"] = Field(
        "controller", description="who decides end of turn and barge-in")
    price_per_minute: float = Field(0.0, ge=0.0, description="cost of a minute of audio "
                                    "(in + out), for cost-per-task in evaluations")


class FusedStage(Adapter):
    """Base of fused adapters: model events -> the cascade's frames and spans."""

    kind = "fused"
    accepts = (UserAudio, SpeechStarted, SpeechStopped, EndOfTurn)

    def __init__(self, options: FusedOptions) -> None:
        self.fused = options
        self.session: FusedSession | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reply_turn: int | None = None
        self._reply_text: list[str] = []
        self._reply_span: OpenSpan | None = None
        self._first_audio = False
        self._ttft: float | None = None
        self._user_onset: float | None = None
        self._user_text: list[str] = []
        self._input_origin: float | None = None
        self._agent_speaking = False
        self._agent_started = 0.0
        self._frames = FrameCutter(16000)  # sized for the pipeline rate in start()

    async def open_session(self) -> FusedSession:
        """Connect to the model for this conversation (vendor)."""
        raise NotImplementedError

    async def start(self) -> None:
        self._frames = FrameCutter(self.ctx.sample_rate)
        self.session = await self.open_session()
        self._reader = asyncio.create_task(self._read_events())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self.session is not None:
            await self.session.close()

    # --- caller side ------------------------------------------------------------

    async def process(self, frame: Frame) -> None:
        session = self.session
        assert session is not None
        if isinstance(frame, UserAudio):
            if self._input_origin is None:
                self._input_origin = frame.time
            await session.send_audio(frame.pcm, frame.sample_rate)
        elif isinstance(frame, EndOfTurn) and self.fused.turn_taking == "controller":
            self._begin_reply(frame.turn)
            await session.commit()

    def _begin_reply(self, turn: int) -> None:
        self._reply_turn = turn
        self._reply_text = []
        self._first_audio = False
        self._ttft = None
        self._reply_span = self.ctx.tracer.begin("llm", self.name, turn, fused=True)

    # --- model side -------------------------------------------------------------

    async def _read_events(self) -> None:
        assert self.session is not None
        async for event in self.session.events():
            try:
                await self._handle(event)
            except Exception as exc:  # the conversation goes on
                self.ctx.log.error("fused stage '%s': %s", self.name, exc)

    def _media(self, at: float) -> float:
        return (self._input_origin or 0.0) + at

    async def _handle(self, event: FusedEvent) -> None:
        ctx = self.ctx
        if isinstance(event, UserStarted):
            self._user_onset = self._media(event.at)
            if self.fused.turn_taking == "model" and self._agent_speaking \
                    and self._reply_turn is not None:
                now = self.now()
                ctx.tracer.record("interruption", self.name, self._reply_turn,
                                  self._user_onset, now, reason="model_vad")
                await self.push(Interrupt(conversation=ctx.conversation,
                                          turn=self._reply_turn, time=now, reason="model_vad"))
        elif isinstance(event, UserStopped) and self.fused.turn_taking == "model":
            end = self._media(event.at)
            onset = self._user_onset if self._user_onset is not None else end
            turn = ctx.turn
            ctx.turn = turn + 1
            ctx.tracer.record("user_speech", self.name, turn, onset, end,
                              duration=round(end - onset, 3))
            ctx.tracer.record("end_of_turn", self.name, turn, end, self.now(),
                              reason="model_vad", text="", turn_taking="model",
                              delay=round(self.now() - end, 4))
            self._begin_reply(turn)
        elif isinstance(event, UserText):
            await self._user_transcript(event.text)
        elif isinstance(event, AgentText):
            self._first_output()
            self._reply_text.append(event.text)
        elif isinstance(event, AgentAudioChunk):
            await self._agent_audio(event)
        elif isinstance(event, ReplyDone):
            await self._reply_done(event.cancelled)

    async def _user_transcript(self, text: str) -> None:
        ctx = self.ctx
        turn = self._reply_turn if self._reply_turn is not None else ctx.turn
        now = self.now()
        ctx.tracer.record("asr", self.name, turn, now, now, text=text.strip(), fused=True)
        await self.push(Transcript(conversation=ctx.conversation, turn=turn, time=now,
                                   text=text.strip(), final=True))

    async def _agent_audio(self, chunk: AgentAudioChunk) -> None:
        turn = self._reply_turn
        if turn is None:
            return
        rate = self.ctx.sample_rate
        self._first_output()
        if not self._first_audio:
            self._first_audio = True
            span = self._reply_span
            if span is not None:
                self.ctx.tracer.record("tts", self.name, turn, span.start, self.now(),
                                       ttfb=round(self.now() - span.start, 4), fused=True)
        for frame in self._frames.cut(resample(chunk.pcm, chunk.sample_rate, rate)):
            await self._send(turn, frame)

    def _first_output(self) -> None:
        if self._ttft is None and self._reply_span is not None:
            self._ttft = self.now() - self._reply_span.start

    async def _send(self, turn: int, pcm: PCM, reply_end: bool = False) -> None:
        await self.push(AgentAudio(
            conversation=self.ctx.conversation, turn=turn, time=self.now(), pcm=pcm,
            sample_rate=self.ctx.sample_rate, text=" ".join(self._reply_text).strip(),
            clause_end=reply_end, reply_end=reply_end))

    async def _reply_done(self, cancelled: bool) -> None:
        turn = self._reply_turn
        if turn is None:
            return
        text = "".join(self._reply_text).strip()
        tail = self._frames.rest()
        if not cancelled:
            await self._send(turn, tail, reply_end=True)
        span, self._reply_span = self._reply_span, None
        if span is not None:
            ttft = None if self._ttft is None else round(self._ttft, 4)
            span.end(text=text, ttft=ttft, cancelled=cancelled)
        await self.push(LLMReply(conversation=self.ctx.conversation, turn=turn,
                                 time=self.now(), text=text))
        self._reply_turn = None

    # --- agent speech feedback ----------------------------------------------------

    async def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, AgentSpeechStarted):
            self._agent_speaking = True
            self._agent_started = frame.time
        elif isinstance(frame, AgentSpeechStopped):
            self._agent_speaking = False
        elif isinstance(frame, Interrupt) and self.session is not None:
            played = max(0.0, frame.time - self._agent_started) if self._agent_speaking else 0.0
            self._frames.rest()  # a cut reply's tail is never played
            await self.session.cancel(played)
