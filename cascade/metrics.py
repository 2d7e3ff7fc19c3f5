"""Per-turn latency metrics, derived only from trace spans.

Because every number comes from spans, a cascade and a fused model are
measured the same way, and a trace file is enough to recompute everything.
Voice-to-voice latency runs from the end of the caller's speech (the start of
the ``end_of_turn`` span) to the first agent audio sample (the start of the
``agent_speech`` span).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cascade.tracing import Span, spans_by_turn

METRIC_NAMES = ("endpointing", "asr", "llm_ttft", "tts_ttfb", "voice_to_voice", "barge_in_stop")


@dataclass(slots=True)
class TurnMetrics:
    """What one turn cost, stage by stage (seconds; None where it did not happen)."""

    turn: int
    heard: str = ""
    reply: str = ""
    end_reason: str | None = None
    endpointing: float | None = None
    asr: float | None = None
    llm_ttft: float | None = None
    tts_ttfb: float | None = None
    voice_to_voice: float | None = None
    barge_in_stop: float | None = None
    interrupted: bool = False
    errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _first(spans: Sequence[Span], name: str) -> Span | None:
    return next((s for s in spans if s.name == name), None)


def _last(spans: Sequence[Span], name: str) -> Span | None:
    return next((s for s in reversed(spans) if s.name == name), None)


def turn_metrics(spans: Iterable[Span]) -> list[TurnMetrics]:
    """One ``TurnMetrics`` per turn that has an end of turn or an agent reply."""
    out = []
    for turn, group in spans_by_turn(spans):
        eot = _first(group, "end_of_turn")
        speech = _first(group, "agent_speech")
        if eot is None and speech is None:
            continue
        m = TurnMetrics(turn=turn)
        asr = _last(group, "asr")
        llm = _first(group, "llm")
        tts = _first(group, "tts")
        if eot is not None:
            m.heard = str(eot.attrs.get("text", ""))
            reason = eot.attrs.get("reason")
            m.end_reason = None if reason is None else str(reason)
            m.endpointing = eot.end - eot.start
            if speech is not None:
                m.voice_to_voice = speech.start - eot.start
        if asr is not None:
            m.asr = asr.end - asr.start
        if llm is not None:
            m.reply = str(llm.attrs.get("text", ""))
            ttft = llm.attrs.get("ttft")
            m.llm_ttft = None if ttft is None else float(ttft)
        if tts is not None and tts.attrs.get("ttfb") is not None:
            m.tts_ttfb = float(tts.attrs["ttfb"])
        cut = _first(group, "interruption")
        if speech is not None and speech.attrs.get("interrupted"):
            m.interrupted = True
            if cut is not None:
                m.barge_in_stop = speech.end - cut.start
        m.errors = sum(1 for s in group if s.name == "error")
        out.append(m)
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sequence."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(metrics: Iterable[TurnMetrics]) -> dict[str, dict[str, float]]:
    """p50/p95/mean/n of every latency metric over the turns that have it."""
    rows = list(metrics)
    summary: dict[str, dict[str, float]] = {}
    for name in METRIC_NAMES:
        values = [v for v in (getattr(m, name) for m in rows) if v is not None]
        if values:
            summary[name] = {
                "p50": percentile(values, 50),
                "p95": percentile(values, 95),
                "mean": sum(values) / len(values),
                "n": float(len(values)),
            }
    return summary
