"""OpenTelemetry export: each conversation becomes a trace of conversation -> turn -> stage spans.

Needs ``opentelemetry-sdk`` (the ``[otel]`` extra), imported only when a sink
is built. Span times stay on the pipeline clock until export, where they are
placed on the wall clock by adding them to an origin the caller supplies.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from cascade.errors import MissingDependency
from cascade.tracing import Span

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Tracer, TracerProvider

NANOSECONDS = 1_000_000_000
AttributeValue = str | bool | int | float


def attribute_value(value: Any) -> AttributeValue | None:
    """An OpenTelemetry attribute value: primitives as they are, containers as JSON,
    anything else as ``str``; ``None`` (never allowed as an attribute) stays ``None``."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


def span_attributes(span: Span) -> dict[str, AttributeValue]:
    """Where the span comes from (``cascade.*``), then its attrs, minus the ``None`` ones."""
    attributes: dict[str, AttributeValue] = {
        "cascade.conversation": span.conversation,
        "cascade.turn": span.turn,
        "cascade.stage": span.stage,
    }
    for key, raw in span.attrs.items():
        value = attribute_value(raw)
        if value is not None:
            attributes[key] = value
    return attributes


class OtelTraceSink:
    """A ``TraceSink`` that exports spans to OpenTelemetry when it closes.

    ``origin_ns`` is the wall-clock time (nanoseconds since the epoch, e.g.
    ``time.time_ns()``) at which the pipeline clock read 0; ``tracer_provider``
    defaults to the global one. Every conversation becomes one trace: a
    ``conversation`` span, a ``turn`` span per turn and one span per stage span,
    named like it, with its attrs as attributes (``error`` spans get an error
    status). Spans reach a sink finished and out of order, and a parent's start
    must be known when it is created, so they are held until ``close()``, which
    exports them with each parent spanning the earliest start to the latest end
    of its children. A closed sink can keep collecting; the next ``close()``
    exports what arrived since.
    """

    def __init__(self, origin_ns: int, tracer_provider: TracerProvider | None = None) -> None:
        try:
            from opentelemetry import trace
        except ImportError as exc:
            raise MissingDependency("otel", "opentelemetry-sdk", "otel") from exc
        self.origin_ns = origin_ns
        self._tracer: Tracer = trace.get_tracer("cascade", tracer_provider=tracer_provider)
        self._pending: dict[str, list[Span]] = {}
        self._lock = threading.Lock()

    def nanoseconds(self, seconds: float) -> int:
        """A pipeline-clock time as an OpenTelemetry timestamp."""
        return self.origin_ns + round(seconds * NANOSECONDS)

    def write(self, span: Span) -> None:
        with self._lock:
            self._pending.setdefault(span.conversation, []).append(span)

    def close(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for conversation, spans in pending.items():
            self._export(conversation, spans)

    def _export(self, conversation: str, spans: list[Span]) -> None:
        from opentelemetry import context, trace

        turns: dict[int, list[Span]] = {}
        for span in sorted(spans, key=lambda s: (s.start, s.end)):
            turns.setdefault(span.turn, []).append(span)
        root = self._tracer.start_span(
            "conversation",
            context=context.Context(),  # a new trace, whatever span is current
            attributes={"cascade.conversation": conversation},
            start_time=self.nanoseconds(min(s.start for s in spans)),
        )
        root_context = trace.set_span_in_context(root)
        for turn in sorted(turns):
            children = turns[turn]
            parent = self._tracer.start_span(
                "turn",
                context=root_context,
                attributes={"cascade.conversation": conversation, "cascade.turn": turn},
                start_time=self.nanoseconds(children[0].start),
            )
            parent_context = trace.set_span_in_context(parent)
            for span in children:
                self._export_stage(span, parent_context)
            parent.end(end_time=self.nanoseconds(max(s.end for s in children)))
        root.end(end_time=self.nanoseconds(max(s.end for s in spans)))

    def _export_stage(self, span: Span, parent: Context) -> None:
        from opentelemetry.trace import Status, StatusCode

        exported = self._tracer.start_span(
            span.name,
            context=parent,
            attributes=span_attributes(span),
            start_time=self.nanoseconds(span.start),
        )
        if span.name == "error":
            exported.set_status(Status(StatusCode.ERROR, str(span.attrs.get("error", ""))))
        exported.end(end_time=self.nanoseconds(span.end))
