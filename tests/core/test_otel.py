"""OpenTelemetry export: conversation -> turn -> stage spans with wall-clock timestamps."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from cascade.clock import VirtualClock
from cascade.errors import MissingDependency
from cascade.otel import OtelTraceSink
from cascade.tracing import Span, Tracer
from tests.core.sample_trace import two_turn_conversation

ORIGIN = 1_700_000_000_000_000_000


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


@pytest.fixture
def sink(exporter: InMemorySpanExporter) -> OtelTraceSink:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return OtelTraceSink(ORIGIN, tracer_provider=provider)


def ns(seconds: float) -> int:
    return ORIGIN + round(seconds * 1e9)


def export(sink: OtelTraceSink, exporter: InMemorySpanExporter,
           spans: list[Span]) -> list[ReadableSpan]:
    for span in spans:
        sink.write(span)
    sink.close()
    return list(exporter.get_finished_spans())


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def test_spans_form_a_conversation_turn_stage_tree(
    sink: OtelTraceSink, exporter: InMemorySpanExporter
) -> None:
    spans = two_turn_conversation()
    exported = export(sink, exporter, list(reversed(spans)))  # order must not matter
    assert len(exported) == len(spans) + 3

    [root] = [s for s in exported if s.name == "conversation"]
    assert parent_id(root) is None
    assert root.attributes == {"cascade.conversation": "call-1"}
    assert (root.start_time, root.end_time) == (ns(0.5), ns(9.7))

    turns = {s.attributes["cascade.turn"]: s for s in exported if s.name == "turn"}
    assert sorted(turns) == [1, 2]
    assert all(parent_id(t) == root.context.span_id for t in turns.values())
    assert (turns[1].start_time, turns[1].end_time) == (ns(0.5), ns(6.1))
    assert (turns[2].start_time, turns[2].end_time) == (ns(5.8), ns(9.7))

    stages = [s for s in exported if s.name not in ("conversation", "turn")]
    assert sorted(s.name for s in stages) == sorted(s.name for s in spans)
    for stage in stages:
        turn = stage.attributes["cascade.turn"]
        assert parent_id(stage) == turns[turn].context.span_id, stage.name
    assert {s.context.trace_id for s in exported} == {root.context.trace_id}


def test_stage_spans_keep_times_and_attrs(
    sink: OtelTraceSink, exporter: InMemorySpanExporter
) -> None:
    exported = export(sink, exporter, two_turn_conversation())
    by_name = {(s.name, s.attributes["cascade.turn"]): s for s in exported
               if s.name not in ("conversation", "turn")}
    asr = by_name[("asr", 1)]
    assert (asr.start_time, asr.end_time) == (ns(2.0), ns(2.12))
    assert asr.attributes == {
        "cascade.conversation": "call-1", "cascade.turn": 1, "cascade.stage": "asr",
        "text": "hello there, what's the weather like today",
        "avg_logprob": -0.21, "no_speech_prob": 0.01, "audio_seconds": 1.8,
    }  # rejected=None is left out: OpenTelemetry has no null attribute
    speech = by_name[("agent_speech", 1)]
    assert speech.attributes["interrupted"] is True
    assert (speech.start_time, speech.end_time) == (ns(2.68), ns(6.1))
    cut = by_name[("interruption", 1)]
    assert cut.attributes["reason"] == "speech"
    assert cut.start_time == ns(5.8)
    error = by_name[("error", 2)]
    assert error.status.status_code is StatusCode.ERROR
    assert error.status.description == "TimeoutError: synthesis took too long"
    assert by_name[("llm", 2)].status.status_code is StatusCode.UNSET


def test_non_primitive_attrs_are_stringified(
    sink: OtelTraceSink, exporter: InMemorySpanExporter
) -> None:
    class Voice:
        def __str__(self) -> str:
            return "voice:joe"

    span = Span("call-2", 1, "tts", "tts", 1.0, 1.5,
                {"words": ["it", "is"], "timing": {"first": 0.1}, "voice": Voice()})
    [stage] = [s for s in export(sink, exporter, [span]) if s.name == "tts"]
    assert stage.attributes["words"] == '["it","is"]'
    assert stage.attributes["timing"] == '{"first":0.1}'
    assert stage.attributes["voice"] == "voice:joe"


def test_nothing_is_exported_before_close_and_close_can_repeat(
    sink: OtelTraceSink, exporter: InMemorySpanExporter
) -> None:
    tracer = Tracer("call-3", VirtualClock(), [sink])
    tracer.record("user_speech", "vad", 1, 0.0, 1.0, duration=1.0)
    assert exporter.get_finished_spans() == ()
    sink.close()
    assert len(exporter.get_finished_spans()) == 3
    sink.close()
    assert len(exporter.get_finished_spans()) == 3
    tracer.record("user_speech", "vad", 2, 3.0, 4.0, duration=1.0)
    sink.close()
    assert len(exporter.get_finished_spans()) == 6


def test_each_conversation_is_its_own_trace_even_inside_another_span(
    sink: OtelTraceSink, exporter: InMemorySpanExporter
) -> None:
    for conversation in ("a", "b"):
        sink.write(Span(conversation, 1, "vad", "user_speech", 0.0, 1.0, {}))
    outer_provider = TracerProvider()
    with outer_provider.get_tracer("app").start_as_current_span("request"):
        sink.close()
    roots = [s for s in exporter.get_finished_spans() if s.name == "conversation"]
    assert len(roots) == 2
    assert all(parent_id(r) is None for r in roots)
    assert len({r.context.trace_id for r in roots}) == 2
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_without_opentelemetry_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in [m for m in sys.modules if m.split(".")[0] == "opentelemetry"]:
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingDependency, match=r"voice-cascade\[otel\]"):
        OtelTraceSink(ORIGIN)
