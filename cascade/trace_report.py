"""Trace reports for the terminal: per-turn latencies and their percentiles as rich tables.

Every number comes from ``cascade.metrics`` so the tables show exactly what the
metrics compute; this module only formats (milliseconds, truncated text, no
rich markup taken from what the caller or the agent said).
"""

from __future__ import annotations

from collections.abc import Iterable

from rich import box
from rich.table import Table
from rich.text import Text

from cascade.metrics import METRIC_NAMES, TurnMetrics, summarize, turn_metrics
from cascade.tracing import Span

METRIC_LABELS = {
    "endpointing": "Endpointing",
    "asr": "ASR",
    "llm_ttft": "LLM TTFT",
    "tts_ttfb": "TTS TTFB",
    "voice_to_voice": "Voice-to-voice",
    "barge_in_stop": "Barge-in stop",
}
COLUMN_HEADERS = {
    "endpointing": "End-\npoint",
    "asr": "ASR",
    "llm_ttft": "LLM\nTTFT",
    "tts_ttfb": "TTS\nTTFB",
    "voice_to_voice": "Voice\nto voice",
    "barge_in_stop": "Barge-in\nstop",
}
MISSING = "-"


def milliseconds(seconds: float | None) -> str:
    """``0.4312`` -> ``"431"``; ``None`` (did not happen) -> ``"-"``."""
    return MISSING if seconds is None else f"{seconds * 1000:.0f}"


def shorten(text: str, width: int) -> str:
    """Collapse whitespace and cut ``text`` to ``width`` characters, ending in an ellipsis."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    return flat[: max(width - 1, 0)].rstrip() + "…"


def _title(spans: list[Span], what: str) -> str:
    conversations = sorted({s.conversation for s in spans})
    if len(conversations) == 1:
        return f"{what} of conversation {conversations[0]}"
    return what


def _turn_row(m: TurnMetrics, text_width: int) -> list[str | Text]:
    interrupted = Text("yes", style="bold red") if m.interrupted else Text("no", style="dim")
    errors = Text(str(m.errors), style="bold red") if m.errors else Text("0", style="dim")
    return [
        str(m.turn),
        Text(shorten(m.heard, text_width)),
        Text(shorten(m.reply, text_width)),
        Text(m.end_reason or MISSING),
        *(milliseconds(getattr(m, name)) for name in METRIC_NAMES),
        interrupted,
        errors,
    ]


def turn_table(spans: Iterable[Span], text_width: int = 36) -> Table:
    """One row per turn: what was heard and replied, why the turn ended, latencies in ms."""
    spans = list(spans)
    table = Table(title=_title(spans, "Turns"), caption="latencies in milliseconds",
                  box=box.SIMPLE_HEAD)
    table.add_column("Turn", justify="right", no_wrap=True, min_width=4)
    table.add_column("Heard", overflow="fold", min_width=8)
    table.add_column("Reply", overflow="fold", min_width=8)
    table.add_column("End", overflow="fold", min_width=7)
    for name in METRIC_NAMES:
        header = COLUMN_HEADERS[name]
        table.add_column(header, justify="right", no_wrap=True,
                         min_width=max(len(line) for line in header.splitlines()))
    table.add_column("Inter-\nrupted", justify="center", no_wrap=True, min_width=6)
    table.add_column("Errors", justify="right", no_wrap=True, min_width=6)
    for m in turn_metrics(spans):
        table.add_row(*_turn_row(m, text_width))
    return table


def summary_table(spans: Iterable[Span]) -> Table:
    """p50/p95/mean of every latency metric (ms) over the turns where it happened."""
    spans = list(spans)
    summary = summarize(turn_metrics(spans))
    table = Table(title=_title(spans, "Latency summary"), caption="milliseconds",
                  box=box.SIMPLE_HEAD)
    table.add_column("Metric")
    table.add_column("Turns", justify="right")
    for column in ("p50", "p95", "mean"):
        table.add_column(column, justify="right")
    for name in METRIC_NAMES:
        stats = summary.get(name)
        if stats is None:
            table.add_row(METRIC_LABELS[name], "0", MISSING, MISSING, MISSING, style="dim")
            continue
        table.add_row(
            METRIC_LABELS[name],
            str(int(stats["n"])),
            milliseconds(stats["p50"]),
            milliseconds(stats["p95"]),
            milliseconds(stats["mean"]),
        )
    return table
