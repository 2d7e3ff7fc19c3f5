"""Spans: what happened, in which stage, for which turn, from when to when.

A span is one JSON object per line (see ``docs/trace.md``). Stages record spans
through a ``Tracer`` bound to their conversation; sinks decide where they go
(a JSON Lines file, memory for tests, OpenTelemetry when installed).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from cascade.clock import Clock

CORE_SPANS = (
    "user_speech",
    "end_of_turn",
    "asr",
    "llm",
    "tts",
    "agent_speech",
    "interruption",
)
"""What every conversation with a barge-in records; the metrics are built on these."""

SPAN_NAMES = (
    *CORE_SPANS,
    "backchannel",
    "false_interruption",
    "resume",
    "error",
)


@dataclass(slots=True)
class Span:
    """One traced interval (``start``/``end`` in seconds on the pipeline clock)."""

    conversation: str
    turn: int
    stage: str
    name: str
    start: float
    end: float
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Span:
        return cls(
            conversation=str(data["conversation"]),
            turn=int(data["turn"]),
            stage=str(data["stage"]),
            name=str(data["name"]),
            start=float(data["start"]),
            end=float(data["end"]),
            attrs=dict(data.get("attrs") or {}),
        )


class TraceSink(Protocol):
    """Somewhere finished spans go."""

    def write(self, span: Span) -> None: ...

    def close(self) -> None: ...


class MemoryTrace:
    """Keeps spans in a list: for tests, metrics and reports."""

    def __init__(self) -> None:
        self.spans: list[Span] = []

    def write(self, span: Span) -> None:
        self.spans.append(span)

    def close(self) -> None:
        pass

    def named(self, name: str) -> list[Span]:
        return [s for s in self.spans if s.name == name]


class TraceWriter:
    """Appends spans to a JSON Lines file, one object per line; safe across threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: IO[str] = self.path.open("w", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, span: Span) -> None:
        line = span.to_json() + "\n"
        with self._lock:
            self._file.write(line)

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_trace(path: str | Path) -> list[Span]:
    """Load a JSON Lines trace written by ``TraceWriter``."""
    spans = []
    with Path(path).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                spans.append(Span.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a Cascade span ({exc})") from exc
    return spans


class OpenSpan:
    """A span that has started; ``end()`` records it."""

    __slots__ = ("_tracer", "attrs", "name", "stage", "start", "turn")

    def __init__(
        self, tracer: Tracer, name: str, stage: str, turn: int, start: float,
        attrs: dict[str, Any],
    ) -> None:
        self._tracer = tracer
        self.name = name
        self.stage = stage
        self.turn = turn
        self.start = start
        self.attrs = attrs

    def end(self, end: float | None = None, **attrs: Any) -> Span:
        self.attrs.update(attrs)
        return self._tracer.record(
            self.name, self.stage, self.turn, self.start,
            self._tracer.clock.now() if end is None else end, **self.attrs,
        )


class Tracer:
    """Records spans of one conversation into any number of sinks."""

    def __init__(self, conversation: str, clock: Clock, sinks: Iterable[TraceSink] = ()) -> None:
        self.conversation = conversation
        self.clock = clock
        self.sinks = list(sinks)

    def record(
        self, name: str, stage: str, turn: int, start: float, end: float, **attrs: Any
    ) -> Span:
        span = Span(self.conversation, turn, stage, name, start, end, attrs)
        for sink in self.sinks:
            sink.write(span)
        return span

    def begin(
        self, name: str, stage: str, turn: int, start: float | None = None, **attrs: Any
    ) -> OpenSpan:
        return OpenSpan(
            self, name, stage, turn, self.clock.now() if start is None else start, attrs
        )


def spans_by_turn(spans: Iterable[Span]) -> Iterator[tuple[int, list[Span]]]:
    """Group spans by turn number, in turn order."""
    groups: dict[int, list[Span]] = {}
    for span in spans:
        groups.setdefault(span.turn, []).append(span)
    for turn in sorted(groups):
        yield turn, sorted(groups[turn], key=lambda s: (s.start, s.end))
