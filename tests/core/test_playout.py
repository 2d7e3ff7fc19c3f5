"""Playout: agent audio paced on the clock, cut at once by an interrupt."""

from __future__ import annotations

import numpy as np
import pytest

from cascade import MemoryTrace, VirtualClock
from cascade.frames import (
    AgentAudio,
    AgentSpeechStarted,
    AgentSpeechStopped,
    Cancel,
    EndOfStream,
    Frame,
    Interrupt,
)
from cascade.graph import Graph
from cascade.playout import AudioSink, Playout, heard_text
from cascade.recording import CallRecorder
from tests.core.harness import CONVERSATION, context, within

RATE = 16000
CLAUSES = ("one two three four", "five six seven eight")


class TimedSink:
    """An AudioSink that notes when each chunk was handed over and where it was placed."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.plays: list[tuple[float, float]] = []
        self.clears: list[float] = []

    def play(self, frame: AgentAudio, at: float) -> None:
        self.plays.append((self.clock.now(), at))

    def clear(self, at: float) -> None:
        self.clears.append(at)


def reply(chunk: float, clause_seconds: float = 1.0, turn: int = 1) -> list[AgentAudio]:
    """Two clauses of four words, ``clause_seconds`` each, cut into ``chunk``-second frames."""
    per_clause = round(clause_seconds / chunk)
    frames = []
    for c, text in enumerate(CLAUSES):
        for i in range(per_clause):
            frames.append(AgentAudio(
                conversation=CONVERSATION, turn=turn, time=0.0,
                pcm=np.full(round(chunk * RATE), 1000, np.int16), sample_rate=RATE, text=text,
                clause_seconds=clause_seconds, clause_end=i == per_clause - 1,
                reply_end=c == len(CLAUSES) - 1 and i == per_clause - 1,
            ))
    return frames


class Call:
    """A graph holding one Playout, with its trace and every frame playout emitted."""

    def __init__(self, clock: VirtualClock, sink: AudioSink | None) -> None:
        self.clock = clock
        self.trace = MemoryTrace()
        self.playout = Playout(sink)
        self.graph = Graph({"playout": self.playout}, [], context(clock, self.trace))
        self.emitted: list[tuple[Frame, float]] = []
        self.graph.observers.append(lambda _, f: self.emitted.append((f, clock.now())))

    def stopped(self) -> list[tuple[AgentSpeechStopped, float]]:
        return [(f, t) for f, t in self.emitted if isinstance(f, AgentSpeechStopped)]

    async def play(self, frames: list[AgentAudio], cut: Frame | None = None,
                   at: float = 0.0, end: float = 5.0) -> None:
        """Queue ``frames`` at t=0, send ``cut`` at ``at``, end the input at ``end``."""
        await self.graph.start()
        try:
            for frame in frames:
                await self.graph.send(frame)
            if cut is not None:
                await self.clock.sleep_until(at)
                await self.graph.send(cut)
            await self.clock.sleep_until(end)
            await self.graph.send(EndOfStream(conversation=CONVERSATION, turn=1, time=end))
            await within(self.graph.wait_finished())
        finally:
            await self.graph.stop()


def interrupt(turn: int = 1) -> Interrupt:
    return Interrupt(conversation=CONVERSATION, turn=turn, time=0.0, reason="speech")


def test_audio_is_paced_and_the_span_lasts_as_long_as_the_audio() -> None:
    clock = VirtualClock()
    sink = TimedSink(clock)
    call = Call(clock, sink)
    clock.run(call.play(reply(chunk=0.02)))

    assert len(sink.plays) == 100
    for index, (handed, at) in enumerate(sink.plays):
        assert handed == pytest.approx(index * 0.02, abs=1e-9), "audio handed over early"
        assert at == pytest.approx(index * 0.02, abs=1e-9)
    [span] = call.trace.named("agent_speech")
    assert (span.start, span.turn) == (0.0, 1)
    assert span.end - span.start == pytest.approx(2.0)
    assert span.attrs["interrupted"] is False
    assert span.attrs["text"] == " ".join(CLAUSES)
    started = [t for f, t in call.emitted if isinstance(f, AgentSpeechStarted)]
    assert started == [0.0]
    [(stop, when)] = call.stopped()
    assert (stop.interrupted, stop.spoken_text) == (False, " ".join(CLAUSES))
    assert when == pytest.approx(2.0)
    assert sink.clears == []


def test_a_reply_starting_later_starts_its_span_then() -> None:
    clock = VirtualClock()
    call = Call(clock, None)

    async def late() -> None:
        await clock.sleep(3.0)
        await call.play(reply(chunk=0.25, clause_seconds=0.5), end=10.0)

    clock.run(late())
    [span] = call.trace.named("agent_speech")
    assert span.start == 3.0
    assert span.end == pytest.approx(4.0)


def test_interrupt_stops_at_once_and_reports_what_was_heard() -> None:
    clock = VirtualClock()
    sink = TimedSink(clock)
    call = Call(clock, sink)
    clock.run(call.play(reply(chunk=0.2), cut=interrupt(), at=1.5))

    [span] = call.trace.named("agent_speech")
    assert span.end == 1.5
    assert span.attrs["interrupted"] is True
    heard = "one two three four five six"
    assert span.attrs["text"] == heard
    assert len(heard.split()) < len(" ".join(CLAUSES).split())
    [(stop, when)] = call.stopped()
    assert (stop.interrupted, stop.spoken_text, stop.turn, when) == (True, heard, 1, 1.5)
    assert stop.time == 1.5
    # Nothing more was handed to the sink after the cut, and the sink was told to clear.
    assert max(handed for handed, _ in sink.plays) <= 1.5
    assert len(sink.plays) == 8
    assert sink.clears == [1.5]
    assert not call.playout.speaking
    assert len(call.graph.inbox("playout")) == 0


def test_call_recorder_loses_the_agent_audio_after_the_interrupt() -> None:
    clock = VirtualClock()
    recorder = CallRecorder(RATE)
    recorder.add_user(np.zeros(RATE * 3, np.int16), 0.0)
    call = Call(clock, recorder)
    clock.run(call.play(reply(chunk=0.2), cut=interrupt(), at=1.5, end=3.0))

    assert recorder.agent_seconds() == pytest.approx(1.5)
    agent = recorder.render()[:, 1]
    assert len(agent) == 3 * RATE
    assert (agent[: int(1.5 * RATE)] == 1000).all()
    assert (agent[int(1.5 * RATE):] == 0).all()


def test_interrupt_of_an_earlier_turn_leaves_the_reply_playing() -> None:
    clock = VirtualClock()
    call = Call(clock, None)
    clock.run(call.play(reply(chunk=0.2, turn=2), cut=interrupt(turn=1), at=0.5))

    [span] = call.trace.named("agent_speech")
    assert span.attrs["interrupted"] is False
    assert span.end == pytest.approx(2.0)
    assert [(f.interrupted, f.spoken_text) for f, _ in call.stopped()] == [
        (False, " ".join(CLAUSES))]


def test_heard_text_counts_whole_clauses_and_the_played_share() -> None:
    assert heard_text(["one two"], "three four five six", 0.5, 1.0) == "one two three four"
    assert heard_text(["one two"], "three four", 0.0, 1.0) == "one two"
    assert heard_text([], "three four", 1.0, 1.0) == "three four"
    assert heard_text(["a"], "", 0.0, 0.0) == "a"


def test_heard_text_matches_the_audio_actually_played_with_20ms_frames() -> None:
    clock = VirtualClock()
    call = Call(clock, None)
    # 1.51 s into 2 s of audio: the first clause and about half of the second played.
    clock.run(call.play(reply(chunk=0.02), cut=interrupt(), at=1.51))

    [(stop, _)] = call.stopped()
    assert stop.spoken_text == "one two three four five six"


def test_cancel_while_playing_still_reports_the_agent_speech_stopped() -> None:
    clock = VirtualClock()
    call = Call(clock, None)
    cancel = Cancel(conversation=CONVERSATION, turn=2, time=0.0, reason="caller_resumed")
    clock.run(call.play(reply(chunk=0.2), cut=cancel, at=0.5, end=5.0))

    stops = call.stopped()
    assert stops, "no AgentSpeechStopped at all"
    assert stops[0][1] <= 2.0, f"agent speech reported stopped only at t={stops[0][1]}"
