"""Prometheus metrics of a phone server: calls, media, errors and per-turn latency.

Each server owns a ``PhoneMetrics`` with its own registry (two servers in one
process never collide). Turn latencies are not measured here: a ``CallTrace``
sink sees every span of a call and, when a turn's agent reply starts, feeds
that turn's ``cascade.metrics.turn_metrics`` into the histograms — the same
numbers ``cascade trace`` prints, from the same spans.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from cascade.metrics import METRIC_NAMES, turn_metrics
from cascade.tracing import Span

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class PhoneMetrics:
    """The counters, gauges and histograms one phone server exports."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.registry = CollectorRegistry()
        reg = self.registry
        self.active_calls = Gauge("cascade_phone_active_calls", "Calls in progress",
                                  registry=reg)
        self.calls = Counter("cascade_phone_calls", "Call attempts by outcome",
                             ["outcome"], registry=reg)
        self.errors = Counter("cascade_phone_errors", "Bad input and failures by kind",
                              ["kind"], registry=reg)
        self.interruptions = Counter("cascade_phone_interruptions",
                                     "Agent replies cut by the caller", registry=reg)
        self.media = Counter("cascade_phone_media_frames", "Media frames by direction "
                             "and fate", ["direction", "fate"], registry=reg)
        self.turn_latency = Histogram("cascade_turn_latency_seconds", "Per-turn latency "
                                      "from trace spans", ["metric"], buckets=LATENCY_BUCKETS,
                                      registry=reg)
        self.playout_confirm = Histogram("cascade_phone_playout_confirm_seconds",
                                         "Time from when agent audio was due to play until "
                                         "the carrier confirmed it played (marks)",
                                         buckets=LATENCY_BUCKETS, registry=reg)
        self.call_seconds = Histogram("cascade_phone_call_seconds", "Call durations",
                                      buckets=(5, 15, 30, 60, 120, 300, 600, 1800),
                                      registry=reg)

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def call(self, outcome: str) -> None:
        self.calls.labels(outcome).inc()

    def render(self) -> bytes:
        out: bytes = generate_latest(self.registry)
        return out

    def call_trace(self) -> CallTrace:
        return CallTrace(self)


class CallTrace:
    """A trace sink for one call: counts interruptions/errors, observes turn latencies.

    Holds only the spans of turns not yet reported (at most ``max_turns`` turns of at
    most ``max_spans`` spans each), so a long call cannot grow it without bound.
    """

    def __init__(self, metrics: PhoneMetrics, max_turns: int = 4, max_spans: int = 256) -> None:
        self.metrics = metrics
        self.max_turns = max_turns
        self.max_spans = max_spans
        self._turns: dict[int, list[Span]] = {}

    def write(self, span: Span) -> None:
        if span.name == "interruption":
            self.metrics.interruptions.inc()
        elif span.name == "error":
            self.metrics.error("stage")
        spans = self._turns.setdefault(span.turn, [])
        if len(spans) < self.max_spans:
            spans.append(span)
        if span.name == "agent_speech":
            self._report(span.turn)
        while len(self._turns) > self.max_turns:
            self._report(min(self._turns))

    def _report(self, turn: int) -> None:
        spans = self._turns.pop(turn, [])
        for metrics in turn_metrics(spans):
            for name in METRIC_NAMES:
                value = getattr(metrics, name)
                if value is not None:
                    self.metrics.turn_latency.labels(name).observe(max(0.0, value))

    def close(self) -> None:
        for turn in sorted(self._turns):
            self._report(turn)
