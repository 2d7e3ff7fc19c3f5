"""One OpenAI-Realtime connection served by one Cascade conversation.

The session watches the graph (an observer; the playout's audio sink is ``Replies``) and
translates what the pipeline does into protocol events:

===============================  ==============================================
pipeline                         server events
===============================  ==============================================
VAD ``SpeechStarted/Stopped``    ``input_audio_buffer.speech_started/stopped``
``EndOfTurn``                    ``input_audio_buffer.committed``,
                                 ``conversation.item.created`` (user),
                                 ``…input_audio_transcription.completed``,
                                 ``response.created`` …
``LLMText`` clauses              ``response.output_audio_transcript.delta``
agent audio played by playout    ``response.output_audio.delta`` (24 kHz)
``AgentSpeechStopped``           … ``response.done`` (``completed`` or, when cut,
                                 ``cancelled``)
===============================  ==============================================

Turn-taking follows ``session.audio.input.turn_detection``:

* ``server_vad`` (default): caller audio streams into the graph as it arrives;
  the pipeline's own VAD and turn controller decide when a turn ends and when a
  barge-in cuts the reply, exactly as in a phone call (so a backchannel does not
  cut the agent, unlike a plain VAD). Audio is stamped by arrival; audio pushed
  faster than real time is heard at real-time pace, so the reply comes when the
  caller would have finished speaking. ``commit`` and ``response.create`` are
  refused in this mode (the controller does both), as are ``create_response``
  and ``interrupt_response`` set to false.
* ``null`` (manual): appended audio is held back. ``input_audio_buffer.commit``
  makes it a user item; as in the OpenAI API, nothing is said until
  ``response.create``, which feeds the committed audio to the
  graph, stamped so that it ends *now*, followed by enough silence for the VAD
  to close the utterance. The pipeline's VAD, ASR and turn controller then run
  over it as usual and the reply is that turn's reply. We chose this over
  injecting an ``EndOfTurn`` because the turn controller would still emit its
  own (two replies), and because the ASR's final transcript needs the VAD's
  end of speech anyway. The cost: the reply starts after the controller's
  endpoint delay (``min_delay``, typically 0.3 s) counted from the end of the
  committed audio. Committed audio in which the pipeline hears no words never
  ends a turn; ``reply_timeout`` later the response is closed as ``failed``.

``response.cancel`` and ``conversation.item.truncate`` of the reply being
played broadcast an ``Interrupt`` to the graph, as a barge-in would.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import numpy as np
from pydantic import BaseModel

from cascade.audio import FrameCutter, split_frames
from cascade.clock import RealClock
from cascade.conversation import Pipeline
from cascade.frames import (
    PCM,
    AgentSpeechStarted,
    AgentSpeechStopped,
    Cancel,
    EndOfTurn,
    ErrorFrame,
    Frame,
    Interrupt,
    LLMReply,
    LLMText,
    SpeechStarted,
    SpeechStopped,
    UserAudio,
)
from cascade.playout import Playout
from cascade.servers.connection import Outbox
from cascade.servers.realtime_protocol import (
    MIN_COMMIT_SECONDS,
    WIRE_RATE,
    AudioAppend,
    AudioClear,
    AudioCommit,
    ClientEvent,
    ItemTruncate,
    RealtimeProtocolError,
    Resampler,
    ResponseCancel,
    ResponseCreate,
    SessionState,
    SessionUpdate,
    decode_audio,
    error_event,
    new_id,
    parse_client_event,
    server_event,
    user_item,
)
from cascade.servers.realtime_replies import Replies, Reply
from cascade.tracing import TraceSink

log = logging.getLogger("cascade.realtime")
MAX_MEDIA_LAG = 0.5
"""Live audio may be stamped this far behind the clock (network jitter)."""


class RealtimeSession:
    """Protocol events in, protocol events out, one ``Conversation`` in between."""

    def __init__(self, pipeline: Pipeline, send: Callable[[str], Awaitable[None]], *,
                 model: str = "", reply_timeout: float = 10.0, lead: float = 0.2,
                 traces: Iterable[TraceSink] = ()) -> None:
        self.settings = SessionState(model=model or pipeline.config.name)
        self._outbox = Outbox(send, log, f"session {self.settings.id}")
        self.clock = RealClock()
        self.replies = Replies(self._emit, self.clock, self.settings, reply_timeout)
        self.conversation = pipeline.conversation(
            self.clock, sink=self.replies, traces=traces, conversation_id=self.settings.id)
        self.rate = self.conversation.rate
        graph = self.conversation.graph
        graph.observers.append(self._observe)
        playout = graph.stages.get("playout")
        if isinstance(playout, Playout):
            playout.lead = lead  # a little audio ahead: the client's jitter buffer
        self._tail = _vad_silence(pipeline) + 0.3
        self._input = Resampler(WIRE_RATE, self.rate)
        self._frames = FrameCutter(self.rate)
        self._media_origin: float | None = None
        self._media_end: float | None = None
        self._pending: list[PCM] = []
        self._committed: list[PCM] = []
        self._committed_item: str | None = None
        self._user_item: str | None = None
        self._speech_onset: float | None = None

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        self._outbox.start()
        self._emit("session.created", session=self.settings.wire())
        await self.conversation.start()

    async def close(self) -> None:
        self.replies.stop()
        await self.conversation.stop()
        await self._outbox.close()

    def _emit(self, kind: str, **fields: Any) -> None:
        self._put(server_event(kind, **fields))

    def _put(self, event: dict[str, Any]) -> None:
        self._outbox.put(json.dumps(event))

    # --- client events ----------------------------------------------------------------

    async def handle(self, raw: str | bytes) -> None:
        """Act on one client message; a bad one is answered by an ``error`` event."""
        try:
            event = parse_client_event(raw)
            await self._dispatch(event)
        except RealtimeProtocolError as exc:
            self._put(error_event(exc))
        except Exception as exc:  # a bug here must not hang up on the caller
            log.exception("session %s: failed on a client event", self.settings.id)
            self.report(exc)

    def report(self, exc: Exception) -> None:
        """Tell the client about a failure on the server's side."""
        self._put(error_event(RealtimeProtocolError(
            f"{type(exc).__name__}: {exc}", code="server_error", kind="server_error")))

    async def _dispatch(self, event: ClientEvent) -> None:
        try:
            if isinstance(event, AudioAppend):
                await self._append(decode_audio(event.audio))
            elif isinstance(event, SessionUpdate):
                await self._update(event)
            elif isinstance(event, AudioCommit):
                self._commit()
            elif isinstance(event, AudioClear):
                self._pending, self._input = [], Resampler(WIRE_RATE, self.rate)
                self._emit("input_audio_buffer.cleared")
            elif isinstance(event, ResponseCreate):
                await self._create_response()
            elif isinstance(event, ResponseCancel):
                await self._cancel(event.response_id)
            elif isinstance(event, ItemTruncate):
                await self._truncate(event)
        except RealtimeProtocolError as exc:
            exc.event_id = exc.event_id or event.event_id
            raise

    async def _update(self, event: SessionUpdate) -> None:
        was_manual = self.settings.manual
        self.settings.apply(event.session)
        if event.session.instructions is not None:
            self._apply_instructions(event.session.instructions)
        if was_manual and not self.settings.manual and self._pending:
            pending, self._pending = self._pending, []
            for pcm in pending:
                await self._feed_live(pcm)
        self._emit("session.updated", session=self.settings.wire())

    def _apply_instructions(self, text: str) -> None:
        """Instructions become this conversation's system prompt (LLM stages that have one)."""
        for stage in self.conversation.graph.stages.values():
            options = getattr(stage, "options", None)
            if isinstance(options, BaseModel) and "system_prompt" in type(options).model_fields:
                stage.options = options.model_copy(  # type: ignore[attr-defined]
                    update={"system_prompt": text})

    async def _append(self, pcm: PCM) -> None:
        pcm = self._input.push(pcm)
        if self.settings.manual:
            self._pending.append(pcm)
        else:
            await self._feed_live(pcm)

    async def _feed_live(self, pcm: PCM) -> None:
        """Stream caller audio into the graph in 20 ms frames stamped by arrival."""
        for pcm_frame in self._frames.cut(pcm):
            now = self.clock.now()
            at = now if self._media_end is None else max(self._media_end, now - MAX_MEDIA_LAG)
            await self.conversation.send(self._frame(pcm_frame, at))

    def _frame(self, pcm: PCM, at: float) -> UserAudio:
        if self._media_origin is None:
            self._media_origin = at
        self._media_end = at + len(pcm) / self.rate
        return UserAudio(conversation=self.conversation.id, turn=self.conversation.ctx.turn,
                         time=at, pcm=pcm, sample_rate=self.rate)

    def _commit(self) -> None:
        if not self.settings.manual:
            raise RealtimeProtocolError(
                "input_audio_buffer.commit is for manual turns (turn_detection: null); with "
                "server_vad the pipeline's turn controller commits", code="invalid_request")
        self._pending.append(self._input.flush())
        audio = np.concatenate(self._pending)
        if len(audio) < MIN_COMMIT_SECONDS * self.rate:
            raise RealtimeProtocolError(
                f"buffer too small: {len(audio) / self.rate * 1000:.0f} ms of audio; commit at "
                f"least {MIN_COMMIT_SECONDS * 1000:.0f} ms",
                code="input_audio_buffer_commit_empty")
        self._pending = []
        self._committed.append(audio)
        item = new_id("item")
        self._emit("input_audio_buffer.committed", item_id=item,
                   previous_item_id=self.replies.last_item)
        self._emit("conversation.item.created", previous_item_id=self.replies.last_item,
                   item=user_item(item, None))
        self.replies.last_item = self._committed_item = item

    async def _create_response(self) -> None:
        if self.replies.current is not None:
            raise RealtimeProtocolError(
                f"response {self.replies.current.id} is still in progress: cancel it or wait for "
                "its response.done", code="conversation_already_has_active_response")
        if not self.settings.manual:
            raise RealtimeProtocolError(
                "with server_vad the pipeline's turn controller starts responses; set "
                "turn_detection to null to commit turns and ask for responses yourself",
                code="invalid_request")
        if not self._committed:
            raise RealtimeProtocolError(
                "nothing to answer: append caller audio and commit it first (this server "
                "answers spoken turns only)", code="input_audio_buffer_empty")
        audio, self._committed = np.concatenate(self._committed), []
        self.replies.open(self.conversation.ctx.turn)  # the turn this audio will form
        tail = np.zeros(int(self._tail * self.rate), np.int16)
        duration = len(audio) / self.rate
        at = max(self._media_end or 0.0, self.clock.now() - duration)
        end = at + duration
        for chunk in split_frames(np.concatenate([audio, tail]), self.rate):
            await self.conversation.send(self._frame(chunk, at))
            at += len(chunk) / self.rate
        # The silence we added is no caller audio: the next turn may start where the
        # caller's audio ended, or the media clock would run ahead by a tail each turn.
        self._media_end = end

    async def _cancel(self, response_id: str | None) -> None:
        reply = self.replies.current
        if reply is None or (response_id is not None and response_id != reply.id):
            raise RealtimeProtocolError(
                "there is no response in progress to cancel"
                if reply is None else f"response {response_id} is not in progress",
                code="response_cancel_not_active")
        await self._interrupt(reply, "client_cancelled")

    async def _truncate(self, event: ItemTruncate) -> None:
        samples = self.replies.samples_sent(event.item_id)
        if samples is None:
            raise RealtimeProtocolError(f"no assistant audio item '{event.item_id}'",
                                        code="item_not_found", param="item_id")
        if event.content_index != 0:
            raise RealtimeProtocolError("assistant items have one content part: use 0",
                                        code="invalid_value", param="content_index")
        sent_ms = samples * 1000 // WIRE_RATE
        if event.audio_end_ms > sent_ms:
            raise RealtimeProtocolError(
                f"audio_end_ms {event.audio_end_ms} is past the {sent_ms} ms of audio sent "
                "for this item", code="invalid_value", param="audio_end_ms")
        reply = self.replies.current
        if reply is not None and reply.item_id == event.item_id:
            await self._interrupt(reply, "client_cancelled")
        self._emit("conversation.item.truncated", item_id=event.item_id, content_index=0,
                   audio_end_ms=event.audio_end_ms)

    async def _interrupt(self, reply: Reply, reason: str) -> None:
        """Cut the reply in the pipeline, as a barge-in would."""
        reply.cancel_reason = reason
        ctx = self.conversation.ctx
        now = self.clock.now()
        ctx.tracer.record("interruption", "realtime", reply.turn, now, now, reason=reason)
        await self.conversation.graph.broadcast(Interrupt(
            conversation=ctx.conversation, turn=reply.turn, time=now, reason=reason))
        self.replies.close(reply, "cancelled")  # no-op when playout already reported it

    # --- what the pipeline does --------------------------------------------------------

    def _observe(self, stage: str, frame: Frame) -> None:
        manual = self.settings.manual
        if isinstance(frame, SpeechStarted):
            if self._user_item is None:
                self._user_item = new_id("item")
                self._speech_onset = frame.time
            if not manual:
                self._emit("input_audio_buffer.speech_started", item_id=self._user_item,
                           audio_start_ms=self._media_ms(frame.time))
        elif isinstance(frame, SpeechStopped):
            if not manual and self._user_item is not None:
                self._emit("input_audio_buffer.speech_stopped", item_id=self._user_item,
                           audio_end_ms=self._media_ms(frame.time))
        elif isinstance(frame, EndOfTurn):
            self._end_of_turn(frame, manual)
        elif isinstance(frame, LLMText):
            self.replies.llm_text(frame.turn, frame.text)
        elif isinstance(frame, LLMReply):
            reply = self.replies.for_turn(frame.turn, open_new=False)
            if reply is not None and not reply.speaking and not frame.text.strip():
                self.replies.close(reply, "completed")  # the model had nothing to say
        elif isinstance(frame, AgentSpeechStarted):
            reply = self.replies.for_turn(frame.turn)
            if reply is not None:
                reply.speaking = True
        elif isinstance(frame, AgentSpeechStopped):
            reply = self.replies.for_turn(frame.turn, open_new=False)
            if reply is not None:
                self.replies.close(reply, "cancelled" if frame.interrupted else "completed")
        elif isinstance(frame, (Interrupt, Cancel)):
            reply = self.replies.current
            if reply is not None and reply.turn <= frame.turn:
                reply.cancel_reason = reply.cancel_reason or "turn_detected"
                if not reply.speaking:
                    self.replies.close(reply, "cancelled")
        elif isinstance(frame, ErrorFrame):
            self._put(error_event(RealtimeProtocolError(
                f"stage '{frame.stage}' failed: {frame.message}", code="pipeline_error",
                kind="server_error")))
            reply = self.replies.current
            if reply is not None and reply.turn == frame.turn and not reply.speaking:
                self.replies.close(reply, "failed", error=f"stage '{frame.stage}' failed")

    def _media_ms(self, at: float) -> int:
        return max(0, round((at - (self._media_origin or 0.0)) * 1000))

    def _end_of_turn(self, frame: EndOfTurn, manual: bool) -> None:
        text = frame.text.strip()
        if manual and self._committed_item is not None:
            item = self._committed_item
        else:
            item = self._user_item or new_id("item")
            self._emit("input_audio_buffer.committed", item_id=item,
                       previous_item_id=self.replies.last_item)
            self._emit("conversation.item.created", previous_item_id=self.replies.last_item,
                       item=user_item(item, text or None))
            self.replies.last_item = item
        onset = self._speech_onset if self._speech_onset is not None else frame.speech_end
        self._user_item = self._speech_onset = self._committed_item = None
        if text:
            self._emit("conversation.item.input_audio_transcription.completed", item_id=item,
                       content_index=0, transcript=text,
                       usage={"type": "duration",
                              "seconds": round(max(0.0, frame.speech_end - onset), 3)})
            self.replies.for_turn(frame.turn)


def _vad_silence(pipeline: Pipeline) -> float:
    """Silence the pipeline's VAD needs before it reports the end of speech."""
    for adapter, options in pipeline.adapters.values():
        if adapter.kind == "vad":
            return float(getattr(options, "min_silence", 0.2))
    return 0.2
