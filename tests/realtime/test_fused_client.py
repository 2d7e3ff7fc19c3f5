"""Our ``openai-realtime`` fused adapter against our own server, over a real websocket.

The caller side runs a Cascade graph with the fused stage; behind the socket a
second, scripted Cascade pipeline answers. Both run on real clocks in one event
loop, so the spans on the caller's side measure a real network round trip.
"""

from __future__ import annotations

import pytest

from cascade import MemoryTrace, Pipeline, RealClock, parse_pipeline
from cascade.errors import ConfigError
from cascade.frames import PCM
from cascade.metrics import turn_metrics
from cascade.servers.realtime import RealtimeServer
from tests.conftest import babble, script, silence
from tests.realtime.conftest import KEY_ENV, TOKEN

REPLY = "You said {}. That sounds interesting, please tell me a little more about it."


def caller_pipeline(server: RealtimeServer, turn_taking: str) -> Pipeline:
    fused = {"adapter": "openai-realtime", "options": {
        "base_url": f"http://127.0.0.1:{server.port}/v1", "model": "cascade",
        "api_key_env": KEY_ENV, "turn_taking": turn_taking, "transcription_model": None}}
    stages: dict[str, object] = {"fused": fused}
    if turn_taking == "controller":
        stages = {"vad": {"adapter": "energy-vad"},
                  "turn": {"adapter": "turn", "options": {"require_transcript": False}},
                  **stages}
    return Pipeline(parse_pipeline({"name": "caller", "stages": stages}))


async def call(pipeline: Pipeline, audio: PCM) -> MemoryTrace:
    trace = MemoryTrace()
    conversation = pipeline.conversation(RealClock(), traces=[trace], conversation_id="call")
    await conversation.start()
    try:
        await conversation.play_recording(audio)
        await conversation.wait_finished()
    finally:
        await conversation.stop()
    return trace


def barge_in_call() -> PCM:
    """A turn, a barge-in ~1 s into the ~2 s reply, then silence for the second reply."""
    return script(silence(0.3), babble(1.0, 1), silence(1.5), babble(1.0, 2), silence(3.4))


async def test_controller_turn_taking_replies_measures_and_barges_in(
        chatty_server: RealtimeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, TOKEN)
    trace = await call(caller_pipeline(chatty_server, "controller"), barge_in_call())
    metrics = {m.turn: m for m in turn_metrics(trace.spans)}
    assert sorted(metrics) == [1, 2]
    speech = {s.turn: s for s in trace.named("agent_speech")}
    assert speech[1].attrs["interrupted"] is True
    assert [s.attrs["reason"] for s in trace.named("interruption")] == ["speech"]
    stop = metrics[1].barge_in_stop  # the controller's 0.5 s + 0.2 s rule, then the cut
    assert stop is not None and 0.65 < stop < 1.5
    assert speech[2].attrs["interrupted"] is False
    assert metrics[2].reply == REPLY.format("tell me more")
    for m in metrics.values():  # real clocks: bounds leave room for a loaded machine
        assert m.endpointing is not None and 0.28 < m.endpointing < 1.5  # our min_delay
        assert m.llm_ttft is not None and m.tts_ttfb is not None
        assert m.voice_to_voice is not None and 0.05 < m.voice_to_voice < 2.0
    asr = {s.turn: s.attrs["text"] for s in trace.named("asr")}
    assert asr == {1: "hello there", 2: "tell me more"}  # the server's transcripts


async def test_model_turn_taking_follows_the_server_vad(
        chatty_server: RealtimeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, TOKEN)
    trace = await call(caller_pipeline(chatty_server, "model"), barge_in_call())
    turns = trace.named("end_of_turn")
    assert [s.turn for s in turns] == [1, 2]
    assert {s.attrs["turn_taking"] for s in turns} == {"model"}
    speech = {s.turn: s for s in trace.named("user_speech")}
    assert 0.25 < speech[1].start < 0.8  # the babble starts 0.3 s into the call
    assert abs(speech[1].attrs["duration"] - 1.0) < 0.2  # the server's VAD, in our clock
    assert [s.attrs["reason"] for s in trace.named("interruption")] == ["model_vad"]
    agent = {s.turn: s for s in trace.named("agent_speech")}
    assert agent[1].attrs["interrupted"] is True and agent[2].attrs["interrupted"] is False
    metrics = {m.turn: m for m in turn_metrics(trace.spans)}
    assert metrics[2].reply == REPLY.format("tell me more")
    for m in metrics.values():  # real clocks: bounds leave room for a loaded machine
        assert m.endpointing is not None and 0.2 < m.endpointing < 1.5  # server's min_delay
        assert m.voice_to_voice is not None and 0.05 < m.voice_to_voice < 2.0


async def test_a_wrong_key_or_no_base_url_is_a_clear_error(
        server: RealtimeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "not-the-token")
    conversation = caller_pipeline(server, "model").conversation(RealClock())
    with pytest.raises(Exception, match=f"HTTP 401 \\(check the key in \\${KEY_ENV}\\)"):
        await conversation.start()
    await conversation.stop()
    with pytest.raises(ConfigError, match="base_url is not set"):
        Pipeline(parse_pipeline({"stages": {"fused": {"adapter": "openai-realtime"}}})
                 ).conversation(RealClock())
