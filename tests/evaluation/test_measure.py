"""Per-event metrics from hand-placed spans against a known caller track."""

from __future__ import annotations

import pytest

from cascade.evaluation.audio_build import CallerTrack, build_track
from cascade.evaluation.measure import measure_call, word_error_rate
from cascade.evaluation.scenarios import Scenario
from cascade.tracing import Span
from tests.evaluation.harness import suite, tone_voice

ORIGIN = 10.0  # the track's first sample on the pipeline clock


@pytest.fixture(scope="module")
def track(tmp_path_factory: pytest.TempPathFactory) -> CallerTrack:
    scenario = Scenario.model_validate({"id": "call", "events": [
        {"say": "one two three [1.0s] four five"},
        {"kind": "barge_in", "say": "stop please", "after": 1.5},
        {"kind": "backchannel", "say": "mm hmm", "after": 0.5},
        {"say": "what is the time", "after": 6.0},
    ]})
    return build_track(scenario, suite(), tone_voice(tmp_path_factory.mktemp("tts")), 0)


def span(name: str, turn: int, start: float, end: float, **attrs: object) -> Span:
    """A span at track times (shifted onto the pipeline clock)."""
    return Span("c", turn, "x", name, start + ORIGIN, end + ORIGIN, dict(attrs))


def test_a_call_is_measured_from_the_true_ends_of_speech(track: CallerTrack) -> None:
    first, barge, backchannel, last = track.events
    pause_end = first.pieces[0][1]
    spans = [
        # turn 1 ends too early, in the pause, and its reply starts over the caller
        span("end_of_turn", 1, pause_end, pause_end + 0.3, text="one two three"),
        span("agent_speech", 1, pause_end + 0.6, first.pieces[1][0] + 0.4, interrupted=True,
             text="You said"),
        span("interruption", 1, first.pieces[1][0], first.pieces[1][0] + 0.1, reason="speech"),
        # the real end of turn 1, answered 0.8 s after the caller stopped
        span("end_of_turn", 2, first.end, first.end + 0.35, text="four five"),
        span("llm", 2, first.end + 0.35, first.end + 0.6, ttft=0.2, text="Okay."),
        span("tts", 2, first.end + 0.6, first.end + 0.7, ttfb=0.1),
        span("agent_speech", 2, first.end + 0.8, barge.start + 0.7, interrupted=True,
             text="Okay and then"),
        span("interruption", 2, barge.start + 0.05, barge.start + 0.6, reason="speech"),
        span("end_of_turn", 3, barge.end, barge.end + 0.3, text="stop please"),
        span("agent_speech", 3, barge.end + 0.4, last.start - 1.0, interrupted=False,
             text="Sure."),
        # the backchannel stopped the agent: a false interruption
        span("interruption", 3, backchannel.start, backchannel.start + 0.5, reason="speech"),
        # the last turn is never answered
        span("end_of_turn", 4, last.end, last.end + 0.3, text="what is the time"),
    ]
    measure = measure_call("sys", track, spans, ORIGIN)
    r1, r2, r3, r4 = measure.rows

    assert r1.early_endpoints == 1 and r1.system_turn == 2
    assert r1.endpointing == pytest.approx(0.35)
    assert r1.voice_to_voice == pytest.approx(0.8)
    assert r1.heard == "one two three four five" and r1.wer == 0.0
    assert r1.reply == "Okay and then" and r1.answered and r1.missed is False
    assert r1.spurious_replies == 1  # the early reply answered half a sentence
    assert r1.false_interruptions == 0  # the caller resuming is a real turn
    assert r1.marks == pytest.approx({"end_of_turn": 0.35, "llm_first_token": 0.55,
                                      "tts_first_audio": 0.7, "agent_audio": 0.8})
    early_overlap = first.pieces[1][0] + 0.4 - first.pieces[1][0]
    assert r1.talk_over == pytest.approx(early_overlap)

    assert r2.kind == "barge_in" and r2.agent_speaking_at_onset
    assert r2.barge_in_stop == pytest.approx(0.7) and r2.barge_in_honoured
    assert r2.voice_to_voice == pytest.approx(0.4)
    assert r2.false_interruptions == 1  # the backchannel's, in this turn's window
    # reply 2 ran over the whole barge-in; reply 3 over the whole backchannel
    assert r2.talk_over == pytest.approx(barge.end - barge.start
                                         + backchannel.end - backchannel.start)

    assert r3.kind == "backchannel" and r3.agent_speaking_at_onset and r3.interrupted_agent

    assert r4.missed is True and r4.voice_to_voice is None and r4.endpointing == pytest.approx(0.3)
    assert measure.agent_replies == 3 and measure.spurious_replies == 1


def test_a_barge_in_that_lands_in_silence_has_no_stop_latency(track: CallerTrack) -> None:
    first, _barge, _, _ = track.events
    spans = [span("end_of_turn", 1, first.end, first.end + 0.3, text="x"),
             span("agent_speech", 1, first.end + 0.5, first.end + 1.0, interrupted=False)]
    row = measure_call("sys", track, spans, ORIGIN).rows[1]
    assert row.agent_speaking_at_onset is False and row.barge_in_stop is None
    assert row.missed is True


def test_no_transcript_means_no_wer(track: CallerTrack) -> None:
    first = track.events[0]
    spans = [span("end_of_turn", 1, first.end, first.end + 0.3, text=""),
             span("agent_speech", 1, first.end + 0.5, first.end + 1.0, interrupted=False)]
    row = measure_call("sys", track, spans, ORIGIN).rows[0]
    assert row.heard is None and row.wer is None and row.answered


def test_word_error_rate_ignores_case_and_punctuation() -> None:
    assert word_error_rate("Book it for Tuesday.", "book it for tuesday") == 0.0
    assert word_error_rate("one two three four", "one two four") == 0.25
    assert word_error_rate("", "") == 0.0
