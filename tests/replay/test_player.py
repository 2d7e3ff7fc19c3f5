"""Replay: exact when nothing changed; a changed stage re-runs with all it feeds."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade import RealClock, VirtualClock, parse_pipeline
from cascade.conversation import Pipeline
from cascade.errors import ConfigError
from cascade.frames import Frame
from cascade.replay import Recording, plan_replay, read_recording, record_call, replay_call
from cascade.replay.codec import equal
from cascade.runner import CallResult
from cascade.tracing import Span
from tests.conftest import babble, script, scripted_pipeline, silence
from tests.replay.conftest import agent

STAGES = ["vad", "asr", "turn", "llm", "tts", "playout"]


def exact(spans: list[Span]) -> list[str]:
    return [s.to_json() for s in spans]


def of(spans: list[Span], *stages: str) -> list[str]:
    return [s.to_json() for s in spans if s.stage in stages]


@pytest.fixture(scope="module")
def recording(recorded: tuple[Path, CallResult]) -> Recording:
    return read_recording(recorded[0])


def test_unchanged_replay_reproduces_the_trace_and_every_frame(
        recorded: tuple[Path, CallResult], recording: Recording) -> None:
    seen: list[tuple[str, Frame]] = []
    result = replay_call(recording, observers=[lambda stage, f: seen.append((stage, f))])
    assert result.replayed == STAGES and result.rerun == [] and result.divergences == {}
    assert exact(result.spans) == exact(recorded[1].spans)
    emitted = [(e.stage, e.item) for e in recording.entries
               if e.stage is not None and isinstance(e.item, Frame)]
    assert len(seen) == len(emitted)
    assert all(a == b and equal(f, g) for (a, f), (b, g) in zip(seen, emitted, strict=True))


@pytest.mark.parametrize("first", STAGES)
def test_re_running_unchanged_stages_reproduces_the_trace(
        recorded: tuple[Path, CallResult], recording: Recording, first: str) -> None:
    """Replay upstream of ``first``, run it and everything after for real: same trace."""
    result = replay_call(recording, agent(), rerun=[first])
    assert result.rerun == STAGES[STAGES.index(first):]
    assert result.plan[first].why == "re-run on request"
    assert exact(result.spans) == exact(recorded[1].spans)
    assert result.divergences == {}


def test_a_slower_turn_controller_re_runs_with_everything_downstream(
        recording: Recording) -> None:
    result = replay_call(recording, agent(turn={"min_delay": 0.6}))
    assert result.replayed == ["vad", "asr"]
    assert result.rerun == ["turn", "llm", "tts", "playout"]
    assert result.plan["turn"].why == "options: min_delay 0.3 -> 0.6"
    assert result.plan["llm"].why == "downstream of turn"
    recorded = recording.spans()
    assert of(result.spans, "vad", "asr") == of(recorded, "vad", "asr")
    old = {s.turn: s for s in recorded if s.name == "end_of_turn"}
    new = {s.turn: s for s in result.spans if s.name == "end_of_turn"}
    assert old[1].end == pytest.approx(old[1].start + 0.3)
    assert new[1].start == old[1].start and new[1].end == pytest.approx(new[1].start + 0.6)
    assert new[1].attrs["delay"] == 0.6 and new[1].attrs["text"] == old[1].attrs["text"]
    llm = {s.turn: s for s in result.spans if s.name == "llm"}
    assert llm[1].start == new[1].end and llm[1].attrs["text"] == \
        "You said: hello there. Is there anything else?"


def test_a_new_llm_template_changes_only_what_the_llm_feeds(recording: Recording) -> None:
    result = replay_call(recording, agent(llm={"template": "Echo: {text}!"}))
    assert result.replayed == ["vad", "asr", "turn"]
    assert result.rerun == ["llm", "tts", "playout"]
    recorded = recording.spans()
    assert of(result.spans, "vad", "asr") == of(recorded, "vad", "asr")
    replies = {s.turn: s.attrs["text"] for s in result.spans if s.name == "llm"}
    assert replies[1] == "Echo: hello there!"
    assert [s.attrs["text"] for s in result.spans if s.name == "tts" and s.turn == 1] == \
        ["Echo: hello there!"]
    old_llm = {s.turn: s for s in recorded if s.name == "llm"}
    assert {s.turn: s.start for s in result.spans if s.name == "llm"}[1] == old_llm[1].start
    # The shorter reply starts and ends sooner, so the turn controller (replayed: it
    # cannot react) got other agent-speech frames than when recorded: the replay says so.
    assert result.divergences == {"turn": "it received AgentSpeechStarted of turn 1 at "
                                  "2.570 s where the recording has AgentSpeechStarted of "
                                  "turn 1 at 2.590 s"}


def test_a_recorded_failure_replays_and_a_fix_can_be_checked(tmp_path: Path) -> None:
    audio = script(silence(0.5), babble(1.5, 1), silence(4.0))
    broken = scripted_pipeline(llm={"template": "{nope}"})
    original = record_call(broken, audio, VirtualClock(), tmp_path / "bug.rec")
    recording = read_recording(tmp_path / "bug.rec")
    again = replay_call(recording, scripted_pipeline(llm={"template": "{nope}"}))
    assert exact(again.spans) == exact(original.spans)
    assert [s.attrs["error"] for s in again.spans if s.name == "error"] == ["KeyError: 'nope'"]
    fixed = replay_call(recording, scripted_pipeline(llm={"template": "Got: {text}"}))
    assert fixed.rerun == ["llm", "tts", "playout"]
    assert "error" not in {s.name for s in fixed.spans}
    assert [s.attrs["text"] for s in fixed.spans if s.name == "agent_speech"] == \
        ["Got: hello there"]


def test_a_call_recorded_in_real_time_replays_exactly(tmp_path: Path) -> None:
    fast: dict[str, dict[str, object]] = {"tts": {"seconds_per_word": 0.02}}
    audio = script(silence(0.2), babble(0.5, 1), silence(0.6))
    original = record_call(scripted_pipeline(**fast), audio, RealClock(), tmp_path / "rt.rec")
    recording = read_recording(tmp_path / "rt.rec")
    assert recording.clock == "real"
    assert exact(replay_call(recording).spans) == exact(original.spans)


def test_the_plan_explains_new_stages_and_new_inputs(recording: Recording) -> None:
    stages = {name: {"adapter": step.adapter, "options": recording.stages[name].options}
              for name, step in plan_replay(recording).items() if name != "playout"}
    gated = Pipeline(parse_pipeline({"stages": {"echo": {"adapter": "echo-gate"}, **stages}}))
    plan = plan_replay(recording, gated)
    assert plan["echo"].why == "not in the recording"
    assert plan["vad"].why == "fed by echo (recorded: the caller)"
    assert plan["asr"].why == "downstream of vad"
    assert not any(step.replayed for step in plan.values())
    assert list(plan) == ["echo", "vad", "asr", "turn", "llm", "tts", "playout"]


def test_wrong_requests_are_refused_clearly(recording: Recording) -> None:
    with pytest.raises(ConfigError, match="cannot re-run nlu: no such stage"):
        plan_replay(recording, rerun=["nlu"])
    other = scripted_pipeline()
    other.config.sample_rate = 8000
    with pytest.raises(ConfigError, match="recording's audio runs at 16000 Hz"):
        plan_replay(recording, other)
