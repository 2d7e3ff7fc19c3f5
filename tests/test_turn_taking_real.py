"""Turn-taking scenarios spoken for real, through the whole embedded local stack."""

from __future__ import annotations

import numpy as np
import pytest

from cascade.adapters.smart_turn import smart_turn_onnx
from cascade.clock import VirtualClock
from cascade.metrics import turn_metrics
from cascade.runner import run_call
from tests.conftest import RATE, needs_models, piper_says, script, silence
from tests.test_end_to_end import local_pipeline

pytestmark = needs_models
needs_smart_turn = pytest.mark.skipif(
    not smart_turn_onnx(), reason="needs Smart Turn: pip install --no-deps pipecat-ai")

STORY = "Can you tell me a long story about a brave little dog?"


def names(spans, name):
    return [s for s in spans if s.name == name]


@needs_smart_turn
def test_a_700ms_mid_sentence_pause_does_not_end_the_turn() -> None:
    # Whisper tends to close "... weather in" with a full stop; the model hears that the
    # caller is not done.
    audio = script(silence(0.5), piper_says("Can you tell me the weather in"), silence(0.7),
                   piper_says("Paris tomorrow morning?"), silence(8.0))
    result = run_call(local_pipeline(max_tokens=20, name="local-smart"), audio,
                      VirtualClock())
    [eot] = names(result.spans, "end_of_turn")
    assert "weather" in eot.attrs["text"] and "paris" in eot.attrs["text"].lower()
    assert len(names(result.spans, "user_speech")) == 2  # two VAD segments, one turn
    assert eot.attrs["p_complete"] is not None


@needs_smart_turn
def test_without_the_model_the_same_pause_ends_the_turn_too_early() -> None:
    audio = script(silence(0.5), piper_says("Can you tell me the weather in"), silence(0.7),
                   piper_says("Paris tomorrow morning?"), silence(8.0))
    result = run_call(local_pipeline(max_tokens=8), audio, VirtualClock())
    assert len(names(result.spans, "end_of_turn")) == 2


def test_a_backchannel_during_the_agents_story_does_not_stop_it() -> None:
    question = piper_says(STORY)
    audio = script(silence(0.5), question, silence(2.0), piper_says("Uh-huh."), silence(14.0))
    result = run_call(local_pipeline(max_tokens=40), audio, VirtualClock())
    [speech] = [s for s in names(result.spans, "agent_speech") if s.turn == 1]
    backchannel_at = 0.5 + len(question) / RATE + 2.0
    assert speech.start < backchannel_at < speech.end  # it was said over the agent
    assert speech.attrs["interrupted"] is False
    assert names(result.spans, "interruption") == []
    assert len(names(result.spans, "backchannel")) == 1


def test_a_noise_burst_cuts_the_agent_then_it_resumes() -> None:
    # A voiced, wordless burst (a hum; white noise does not fool Silero at all).
    t = np.arange(int(RATE * 1.6)) / RATE
    burst = (np.sin(2 * np.pi * 150 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 5 * t))
             * 0.3 * 32767).astype(np.int16)
    question = piper_says(STORY)
    audio = script(silence(0.5), question, silence(2.0), burst, silence(16.0))
    result = run_call(local_pipeline(max_tokens=40), audio, VirtualClock())
    speech = {s.turn: s for s in names(result.spans, "agent_speech")}
    assert speech[1].attrs["interrupted"] is True
    [false] = names(result.spans, "false_interruption")
    resumed = speech[int(false.attrs["resumed_as"])]
    assert resumed.attrs["interrupted"] is False and resumed.attrs["text"]
    planned = next(s for s in names(result.spans, "llm") if s.turn == 1).attrs["text"]
    assert resumed.attrs["text"] in " ".join(planned.split())
    assert [m.turn for m in turn_metrics(result.spans) if m.heard] == [1]
