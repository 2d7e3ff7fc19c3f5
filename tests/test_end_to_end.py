"""A real spoken conversation through the embedded local stack (real models, real audio)."""

from __future__ import annotations

import numpy as np
import pytest

from cascade import Pipeline, RealClock, VirtualClock, parse_pipeline
from cascade.metrics import turn_metrics
from cascade.pipelines import builtin_pipeline
from cascade.runner import CallResult, run_call
from cascade.tracing import CORE_SPANS, SPAN_NAMES
from tests.conftest import (
    RATE,
    librivox,
    librivox_transcripts,
    needs_models,
    piper_says,
    script,
    silence,
    wer,
)

pytestmark = needs_models


def local_pipeline(max_tokens: int = 40, name: str = "local") -> Pipeline:
    import yaml

    data = yaml.safe_load(builtin_pipeline(name).read_text())
    data["stages"]["llm"]["options"]["max_tokens"] = max_tokens
    return Pipeline(parse_pipeline(data))


@pytest.fixture(scope="module")
def three_turn_call() -> tuple[CallResult, dict[int, str]]:
    """Real speech, then a Piper-voiced question, then a barge-in with real speech."""
    first, third = "sense_and_sensibility_01_austen_64kb-0880", \
        "sense_and_sensibility_01_austen_64kb-0930"
    refs = librivox_transcripts()
    question = "Can you tell me a long story about a brave little dog?"
    audio = script(silence(0.5), librivox(first), silence(9.0), piper_says(question),
                   silence(1.6), librivox(third), silence(9.0))
    result = run_call(local_pipeline(), audio, VirtualClock(), conversation_id="e2e")
    return result, {1: refs[first], 2: question, 3: refs[third]}


def test_every_turn_is_heard_and_answered(three_turn_call: tuple[CallResult, dict[int, str]]
                                          ) -> None:
    result, references = three_turn_call
    metrics = {m.turn: m for m in turn_metrics(result.spans)}
    assert sorted(metrics) == [1, 2, 3]
    for turn, reference in references.items():
        assert wer(reference, metrics[turn].heard) <= 0.35, (turn, metrics[turn].heard)
        assert metrics[turn].reply.strip(), f"turn {turn} got no reply"
        assert metrics[turn].end_reason in ("silence", "unfinished_timeout")


def test_the_caller_cuts_the_second_reply_short(
        three_turn_call: tuple[CallResult, dict[int, str]]) -> None:
    result, _ = three_turn_call
    speech = {s.turn: s for s in result.spans if s.name == "agent_speech"}
    assert speech[1].attrs["interrupted"] is False
    assert speech[2].attrs["interrupted"] is True
    [cut] = [s for s in result.spans if s.name == "interruption"]
    assert cut.turn == 2 and cut.attrs["reason"] == "speech"
    planned = next(s for s in result.spans if s.name == "llm" and s.turn == 2).attrs["text"]
    heard = speech[2].attrs["text"]
    assert len(heard.split()) < len(planned.split())
    assert planned.startswith(heard.rstrip(".,!? ").rsplit(" ", 1)[0])


def test_trace_holds_every_documented_span(
        three_turn_call: tuple[CallResult, dict[int, str]]) -> None:
    result, _ = three_turn_call
    seen = {s.name for s in result.spans}
    assert set(CORE_SPANS) <= seen
    assert seen <= set(SPAN_NAMES)
    assert "error" not in seen
    for span in result.spans:
        assert span.end >= span.start and span.conversation == "e2e"


def test_the_recording_has_the_agent_where_it_spoke(
        three_turn_call: tuple[CallResult, dict[int, str]]) -> None:
    result, _ = three_turn_call
    stereo = result.recorder.render()
    assert stereo.ndim == 2 and stereo.shape[1] == 2
    origin = min(s.start for s in result.spans) - 0.5  # the call began with 0.5 s silence
    for span in (s for s in result.spans if s.name == "agent_speech"):
        lo, hi = (int((t - origin) * RATE) for t in (span.start, span.end))
        agent = stereo[lo:hi, 1].astype(np.float64)
        assert np.sqrt(np.mean(agent**2)) > 300, f"agent silent in turn {span.turn}"
    before = int((min(s.start for s in result.spans if s.name == "agent_speech") - origin)
                 * RATE)
    assert np.abs(stereo[:before, 1]).max() == 0


def test_silence_and_room_noise_produce_no_turn() -> None:
    rng = np.random.default_rng(3)
    noise = (rng.standard_normal(RATE * 6) * 0.003 * 32767).astype(np.int16)  # ~ -50 dBFS
    result = run_call(local_pipeline(), script(silence(4.0), noise), VirtualClock())
    assert [s for s in result.spans if s.name in ("end_of_turn", "llm", "agent_speech")] == []


def test_real_time_pace_measures_voice_to_voice_latency() -> None:
    audio = np.fromfile("/usr/share/pocketsphinx/test/data/goforward.raw", np.int16)
    result = run_call(local_pipeline(max_tokens=12), script(silence(0.3), audio, silence(4.0)),
                      RealClock())
    [m] = [m for m in turn_metrics(result.spans) if m.turn == 1]
    assert wer("go forward ten meters", m.heard) <= 0.25
    assert m.voice_to_voice is not None and m.endpointing is not None
    assert m.asr is not None and m.llm_ttft is not None and m.tts_ttfb is not None
    # on the real clock compute takes real time: every stage's share is positive and
    # voice-to-voice covers endpointing plus the LLM and TTS latencies
    assert m.llm_ttft > 0 and m.tts_ttfb > 0
    assert m.voice_to_voice >= m.endpointing + m.llm_ttft


def test_the_agents_own_voice_fed_back_at_minus_10_db_does_not_interrupt_it() -> None:
    import yaml

    from tests.stages.test_echo import call_with_echo

    data = yaml.safe_load(builtin_pipeline("local").read_text())
    data["stages"]["llm"]["options"]["max_tokens"] = 40
    data["stages"]["echo"] = {"adapter": "echo-gate"}
    caller = script(silence(0.5), piper_says("Can you tell me a long story about a dog?"),
                    silence(12.0))
    trace = call_with_echo(Pipeline(parse_pipeline(data)), caller, gain_db=-10.0, delay=0.15)
    assert trace.named("interruption") == []
    [speech] = [s for s in trace.named("agent_speech") if s.turn == 1]
    assert speech.attrs["interrupted"] is False and speech.end - speech.start > 3.0
    assert [s.turn for s in trace.named("end_of_turn")] == [1]
