"""Record and replay with the embedded local models (Silero, faster-whisper, llama.cpp, Piper).

Piper's voice varies a little from run to run, so re-running the real pipeline
does not reproduce a call exactly; replaying the recording does.
"""

from __future__ import annotations

import pytest
import yaml

from cascade import Pipeline, VirtualClock, parse_pipeline
from cascade.pipelines import builtin_pipeline
from cascade.replay import Recording, read_recording, record_call, replay_call
from cascade.runner import CallResult
from tests.conftest import librivox, needs_models, script, silence

pytestmark = needs_models


def local(**overrides: dict[str, object]) -> Pipeline:
    data = yaml.safe_load(builtin_pipeline("local").read_text())
    data["stages"]["llm"]["options"]["max_tokens"] = 12
    data["stages"]["asr"]["options"]["partial_interval"] = 0.0  # one recognition a turn
    for stage, options in overrides.items():
        data["stages"][stage].setdefault("options", {}).update(options)
    return Pipeline(parse_pipeline(data))


@pytest.fixture(scope="module")
def local_call(tmp_path_factory: pytest.TempPathFactory) -> tuple[CallResult, Recording]:
    path = tmp_path_factory.mktemp("local") / "local.rec"
    audio = script(silence(0.5), librivox("sense_and_sensibility_01_austen_64kb-0880"),
                   silence(5.0))
    result = record_call(local(), audio, VirtualClock(), path, conversation_id="local")
    return result, read_recording(path)


def test_unchanged_replay_reproduces_the_real_trace_exactly(
        local_call: tuple[CallResult, Recording]) -> None:
    result, recording = local_call
    assert {"user_speech", "asr", "end_of_turn", "llm", "tts", "agent_speech"} <= {
        s.name for s in result.spans}
    replay = replay_call(recording)
    assert replay.rerun == []
    assert [s.to_json() for s in replay.spans] == [s.to_json() for s in result.spans]


def test_a_changed_turn_controller_re_runs_the_models_after_it(
        local_call: tuple[CallResult, Recording]) -> None:
    result, recording = local_call
    replay = replay_call(recording, local(turn={"min_delay": 0.8}))
    assert replay.replayed == ["vad", "asr"]
    assert replay.rerun == ["turn", "llm", "tts", "playout"]
    upstream = [s.to_json() for s in result.spans if s.stage in ("vad", "asr")]
    assert [s.to_json() for s in replay.spans if s.stage in ("vad", "asr")] == upstream
    [old] = [s for s in result.spans if s.name == "end_of_turn"]
    [new] = [s for s in replay.spans if s.name == "end_of_turn"]
    assert (new.start, new.attrs["text"]) == (old.start, old.attrs["text"])
    assert old.attrs["delay"] == 0.3 and new.attrs["delay"] == 0.8
    [llm] = [s for s in replay.spans if s.name == "llm"]
    assert llm.start == new.end and llm.attrs["user"] == old.attrs["text"]
    assert llm.attrs["text"].strip()
    [speech] = [s for s in replay.spans if s.name == "agent_speech"]
    assert speech.start >= new.end and not speech.attrs["interrupted"]
