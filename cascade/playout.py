"""The output end of a graph: plays agent audio on the clock and says what was heard.

``Playout`` paces ``AgentAudio`` in real time on the pipeline clock, hands each
chunk to an ``AudioSink`` (a file recorder, a phone socket, a speaker), emits
``AgentSpeechStarted``/``AgentSpeechStopped`` and records the ``agent_speech``
span. On an interrupt it stops at once, tells the sink to clear what it
buffered, and reports the text the caller actually heard.
"""

from __future__ import annotations

from typing import Protocol

from cascade.frames import (
    AgentAudio,
    AgentSpeechStarted,
    AgentSpeechStopped,
    Cancel,
    Frame,
    Interrupt,
    SystemFrame,
)
from cascade.stage import Stage
from cascade.tracing import OpenSpan


class AudioSink(Protocol):
    """Where played agent audio goes."""

    def play(self, frame: AgentAudio, at: float) -> None: ...

    def clear(self, at: float) -> None: ...


class NullSink:
    """Discards agent audio (benchmarks, tests that only read traces)."""

    def play(self, frame: AgentAudio, at: float) -> None:
        pass

    def clear(self, at: float) -> None:
        pass


def heard_text(done: list[str], clause: str, played: float, received: float) -> str:
    """Completed clauses plus the share of the current clause that played."""
    words = clause.split()
    if words and received > 0:
        share = min(1.0, played / received)
        done = [*done, " ".join(words[: int(len(words) * share + 1e-6)])]
    return " ".join(part for part in done if part).strip()


class Playout(Stage):
    """Plays agent audio at real-time pace and reports agent speech."""

    accepts = (AgentAudio,)
    interruptible = True

    def __init__(self, sink: AudioSink | None = None, lead: float = 0.0) -> None:
        self.sink: AudioSink = sink or NullSink()
        self.lead = lead
        self._span: OpenSpan | None = None
        self._turn = -1
        self._cursor = 0.0
        self._clauses: list[str] = []
        self._clause = ""
        self._clause_closed = True
        self._clause_received = 0.0
        self._clause_audio = 0.0
        self._clause_started = 0.0

    @property
    def speaking(self) -> bool:
        return self._span is not None

    async def process(self, frame: Frame) -> None:
        assert isinstance(frame, AgentAudio)
        if self._span is None and not len(frame.pcm):
            return
        clock = self.ctx.clock
        now = clock.now()
        if self._span is None or frame.turn != self._turn:
            if self._span is not None:
                await self._stopped(interrupted=False)
            self._turn = frame.turn
            self._cursor = now
            self._clauses, self._clause, self._clause_closed = [], "", True
            self._span = self.ctx.tracer.begin("agent_speech", self.name, frame.turn, now)
            await self.push(AgentSpeechStarted(
                conversation=self.ctx.conversation, turn=frame.turn, time=now))
        if self._clause_closed:
            if self._clause:
                self._clauses.append(self._clause)
            self._clause, self._clause_received, self._clause_audio = frame.text, 0.0, 0.0
            self._clause_started = max(self._cursor, now)
            self._clause_closed = False
        duration = len(frame.pcm) / frame.sample_rate
        self._clause_audio += duration
        self._clause_received = max(self._clause_audio, frame.clause_seconds)
        start = max(self._cursor, now)
        self.sink.play(frame, start)
        playback = self.ctx.playback
        if playback is not None and frame.sample_rate == self.ctx.sample_rate:
            playback.write(frame.pcm, start)
        self._cursor = start + duration
        due = self._cursor - self.lead
        if due > now:  # behind already (or a lead covers it): no sleep, no task switch
            await clock.sleep_until(due)
        self._clause_closed = frame.clause_end
        if frame.reply_end:
            await self._stopped(interrupted=False)

    async def _stopped(self, interrupted: bool) -> None:
        span = self._span
        if span is None:
            return
        self._span = None
        now = self.now()
        if interrupted:
            self.sink.clear(now)
            if self.ctx.playback is not None:
                self.ctx.playback.erase_after(now)
            end = now
        else:
            end = max(now, self._cursor)
        if interrupted:
            played = min(max(0.0, now - self._clause_started), self._clause_received)
            spoken = heard_text(self._clauses, self._clause, played, self._clause_received)
        else:
            spoken = " ".join(c for c in [*self._clauses, self._clause] if c)
        span.end(end, interrupted=interrupted, text=spoken)
        self._clause = ""
        await self.push(AgentSpeechStopped(
            conversation=self.ctx.conversation, turn=span.turn, time=end,
            spoken_text=spoken, interrupted=interrupted))

    async def on_system(self, frame: SystemFrame) -> None:
        if (isinstance(frame, (Interrupt, Cancel)) and self._span is not None
                and self._turn <= frame.turn):
            await self._stopped(interrupted=True)

    async def stop(self) -> None:
        """The call ended (hang-up): close the agent_speech span at what was heard."""
        span = self._span
        if span is not None:
            self._span = None
            now = self.now()
            played = min(max(0.0, now - self._clause_started), self._clause_received)
            span.end(min(now, max(self._cursor, span.start)), interrupted=True, stopped=True,
                     text=heard_text(self._clauses, self._clause, played,
                                     self._clause_received))

    async def finish(self) -> None:
        if self._span is not None:
            await self.ctx.clock.sleep_until(self._cursor)
            await self._stopped(interrupted=False)
