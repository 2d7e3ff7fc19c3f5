"""What a recording holds: caller input, every stage's frames and spans, on the clock."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from cascade import VirtualClock
from cascade.adapters.scripted import ScriptedASR
from cascade.frames import (
    EndOfStream,
    EndOfTurn,
    ErrorFrame,
    Event,
    Frame,
    Interrupt,
    SystemFrame,
    UserAudio,
)
from cascade.replay import read_recording, record_call
from cascade.runner import CallResult
from cascade.stages.asr import Recognition
from cascade.tracing import Span
from tests.conftest import babble, script, scripted_pipeline, silence
from tests.replay.conftest import busy_call, recorded_conversation


def test_the_recording_holds_input_frames_spans_and_config(
        recorded: tuple[Path, CallResult]) -> None:
    path, result = recorded
    recording = read_recording(path)
    assert recording.conversation == "busy" and recording.clock == "virtual"
    assert recording.started == 0.0 and recording.first_turn == 1
    assert recording.stages["turn"].adapter == "turn"
    assert recording.stages["turn"].options["min_delay"] == 0.3  # defaults filled in
    assert ("tts", "playout") in recording.edges
    inputs = [e.item for e in recording.inputs()]
    audio = [f for f in inputs if isinstance(f, UserAudio)]
    assert sum(len(f.pcm) for f in audio) == len(busy_call())
    assert isinstance(inputs[-1], EndOfStream) and len(inputs) == len(audio) + 1
    sent = recording.inputs()[:-1]
    assert [b.at - a.at for a, b in itertools.pairwise(sent[:4])] == \
        pytest.approx([0.02] * 3)  # at caller pace, each frame no earlier than its time
    assert all(isinstance(e.item, Frame) and e.at >= e.item.time for e in sent)
    assert [s.to_json() for s in recording.spans()] == [s.to_json() for s in result.spans]
    assert [e.seq for e in recording.entries] == list(range(len(recording.entries)))
    assert all(a.at <= b.at for a, b in itertools.pairwise(recording.entries))
    by_stage = {e.stage for e in recording.entries if not isinstance(e.item, Span)}
    assert by_stage == {None, "vad", "asr", "turn", "llm", "tts", "playout"}
    assert any(isinstance(e.item, Interrupt) and e.stage == "turn" for e in recording.entries)


def test_the_turn_controller_advancing_the_turn_is_kept(
        recorded: tuple[Path, CallResult]) -> None:
    recording = read_recording(recorded[0])
    advances = [(e.stage, type(e.item).__name__, e.turn_to) for e in recording.entries
                if e.turn_to is not None]
    assert advances == [("turn", "EndOfTurn", 2), ("turn", "EndOfTurn", 3),
                        ("turn", "EndOfTurn", 4)]
    ends = [e for e in recording.entries if isinstance(e.item, EndOfTurn)]
    assert [e.item.turn for e in ends] == [1, 2, 3]


def test_a_failing_stage_keeps_its_error_frame(tmp_path: Path) -> None:
    audio = script(silence(0.5), babble(1.5, 1), silence(4.0))
    record_call(scripted_pipeline(llm={"template": "{nope}"}), audio, VirtualClock(),
                tmp_path / "error.rec")
    recording = read_recording(tmp_path / "error.rec")
    [span] = [s for s in recording.spans() if s.name == "error"]
    [frame] = [e for e in recording.entries if isinstance(e.item, ErrorFrame)]
    assert frame.stage == "llm" and frame.at == span.end
    assert frame.item == ErrorFrame(conversation=span.conversation, turn=1, time=span.end,
                                    stage="llm", message="KeyError: 'nope'")


def test_an_error_frame_a_stage_pushes_itself_is_recorded_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The ASR stage reports a failed segment itself (error span, then its own
    # ErrorFrame); the graph's broadcast for a raising stage must not be added again.
    def refuse(self: ScriptedASR, audio: object) -> Recognition:
        raise ConnectionError("refused")

    monkeypatch.setattr(ScriptedASR, "recognize", refuse)
    audio = script(silence(0.5), babble(1.5, 1), silence(4.0))
    record_call(scripted_pipeline(), audio, VirtualClock(), tmp_path / "asr.rec")
    recording = read_recording(tmp_path / "asr.rec")
    [span] = [s for s in recording.spans() if s.name == "error"]
    [frame] = [e for e in recording.entries if isinstance(e.item, ErrorFrame)]
    assert frame.stage == "asr" and frame.item.message == span.attrs["error"]


def test_events_and_offered_audio_are_input_too() -> None:
    clock = VirtualClock()
    conversation, recorder = recorded_conversation(scripted_pipeline(), clock, "live")

    async def call() -> None:
        await conversation.start()
        assert conversation.offer_audio(silence(0.02))
        await conversation.send(Event(conversation="live", turn=1, time=0.0, name="dtmf",
                                      data={"digit": "5"}))
        await conversation.end_input()
        await conversation.wait_finished()
        await conversation.stop()

    clock.run(call())
    recording = recorder.recording
    inputs = [e.item for e in recording.inputs()]
    assert [type(f).__name__ for f in inputs] == ["UserAudio", "Event", "EndOfStream"]
    control = [e for e in recording.entries if isinstance(e.item, SystemFrame)]
    assert [e.stage for e in control] == [None]  # the graph's echo of it is not doubled


def test_a_call_that_fails_is_still_recorded_and_replays(tmp_path: Path) -> None:
    from cascade.replay import replay_call

    path = tmp_path / "crash.rec"
    with pytest.raises(TypeError):
        record_call(scripted_pipeline(llm={"greeting": "Hello!"}), None,  # type: ignore[arg-type]
                    VirtualClock(), path)
    recording = read_recording(path)
    assert recording.inputs() == []  # no input got in, nor its end
    assert [(e.stage, type(e.item).__name__) for e in recording.entries] == [
        ("llm", "LLMText")]  # the greeting was on its way when the call broke
    replay = replay_call(recording)  # ends its input for it, and finishes
    assert replay.spans == [] and replay.replayed == ["vad", "asr", "turn", "llm", "tts",
                                                      "playout"]
