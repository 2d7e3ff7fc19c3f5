"""Agent replies as Realtime responses, from ``response.created`` to ``response.done``.

``Replies`` is the output half of a realtime session: it is the playout's audio
sink (each played chunk becomes a ``response.output_audio.delta`` at 24 kHz),
turns the reply's text into transcript deltas, and closes each response with
the events a client expects (``…audio.done``, ``…transcript.done``,
``…content_part.done``, ``…output_item.done``, ``response.done`` with status
``completed``, ``cancelled`` or ``failed``). One response is open at a time and
belongs to one turn; output of a turn whose response was closed is dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cascade.clock import Clock
from cascade.frames import PCM, AgentAudio
from cascade.servers.realtime_protocol import (
    WIRE_RATE,
    Resampler,
    SessionState,
    assistant_item,
    encode_audio,
    new_id,
    response_object,
)

Emit = Callable[..., None]
"""``emit(event_type, **fields)``: queue one server event."""


@dataclass(slots=True)
class Reply:
    """One agent reply as the client sees it."""

    id: str
    item_id: str
    turn: int
    active_at: float
    transcript: list[str] = field(default_factory=list)
    from_llm: bool = False
    audio: Resampler | None = None
    samples: int = 0
    speaking: bool = False
    cancel_reason: str | None = None

    def text(self) -> str:
        return "".join(self.transcript)

    def ids(self) -> dict[str, Any]:
        return {"response_id": self.id, "item_id": self.item_id, "output_index": 0,
                "content_index": 0}


class Replies:
    """The open response (if any), the audio sent per item, and the conversation's order."""

    def __init__(self, emit: Emit, clock: Clock, settings: SessionState,
                 reply_timeout: float) -> None:
        self.emit = emit
        self.clock = clock
        self.settings = settings
        self.reply_timeout = reply_timeout
        self.current: Reply | None = None
        self.last_item: str | None = None
        """The newest conversation item (``previous_item_id`` of the next)."""
        self._closed_turn = -1
        self._sent: dict[str, int] = {}
        self._watchdog: asyncio.Task[None] | None = None

    def samples_sent(self, item_id: str) -> int | None:
        """Audio samples (24 kHz) sent for an assistant item, None if there is no such item."""
        if self.current is not None and self.current.item_id == item_id:
            return self.current.samples
        return self._sent.get(item_id)

    def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()

    # --- the playout's sink -----------------------------------------------------------

    def play(self, frame: AgentAudio, at: float) -> None:
        """Each chunk of agent audio goes out as the playout plays it."""
        if not len(frame.pcm):
            return
        reply = self.for_turn(frame.turn)
        if reply is None:
            return
        if not reply.from_llm and frame.text:
            self._audio_text(reply, frame.text)
        if reply.audio is None:
            reply.audio = Resampler(frame.sample_rate, WIRE_RATE)
        self._audio(reply, reply.audio.push(frame.pcm))

    def clear(self, at: float) -> None:
        """Playout was cut: ``response.done`` (cancelled) tells the client."""

    # --- content ----------------------------------------------------------------------

    def llm_text(self, turn: int, clause: str) -> None:
        reply = self.for_turn(turn)
        if reply is not None and clause.strip():
            reply.from_llm = True
            self._text(reply, (" " if reply.transcript else "") + clause.strip())

    def _audio_text(self, reply: Reply, text: str) -> None:
        """Transcript from the audio's own text, for pipelines without LLM clauses
        (a fused model behind the server: its text grows with each chunk)."""
        current = reply.text()
        if text.startswith(current):
            delta = text[len(current):]
        elif current.endswith(text):
            return
        else:
            delta = " " + text
        if delta.strip():
            self._text(reply, delta)

    def _text(self, reply: Reply, delta: str) -> None:
        reply.transcript.append(delta)
        reply.active_at = self.clock.now()
        self.emit("response.output_audio_transcript.delta", **reply.ids(), delta=delta)

    def _audio(self, reply: Reply, pcm: PCM) -> None:
        if not len(pcm):
            return
        reply.samples += len(pcm)
        reply.active_at = self.clock.now()
        self.emit("response.output_audio.delta", **reply.ids(), delta=encode_audio(pcm))

    # --- lifecycle --------------------------------------------------------------------

    def for_turn(self, turn: int, open_new: bool = True) -> Reply | None:
        """The response carrying the reply to ``turn`` (opened when the turn is new)."""
        reply = self.current
        if reply is not None:
            if reply.turn == turn:
                return reply
            if turn < reply.turn:
                return None  # output of a reply that was already closed
            self.close(reply, "completed" if reply.speaking else "cancelled")
        if not open_new or turn <= self._closed_turn:
            return None
        return self.open(turn)

    def open(self, turn: int) -> Reply:
        reply = Reply(new_id("resp"), new_id("item"), turn, self.clock.now())
        self.current = reply
        self.emit("response.created", response=response_object(
            reply.id, "in_progress", [], voice=self.settings.voice))
        item = assistant_item(reply.item_id, "", "in_progress")
        self.emit("response.output_item.added", response_id=reply.id, output_index=0,
                  item=item)
        self.emit("conversation.item.created", previous_item_id=self.last_item, item=item)
        self.last_item = reply.item_id
        self.emit("response.content_part.added", **reply.ids(),
                  part={"type": "audio", "transcript": ""})
        self._watchdog = asyncio.create_task(self._watch(reply))
        return reply

    async def _watch(self, reply: Reply) -> None:
        """Close a response the pipeline stopped working on (e.g. it heard no words)."""
        while self.current is reply:
            idle = self.clock.now() - reply.active_at
            if idle >= self.reply_timeout and not reply.speaking:
                self.close(reply, "failed", error=f"the pipeline produced no reply within "
                           f"{self.reply_timeout:g} s (were words heard in the audio?)")
                return
            await asyncio.sleep(self.reply_timeout if reply.speaking
                                else max(0.05, self.reply_timeout - idle))

    def close(self, reply: Reply, status: str, error: str | None = None) -> None:
        """End ``reply`` with ``status`` (no-op when it is already closed)."""
        if self.current is not reply:
            return
        self.current = None
        self._closed_turn = max(self._closed_turn, reply.turn)
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        self._watchdog = None
        if status == "completed" and reply.audio is not None:
            self._audio(reply, reply.audio.flush())
        self._sent[reply.item_id] = reply.samples
        text = reply.text().strip()
        item = assistant_item(reply.item_id, text,
                              "completed" if status == "completed" else "incomplete")
        self.emit("response.output_audio.done", **reply.ids())
        self.emit("response.output_audio_transcript.done", **reply.ids(), transcript=text)
        self.emit("response.content_part.done", **reply.ids(),
                  part={"type": "audio", "transcript": text})
        self.emit("response.output_item.done", response_id=reply.id, output_index=0,
                  item=item)
        reason = reply.cancel_reason if status == "cancelled" else None
        self.emit("response.done", response=response_object(
            reply.id, status, [item], voice=self.settings.voice, reason=reason, error=error))
