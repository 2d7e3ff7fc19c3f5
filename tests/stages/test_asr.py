"""ASRStage through a real graph (energy VAD -> ASR -> turn controller) on the virtual
clock: every closed segment gets its final transcript, in segment order, even when the
recogniser fails - the failure is an ``error`` span and an ``ErrorFrame``, the segment is
heard as nothing, and the next segment is recognised and ends the turn."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import numpy as np
import numpy.typing as npt
import pytest

from cascade.adapters.provider import ProviderError
from cascade.adapters.scripted import EnergyVAD, EnergyVADOptions
from cascade.clock import VirtualClock
from cascade.frames import EndOfTurn, ErrorFrame, SpeechStopped, SystemFrame, Transcript
from cascade.graph import Graph
from cascade.stages.asr import ASROptions, ASRStage, Recognition
from cascade.stages.turn import TurnController, TurnOptions
from cascade.tracing import MemoryTrace
from tests.adapters.harness import Collector, Run, context, drive, play
from tests.conftest import babble, script, silence

REFUSED = "adapter 'flaky-asr' (http://127.0.0.1:9/v1) failed to connect (Connection refused)"


class Listener(Collector):
    """The collector, also keeping the control frames that reach it (ErrorFrame)."""

    async def on_system(self, frame: SystemFrame) -> None:
        self.frames.append(frame)


class ScriptASR(ASRStage):
    """Answers each recognition with the next line of its script; an exception is raised."""

    def __init__(self, *lines: str | Exception, partial_interval: float = 0.0) -> None:
        super().__init__(ASROptions(partial_interval=partial_interval))
        self.lines = list(lines)

    def recognize(self, audio: npt.NDArray[np.float32]) -> Recognition:
        line = self.lines.pop(0)
        if isinstance(line, Exception):
            raise line
        return Recognition(line, avg_logprob=-0.1, no_speech_prob=0.01)


def listening(asr: ASRStage) -> tuple[Run, TurnController]:
    """energy VAD -> ``asr`` -> turn controller, the transcripts and the ends of turn
    (and every ErrorFrame) reaching a ``Listener``."""
    clock = VirtualClock()
    trace = MemoryTrace()
    ctx = context(clock, trace)
    turn = TurnController(TurnOptions())
    listener = Listener(Transcript, EndOfTurn)
    stages = {"vad": EnergyVAD(EnergyVADOptions()), "asr": asr, "turn": turn,
              "collect": listener}
    edges = [("vad", "asr"), ("asr", "turn"), ("asr", "collect"), ("turn", "collect")]
    return Run(Graph(stages, edges, ctx), ctx, trace, listener), turn


def converse(asr: ASRStage, *utterances: float) -> tuple[Run, TurnController]:
    """The caller says each utterance (seconds of babble) with 1.5 s of silence around it."""
    run, turn = listening(asr)
    parts = [silence(0.5)]
    for seed, seconds in enumerate(utterances):
        parts += [babble(seconds, seed=seed + 1), silence(1.5)]
    run.ctx.clock.run(drive(run, play(script(*parts)), deadline=120))
    return run, turn


def finals(run: Run) -> list[str]:
    return [f.text for f in run.collector.of(Transcript) if isinstance(f, Transcript) and f.final]


def ends(run: Run) -> list[tuple[int, str]]:
    return [(f.turn, f.text) for f in run.collector.of(EndOfTurn) if isinstance(f, EndOfTurn)]


def error_frames(run: Run) -> list[ErrorFrame]:
    return [f for f in run.collector.of(ErrorFrame) if isinstance(f, ErrorFrame)]


@pytest.mark.parametrize(("lines", "heard", "turns", "failed_turn"), [
    ((ProviderError(REFUSED), "hello there"), ["", "hello there"], [(1, "hello there")], 1),
    (("hello there", ProviderError(REFUSED), "goodbye"), ["hello there", "", "goodbye"],
     [(1, "hello there"), (2, "goodbye")], 2),
], ids=["first-segment-fails", "a-later-turn-fails"])
def test_a_failed_segment_is_an_error_heard_as_nothing_and_the_next_is_heard(
        lines: tuple[str | Exception, ...], heard: list[str], turns: list[tuple[int, str]],
        failed_turn: int, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, "cascade.test"):
        run, turn = converse(ScriptASR(*lines), *[1.0] * len(lines))
    assert finals(run) == heard  # one final per segment, in order, the failed one empty
    assert ends(run) == turns  # the turn controller did not wait for the failed segment
    assert turn.pending_finals == 0
    (error,) = run.trace.named("error")  # at the failure, not at the end of the stream
    assert (error.stage, error.turn) == ("asr", failed_turn)
    assert error.attrs["error"] == f"ProviderError: {REFUSED}"
    assert error.attrs["frame"] == "SpeechStopped"
    (frame,) = error_frames(run)
    assert (frame.stage, frame.turn, frame.message) == ("asr", failed_turn,
                                                        error.attrs["error"])
    rejected = [s.attrs["rejected"] for s in run.trace.named("asr")]
    assert rejected == [None if text else "error" for text in heard]
    (log,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "stage 'asr' failed on turn" in log and "while recognising the speech" in log
    assert "heard as nothing" in log and REFUSED in log


def test_every_segment_failing_is_one_error_each_and_no_turn() -> None:
    failure = ProviderError(REFUSED)
    run, turn = converse(ScriptASR(failure, failure), 1.0, 1.0)
    assert finals(run) == ["", ""]
    assert [e.turn for e in run.trace.named("error")] == [1, 1]
    assert len(error_frames(run)) == 2
    assert ends(run) == [] and turn.pending_finals == 0  # nothing heard: nothing to answer


class LateFailure(ASRStage):
    """A streaming recogniser whose first segment fails 5 s after it closed, when the
    second one is over too."""

    def __init__(self) -> None:
        super().__init__(ASROptions(partial_interval=0.0))
        self.segments = 0

    def segment_stopped(self, stop: SpeechStopped, audio: npt.NDArray[np.float32]
                        ) -> Callable[[], Awaitable[Recognition]]:
        self.segments += 1
        return self._fail_late if self.segments == 1 else self._hello

    async def _fail_late(self) -> Recognition:
        await self.ctx.clock.sleep(5.0)
        raise ProviderError("adapter 'late-asr': no result of Finalize within 5 s")

    async def _hello(self) -> Recognition:
        return Recognition("hello there", avg_logprob=-0.1)


def test_finals_keep_segment_order_when_an_earlier_segment_fails_late() -> None:
    run, _ = converse(LateFailure(), 1.0, 1.0)
    transcripts = [f for f in run.collector.of(Transcript) if isinstance(f, Transcript)]
    assert [f.text for f in transcripts] == ["", "hello there"]
    assert transcripts[0].speech_end < transcripts[1].speech_start
    assert ends(run) == [(1, "hello there")]
    (error,) = run.trace.named("error")
    assert "no result of Finalize" in error.attrs["error"]
    assert error.start >= transcripts[0].speech_end + 5.0


class BrokenHook(ScriptASR):
    """``segment_stopped`` itself raises on the first segment."""

    broke = False

    def segment_stopped(self, stop: SpeechStopped, audio: npt.NDArray[np.float32]
                        ) -> Callable[[], Awaitable[Recognition]]:
        if not self.broke:
            self.broke = True
            raise RuntimeError("the socket is gone")
        return super().segment_stopped(stop, audio)


def test_a_hook_that_raises_fails_only_its_segment() -> None:
    run, turn = converse(BrokenHook("hello there"), 1.0, 1.0)
    assert finals(run) == ["", "hello there"]
    assert ends(run) == [(1, "hello there")] and turn.pending_finals == 0
    (error,) = run.trace.named("error")
    assert error.attrs["error"] == "RuntimeError: the socket is gone"


class FailingPartials(ScriptASR):
    """Partials (recognised while the caller speaks) fail; finals work."""

    def recognize(self, audio: npt.NDArray[np.float32]) -> Recognition:
        if self._in_speech:
            raise ProviderError("partial refused")
        return super().recognize(audio)


def test_a_failed_partial_is_logged_and_the_final_is_recognised_afresh(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "cascade.test"):
        run, _ = converse(FailingPartials("hello there", partial_interval=0.4), 1.5)
    assert finals(run) == ["hello there"]
    assert ends(run) == [(1, "hello there")]
    assert not run.trace.named("error")  # the segment was heard: nothing failed for it
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all("partial transcript failed" in w and "partial refused" in w
                            for w in warnings)



class FailingFinals(ASRStage):
    """Partials (recognised while the caller speaks) hear ``partials`` in turn (the last
    one from then on); the final fails."""

    def __init__(self, *partials: str) -> None:
        super().__init__(ASROptions(partial_interval=0.4))
        self.partials = list(partials)

    def recognize(self, audio: npt.NDArray[np.float32]) -> Recognition:
        if not self._in_speech:
            raise ProviderError("final refused")
        text = self.partials.pop(0) if len(self.partials) > 1 else self.partials[0]
        return Recognition(text, avg_logprob=-0.1, no_speech_prob=0.01)


@pytest.mark.parametrize("partials", [("hello there",), ("hello there", "")],
                         ids=["last-partial", "last-partial-that-heard-words"])
def test_a_failed_final_falls_back_to_the_last_partial_so_the_words_are_not_lost(
        partials: tuple[str, ...], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, "cascade.test"):
        run, turn = converse(FailingFinals(*partials), 1.5)
    assert finals(run) == ["hello there"]
    assert ends(run) == [(1, "hello there")]  # the agent answers what was heard
    assert turn.pending_finals == 0
    (error,) = run.trace.named("error")  # still a failure, traced and sent as one
    assert error.attrs["error"] == "ProviderError: final refused"
    assert len(error_frames(run)) == 1
    (span,) = run.trace.named("asr")
    assert span.attrs["salvaged_partial"] is True and span.attrs["rejected"] is None
    (log,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "the last partial transcript stands in for the final" in log
