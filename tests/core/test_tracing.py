"""Trace files: the span schema on disk, round trips, and errors naming file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cascade import MemoryTrace, Span, Tracer, TraceWriter, VirtualClock, read_trace
from cascade.tracing import SPAN_NAMES, spans_by_turn
from tests.conftest import babble, script, scripted_pipeline, silence

KEYS = {"conversation", "turn", "stage", "name", "start", "end", "attrs"}


def record_call(path: Path) -> MemoryTrace:
    """Run the scripted pipeline for one turn, spans going to ``path`` and to memory."""
    clock = VirtualClock()
    memory = MemoryTrace()
    writer = TraceWriter(path)
    audio = script(silence(0.5), babble(1.5, 1), silence(4.0))

    async def main() -> None:
        conversation = scripted_pipeline().conversation(
            clock, traces=[writer, memory], conversation_id="call")
        await conversation.start()
        try:
            await conversation.play_recording(audio)
            await conversation.wait_finished()
        finally:
            await conversation.stop()

    try:
        clock.run(main())
    finally:
        writer.close()
    return memory


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MemoryTrace]:
    path = tmp_path_factory.mktemp("trace") / "call.jsonl"
    return path, record_call(path)


def test_every_line_is_one_span_object_with_the_schema_keys_and_types(
        recorded: tuple[Path, MemoryTrace]) -> None:
    path, memory = recorded
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(memory.spans) >= 6
    for number, line in enumerate(lines, 1):
        where = f"line {number}: {line}"
        data = json.loads(line)
        assert isinstance(data, dict), where
        assert set(data) == KEYS, where
        assert data["conversation"] == "call", where
        assert type(data["turn"]) is int, where
        assert isinstance(data["stage"], str) and data["stage"], where
        assert data["name"] in SPAN_NAMES, where
        for key in ("start", "end"):
            assert type(data[key]) in (int, float), where
        assert data["end"] >= data["start"] >= 0, where
        assert isinstance(data["attrs"], dict), where


def test_the_trace_holds_the_spans_of_a_turn_from_the_right_stages(
        recorded: tuple[Path, MemoryTrace]) -> None:
    _, memory = recorded
    stages = {(s.name, s.stage) for s in memory.spans}
    assert stages >= {("user_speech", "vad"), ("asr", "asr"), ("end_of_turn", "turn"),
                      ("llm", "llm"), ("tts", "tts"), ("agent_speech", "playout")}
    assert {s.turn for s in memory.spans} == {1}


def test_read_trace_gives_back_the_spans_that_were_written(
        recorded: tuple[Path, MemoryTrace]) -> None:
    path, memory = recorded
    assert read_trace(path) == memory.spans
    assert read_trace(str(path)) == memory.spans


def test_a_span_round_trips_through_json() -> None:
    span = Span("c", 3, "llm", "llm", 1.25, 2.5, {"text": "hi", "ttft": 0.2, "x": None})
    assert Span.from_dict(json.loads(span.to_json())) == span
    odd = Span("c", 1, "tts", "tts", 0.0, 1.0, {"path": Path("/tmp/a.wav")})
    assert json.loads(odd.to_json())["attrs"] == {"path": "/tmp/a.wav"}


def test_read_trace_skips_blank_lines_and_tolerates_missing_attrs(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('\n{"conversation": "c", "turn": 2, "stage": "s", "name": "asr", '
                    '"start": 1, "end": 2}\n\n', encoding="utf-8")
    assert read_trace(path) == [Span("c", 2, "s", "asr", 1.0, 2.0, {})]


@pytest.mark.parametrize("bad", [
    "{not json",
    '{"conversation": "c", "turn": 1, "name": "asr", "start": 0, "end": 1}',
    '{"conversation": "c", "turn": "one", "stage": "s", "name": "asr", "start": 0, "end": 1}',
    '["a", "list"]',
    "42",
    '{"conversation": "c", "turn": 1, "stage": "s", "name": "asr", "start": 0, "end": 1, '
    '"attrs": "text"}',
])
def test_a_corrupt_line_is_an_error_naming_file_and_line(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "broken.jsonl"
    good = Span("c", 1, "vad", "user_speech", 0.0, 1.0).to_json()
    path.write_text(f"{good}\n{good}\n\n{bad}\n{good}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{path}:4: not a Cascade span"):
        read_trace(path)


def test_trace_writer_starts_a_fresh_file(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("old content\n", encoding="utf-8")
    writer = TraceWriter(path)
    writer.write(Span("c", 1, "vad", "user_speech", 0.0, 1.0))
    writer.close()
    assert read_trace(path) == [Span("c", 1, "vad", "user_speech", 0.0, 1.0)]


def test_tracer_records_to_every_sink_and_open_spans_end_on_the_clock() -> None:
    clock = VirtualClock()
    first, second = MemoryTrace(), MemoryTrace()
    tracer = Tracer("c9", clock, [first, second])

    async def main() -> None:
        await clock.sleep(1.0)
        open_span = tracer.begin("llm", "llm", 4, reply="x")
        await clock.sleep(2.5)
        open_span.end(ttft=0.1)
        tracer.begin("tts", "tts", 4, start=0.5).end(end=0.75)

    clock.run(main())
    expected = [Span("c9", 4, "llm", "llm", 1.0, 3.5, {"reply": "x", "ttft": 0.1}),
                Span("c9", 4, "tts", "tts", 0.5, 0.75, {})]
    assert first.spans == expected
    assert second.spans == expected
    assert first.named("tts") == expected[1:]


def test_spans_group_by_turn_in_time_order() -> None:
    spans = [Span("c", 2, "s", "b", 5.0, 6.0), Span("c", 1, "s", "a", 2.0, 3.0),
             Span("c", 2, "s", "a", 4.0, 9.0), Span("c", 1, "s", "b", 1.0, 1.5)]
    grouped = [(turn, [s.start for s in group]) for turn, group in spans_by_turn(spans)]
    assert grouped == [(1, [1.0, 2.0]), (2, [4.0, 5.0])]
