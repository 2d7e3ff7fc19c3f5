"""Per-turn latency metrics, computed from hand-built spans."""

from __future__ import annotations

from typing import Any

import pytest

from cascade.metrics import METRIC_NAMES, TurnMetrics, percentile, summarize, turn_metrics
from cascade.tracing import Span


def span(turn: int, name: str, start: float, end: float, **attrs: Any) -> Span:
    stage = {"user_speech": "vad", "end_of_turn": "turn", "interruption": "turn",
             "agent_speech": "playout"}.get(name, name)
    return Span("call", turn, stage, name, start, end, attrs)


def interrupted_turn() -> list[Span]:
    """Turn 1: asked, answered, cut off by the caller (spans in recording order)."""
    return [
        span(1, "user_speech", 0.5, 2.0),
        span(1, "asr", 2.0, 2.08, text="hello"),
        span(1, "asr", 2.0, 2.12, text="hello there"),
        span(1, "end_of_turn", 2.0, 2.3, reason="silence", text="hello there"),
        span(1, "tts", 2.9, 3.0, ttfb=0.05),
        span(1, "tts", 2.6, 2.8, ttfb=0.08),
        span(1, "llm", 2.3, 3.1, text="Hi. How can I help?", ttft=0.25),
        span(1, "interruption", 5.8, 6.05, reason="speech"),
        span(1, "agent_speech", 2.7, 6.1, interrupted=True, text="Hi. How"),
        span(1, "error", 6.2, 6.2, error="ValueError: x"),
        span(1, "error", 6.3, 6.3, error="ValueError: y"),
    ]


def by_turn(spans: list[Span]) -> dict[int, TurnMetrics]:
    return {m.turn: m for m in turn_metrics(spans)}


def test_every_metric_of_an_interrupted_turn() -> None:
    [m] = turn_metrics(interrupted_turn())
    assert m.turn == 1
    assert (m.heard, m.reply, m.end_reason) == ("hello there", "Hi. How can I help?", "silence")
    assert m.endpointing == pytest.approx(0.3)
    assert m.voice_to_voice == pytest.approx(0.7)  # end of speech 2.0 -> first audio 2.7
    assert m.asr == pytest.approx(0.12)  # the last recognition of the turn
    assert m.llm_ttft == 0.25
    assert m.tts_ttfb == 0.08  # the first clause synthesised, not the first recorded
    assert m.interrupted is True
    assert m.barge_in_stop == pytest.approx(0.3)  # caller onset 5.8 -> audio stopped 6.1
    assert m.errors == 2


def test_a_turn_without_speech_or_reply_is_skipped_and_turns_come_in_order() -> None:
    spans = [
        span(3, "end_of_turn", 9.0, 9.4, reason="unfinished_timeout", text="and"),
        span(2, "user_speech", 7.0, 7.2),
        span(2, "asr", 7.2, 7.3, text="", rejected="too_short"),
        *interrupted_turn(),
    ]
    metrics = turn_metrics(spans)
    assert [m.turn for m in metrics] == [1, 3]
    late = metrics[1]
    assert late.endpointing == pytest.approx(0.4)
    assert late.end_reason == "unfinished_timeout"
    assert (late.voice_to_voice, late.llm_ttft, late.tts_ttfb, late.barge_in_stop) == (
        None, None, None, None)
    assert (late.interrupted, late.errors, late.reply) == (False, 0, "")


def test_a_greeting_has_a_reply_but_no_voice_to_voice() -> None:
    [m] = turn_metrics([
        span(0, "llm", 0.0, 0.1, text="Hello!", ttft=None),
        span(0, "agent_speech", 0.2, 1.0, interrupted=False, text="Hello!"),
    ])
    assert m.turn == 0
    assert (m.endpointing, m.voice_to_voice, m.end_reason, m.llm_ttft) == (
        None, None, None, None)
    assert m.reply == "Hello!"
    assert m.interrupted is False


def test_barge_in_stop_needs_both_an_interrupted_reply_and_an_interruption() -> None:
    cut_without_span = by_turn([
        span(1, "end_of_turn", 1.0, 1.3, reason="silence", text="hi"),
        span(1, "agent_speech", 1.8, 2.5, interrupted=True),
    ])[1]
    assert cut_without_span.interrupted is True
    assert cut_without_span.barge_in_stop is None
    played_out = by_turn([
        span(1, "end_of_turn", 1.0, 1.3, reason="silence", text="hi"),
        span(1, "interruption", 2.0, 2.1, reason="caller_resumed"),
        span(1, "agent_speech", 1.8, 2.5, interrupted=False),
    ])[1]
    assert (played_out.interrupted, played_out.barge_in_stop) == (False, None)
    assert played_out.voice_to_voice == pytest.approx(0.8)


def test_an_end_of_turn_without_a_reason_has_no_end_reason() -> None:
    [m] = turn_metrics([span(1, "end_of_turn", 1.0, 1.3, text="hi")])
    assert m.end_reason is None


def test_as_dict_has_every_metric() -> None:
    [m] = turn_metrics(interrupted_turn())
    row = m.as_dict()
    assert set(METRIC_NAMES) <= set(row)
    assert row["turn"] == 1 and row["interrupted"] is True


@pytest.mark.parametrize(("q", "expected"), [
    (0, 1.0), (25, 1.75), (50, 2.5), (95, 3.85), (100, 4.0)])
def test_percentile_interpolates_linearly(q: float, expected: float) -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], q) == pytest.approx(expected)


def test_percentile_of_one_value_and_of_none() -> None:
    assert percentile([0.7], 0) == percentile([0.7], 95) == 0.7
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_summarize_covers_only_metrics_that_happened() -> None:
    rows = [TurnMetrics(turn=1, voice_to_voice=1.0, endpointing=0.3),
            TurnMetrics(turn=2, voice_to_voice=3.0, endpointing=0.5),
            TurnMetrics(turn=3, endpointing=0.4)]
    summary = summarize(rows)
    assert set(summary) == {"voice_to_voice", "endpointing"}
    assert summary["voice_to_voice"] == {"p50": 2.0, "p95": pytest.approx(2.9), "mean": 2.0,
                                         "n": 2.0}
    assert summary["endpointing"]["n"] == 3.0
    assert summary["endpointing"]["p50"] == pytest.approx(0.4)
    assert summarize([]) == {}
