"""The per-turn and summary tables rendered from hand-built spans."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cascade.trace_report import milliseconds, shorten, summary_table, turn_table
from tests.core.sample_trace import span, two_turn_conversation


def render(table: Table) -> list[str]:
    """The table as plain text lines with runs of spaces collapsed."""
    console = Console(record=True, width=200)
    console.print(table)
    return [" ".join(line.split()) for line in console.export_text().splitlines()]


def row(lines: list[str], first_cell: str) -> str:
    matches = [line for line in lines if line.startswith(first_cell + " ")]
    assert len(matches) == 1, f"expected one row starting with {first_cell!r} in {lines}"
    return matches[0]


def test_one_row_per_turn_with_latencies_in_milliseconds() -> None:
    table = turn_table(two_turn_conversation())
    assert table.row_count == 2
    lines = render(table)
    assert "Turns of conversation call-1" in lines
    first, second = row(lines, "1"), row(lines, "2")
    # end reason, endpointing, ASR, LLM TTFT, TTS TTFB, voice-to-voice, barge-in stop,
    # interrupted, errors
    assert first.endswith("silence 300 120 250 80 680 300 yes 0")
    assert second.endswith("silence 300 120 180 60 560 - no 1")
    assert "no thanks, just today Alright, enjoy the sunshine!" in second


def test_long_text_is_truncated() -> None:
    first = row(render(turn_table(two_turn_conversation(), text_width=20)), "1")
    assert "hello there, what's… It is sunny and war…" in first
    assert "weather" not in first and "today" not in first
    second = row(render(turn_table(two_turn_conversation(), text_width=20)), "2")
    assert "no thanks, just tod… Alright, enjoy the… silence" in second


def test_text_is_shown_literally_not_as_markup() -> None:
    spans = [
        span(1, "turn", "end_of_turn", 1.0, 1.3, reason="silence", text="[laughs] [bold]ok"),
        span(1, "playout", "agent_speech", 1.8, 2.5, interrupted=False, text="fine"),
    ]
    assert "[laughs] [bold]ok" in row(render(turn_table(spans)), "1")


def test_turn_without_caller_speech_has_dashes() -> None:
    greeting = [
        span(0, "llm", "llm", 0.0, 0.6, text="Hi, how can I help?", ttft=0.2, user=""),
        span(0, "tts", "tts", 0.2, 0.3, text="Hi, how can I help?", ttfb=0.05),
        span(0, "playout", "agent_speech", 0.25, 1.5, interrupted=False,
             text="Hi, how can I help?"),
    ]
    greeting_row = row(render(turn_table(greeting)), "0")
    assert greeting_row == "0 Hi, how can I help? - - - 200 50 - - no 0"


def test_no_spans_no_rows() -> None:
    assert turn_table([]).row_count == 0


def test_summary_has_percentiles_per_metric() -> None:
    lines = render(summary_table(two_turn_conversation()))
    # metric, turns, p50, p95, mean
    assert "Endpointing 2 300 300 300" in lines
    assert "ASR 2 120 120 120" in lines
    assert "LLM TTFT 2 215 246 215" in lines
    assert "TTS TTFB 2 70 79 70" in lines
    assert "Voice-to-voice 2 620 674 620" in lines
    assert "Barge-in stop 1 300 300 300" in lines


def test_summary_lists_metrics_that_never_happened() -> None:
    spans = [s for s in two_turn_conversation() if s.name != "interruption"]
    lines = render(summary_table(spans))
    assert "Barge-in stop 0 - - -" in lines


def test_formatting() -> None:
    assert milliseconds(0.4316) == "432"
    assert milliseconds(None) == "-"
    assert shorten("  a  b\n c ", 10) == "a b c"
    assert shorten("abcdefghij", 5) == "abcd…"
