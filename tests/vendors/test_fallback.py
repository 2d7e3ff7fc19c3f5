"""fallback-llm: a dead primary (openai-llm on a refused port) fails over to echo-llm
with a failover span, and the primary is used again once it is up after the recovery
interval; a primary too slow to its first token also fails over."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from cascade.adapters.fallback import FallbackLLM, FallbackLLMOptions
from cascade.clock import RealClock
from cascade.errors import ConfigError
from cascade.frames import EndOfTurn, LLMReply, LLMText, ToolCallRequested
from tests.adapters.harness import CONVERSATION, Collector, Run, build, drive
from tests.vendors.fault_llm import REPLY, FaultLLM
from tests.vendors.servers import free_port, serve_app

ECHO = {"adapter": "echo-llm", "options": {"first_token_delay": 0.0, "token_interval": 0.0}}


def primary(base_url: str, model: str = "ok") -> dict[str, Any]:
    return {"adapter": "openai-llm", "options": {
        "base_url": base_url, "api_key_env": None, "model": model, "retries": 0}}


def end_of_turn(turn: int, text: str) -> EndOfTurn:
    return EndOfTurn(conversation=CONVERSATION, turn=turn, time=0.0, text=text,
                     reason="test", speech_end=0.0)


async def say(run: Run, turn: int, text: str) -> LLMReply:
    await run.graph.send(end_of_turn(turn, text))
    while True:
        for frame in run.collector.of(LLMReply):
            if frame.turn == turn:
                assert isinstance(frame, LLMReply)
                return frame
        assert not run.trace.named("error"), run.trace.named("error")
        await asyncio.sleep(0.01)


def test_fails_over_to_the_secondary_and_recovers_to_the_primary() -> None:
    port = free_port()
    stage = FallbackLLM(FallbackLLMOptions(
        providers=[primary(f"http://127.0.0.1:{port}/v1"), ECHO],  # type: ignore[list-item]
        recovery_interval=0.3))
    clock = RealClock()
    run = build(clock, [("llm", stage)], Collector(LLMText, LLMReply))
    replies: list[str] = []

    async def feed(run: Run) -> None:
        replies.append((await say(run, 1, "hello there")).text)
        replies.append((await say(run, 2, "still there")).text)  # stays on the backup
        with serve_app(FaultLLM().app, port):
            await asyncio.sleep(0.35)
            replies.append((await say(run, 3, "and now")).text)

    clock.run(drive(run, feed, deadline=30))
    assert replies[0].startswith("You said: hello there")
    assert replies[1].startswith("You said: still there")
    assert replies[2] == REPLY
    down, back = run.trace.named("failover")
    assert (down.turn, down.attrs["from"], down.attrs["to"]) == (1, "openai-llm", "echo-llm")
    assert "failed to connect" in down.attrs["reason"]
    assert (back.turn, back.attrs["from"], back.attrs["to"], back.attrs["reason"]) == (
        3, "echo-llm", "openai-llm", "recovered")


def test_a_slow_first_token_fails_over(fault_llm: tuple[FaultLLM, str]) -> None:
    _, base = fault_llm
    stage = FallbackLLM(FallbackLLMOptions(
        providers=[primary(base, "slow"), ECHO],  # type: ignore[list-item]
        first_output_timeout=0.3))
    clock = RealClock()
    run = build(clock, [("llm", stage)], Collector(LLMText, LLMReply))
    replies: list[str] = []

    async def feed(run: Run) -> None:
        replies.append((await say(run, 1, "hello")).text)

    clock.run(drive(run, feed, deadline=30))
    assert replies[0].startswith("You said: hello")
    (span,) = run.trace.named("failover")
    assert span.attrs["reason"].startswith("timeout")


def test_tool_calls_of_the_active_provider_come_through(fault_llm: tuple[FaultLLM, str]
                                                         ) -> None:
    _, base = fault_llm
    stage = FallbackLLM(FallbackLLMOptions(
        providers=[primary(base, "tools"), ECHO]))  # type: ignore[list-item]
    clock = RealClock()
    run = build(clock, [("llm", stage)], Collector(LLMReply, ToolCallRequested))

    async def feed(run: Run) -> None:
        await say(run, 1, "weather in Paris?")

    clock.run(drive(run, feed, deadline=30))
    (call,) = run.collector.of(ToolCallRequested)
    assert isinstance(call, ToolCallRequested) and call.turn == 1
    assert (call.name, call.arguments) == ("get_weather", '{"city": "Paris"}')
    (span,) = run.trace.named("tool_call")
    assert span.turn == 1


def test_every_provider_failing_is_one_traced_error() -> None:
    dead = [primary(f"http://127.0.0.1:{free_port()}/v1") for _ in range(2)]
    stage = FallbackLLM(FallbackLLMOptions(providers=dead))  # type: ignore[arg-type]
    clock = RealClock()
    run = build(clock, [("llm", stage)], Collector(LLMText, LLMReply))

    async def feed(run: Run) -> None:
        await run.graph.send(end_of_turn(1, "hello"))
        while not run.trace.named("error"):
            await asyncio.sleep(0.01)

    clock.run(drive(run, feed, deadline=30))
    (error,) = run.trace.named("error")
    assert "every provider failed" in error.attrs["error"]
    assert len(run.trace.named("failover")) == 1


def test_a_provider_of_the_wrong_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"tone-tts.*tts adapter"):
        FallbackLLM(FallbackLLMOptions(providers=[{"adapter": "tone-tts"}]))  # type: ignore[list-item]


def test_a_pipeline_file_names_fallback_llm_and_the_call_goes_on() -> None:
    from cascade import MemoryTrace, Pipeline, parse_pipeline
    from cascade.runner import run_call
    from tests.conftest import babble, silence

    dead = f"http://127.0.0.1:{free_port()}/v1"
    pipeline = Pipeline(parse_pipeline({"name": "fallback", "stages": {
        "vad": {"adapter": "energy-vad"},
        "asr": {"adapter": "scripted-asr", "options": {"script": ["hello there"]}},
        "turn": {"adapter": "turn"},
        "llm": {"adapter": "fallback-llm", "options": {"providers": [primary(dead), ECHO]}},
        "tts": {"adapter": "tone-tts", "options": {"first_byte_delay": 0.0}},
    }}))
    trace = MemoryTrace()
    clock = RealClock()
    audio = np.concatenate([silence(0.2), babble(0.6), silence(1.2)])
    run_call(pipeline, audio, clock, [trace])
    (span,) = trace.named("failover")
    assert (span.attrs["from"], span.attrs["to"]) == ("openai-llm", "echo-llm")
    (llm,) = trace.named("llm")
    assert llm.attrs["text"].startswith("You said: hello there")
    assert trace.named("tts") and not trace.named("error")


def test_fallback_tts_speaks_with_the_backup_voice() -> None:
    from cascade.adapters.fallback import FallbackTTS, FallbackTTSOptions
    from cascade.frames import AgentAudio

    dead = {"adapter": "openai-tts", "options": {
        "base_url": f"http://127.0.0.1:{free_port()}/v1", "api_key_env": None, "retries": 0}}
    tone = {"adapter": "tone-tts", "options": {"first_byte_delay": 0.0}}
    stage = FallbackTTS(FallbackTTSOptions(providers=[dead, tone]))  # type: ignore[list-item]
    clock = RealClock()
    run = build(clock, [("tts", stage)], Collector(AgentAudio))

    async def feed(run: Run) -> None:
        await run.graph.send(LLMText(conversation=CONVERSATION, turn=1, time=0.0,
                                     text="two words", last=True))

    clock.run(drive(run, feed, deadline=30))
    frames = [f for f in run.collector.of(AgentAudio) if isinstance(f, AgentAudio)]
    assert sum(len(f.pcm) for f in frames) >= 0.4 * 16000 and frames[-1].reply_end
    (span,) = run.trace.named("failover")
    assert (span.attrs["from"], span.attrs["to"]) == ("openai-tts", "tone-tts")


def test_fallback_asr_hears_with_the_backup() -> None:
    from cascade.adapters.fallback import FallbackASR, FallbackASROptions
    from cascade.adapters.scripted import EnergyVAD, EnergyVADOptions
    from cascade.clock import VirtualClock
    from cascade.frames import Transcript
    from tests.adapters.harness import play
    from tests.conftest import babble, silence

    dead = {"adapter": "openai-asr", "options": {
        "base_url": f"http://127.0.0.1:{free_port()}/v1", "api_key_env": None, "retries": 0}}
    script = {"adapter": "scripted-asr", "options": {"script": ["hello there"]}}
    stage = FallbackASR(FallbackASROptions(providers=[dead, script],  # type: ignore[list-item]
                                           partial_interval=0.0))
    clock = VirtualClock()
    run = build(clock, [("vad", EnergyVAD(EnergyVADOptions())), ("asr", stage)],
                Collector(Transcript))
    clock.run(drive(run, play(np.concatenate([silence(0.3), babble(0.8), silence(1.0)]))))
    finals = [f for f in run.collector.of(Transcript) if isinstance(f, Transcript) and f.final]
    assert [f.text for f in finals] == ["hello there"]
    (span,) = run.trace.named("failover")
    assert (span.attrs["from"], span.attrs["to"]) == ("openai-asr", "scripted-asr")
