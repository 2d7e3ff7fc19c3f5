"""openai-llm against real local servers: llama.cpp's OpenAI-compatible server for
streaming and barge-in, a fault-injecting server for statuses, retries and bad streams."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from cascade.adapters.openai_llm import OpenAILLM, OpenAILLMOptions
from cascade.clock import RealClock
from cascade.frames import EndOfTurn, Interrupt, LLMReply, LLMText, ToolCallRequested
from cascade.tracing import Span
from tests.adapters.harness import CONVERSATION, Collector, Run, build, drive
from tests.vendors.fault_llm import REPLY, FaultLLM
from tests.vendors.servers import free_port


def end_of_turn(turn: int, text: str) -> EndOfTurn:
    return EndOfTurn(conversation=CONVERSATION, turn=turn, time=0.0, text=text,
                     reason="test", speech_end=0.0)


def llm(base_url: str, **options: Any) -> OpenAILLM:
    defaults: dict[str, Any] = {"base_url": base_url, "api_key_env": None, "model": "ok",
                                "retries": 0, "backoff": 0.01, "read_timeout": 20.0}
    return OpenAILLM(OpenAILLMOptions(**{**defaults, **options}))


def converse(stage: OpenAILLM, *turns: str | tuple[str, str]) -> Run:
    """Each turn is a text, or (model, text) to switch the server's behaviour first."""
    clock = RealClock()
    run = build(clock, [("llm", stage)], Collector(LLMText, LLMReply, ToolCallRequested))

    async def feed(run: Run) -> None:
        for turn, item in enumerate(turns, 1):
            model, text = item if isinstance(item, tuple) else (stage.remote.model, item)
            stage.remote.model = model
            await run.graph.send(end_of_turn(turn, text))
            while not (any(f.turn == turn for f in run.collector.of(LLMReply))
                       or any(s.turn == turn for s in errors(run))):
                await asyncio.sleep(0.01)

    clock.run(drive(run, feed, deadline=60))
    return run


def errors(run: Run) -> list[Span]:
    return run.trace.named("error")


def test_streams_a_reply_from_llama_cpp_server(llama_base: str) -> None:
    stage = llm(llama_base, model="smollm2", max_tokens=48, temperature=0.0)
    run = converse(stage, "What is the capital of France?")

    assert not errors(run), errors(run)
    (reply,) = run.collector.of(LLMReply)
    assert isinstance(reply, LLMReply) and reply.text.strip()
    texts = run.collector.of(LLMText)
    assert texts[-1].last and all(not t.last for t in texts[:-1])
    assert " ".join(t.text for t in texts if isinstance(t, LLMText)).split() == reply.text.split()
    (span,) = run.trace.named("llm")
    assert span.attrs["text"] == reply.text
    assert 0 < span.attrs["ttft"] <= span.end - span.start


def test_barge_in_closes_the_stream_and_the_server_serves_the_next_turn(
        llama_base: str) -> None:
    stage = llm(llama_base, model="smollm2", max_tokens=400, temperature=0.7)
    clock = RealClock()
    run = build(clock, [("llm", stage)], Collector(LLMText, LLMReply, ToolCallRequested))
    cut: list[Any] = []

    async def feed(run: Run) -> None:
        await run.graph.send(end_of_turn(1, "Tell me a very long story about a dragon."))
        while not run.collector.of(LLMText):
            await asyncio.sleep(0.005)
        cut.append(stage.response)
        await run.graph.broadcast(Interrupt(conversation=CONVERSATION, turn=1,
                                            time=clock.now(), reason="barge-in"))
        await asyncio.sleep(0.05)
        cut.append(cut[0].is_closed)
        await run.graph.send(end_of_turn(2, "Say hello."))
        while not run.collector.of(LLMReply):
            await asyncio.sleep(0.01)

    clock.run(drive(run, feed, deadline=60))
    response, closed = cut
    assert response is not None and closed, "the barge-in left the HTTP stream open"
    assert stage.response is None
    assert [f.turn for f in run.collector.of(LLMReply)] == [2]
    spans = run.trace.named("llm")
    assert [s.turn for s in spans] == [1, 2]
    assert len(spans[0].attrs["text"].split()) < 200  # cut short, far from max_tokens
    assert not errors(run)


def test_clauses_and_ttft_from_a_scripted_stream(fault_llm: tuple[FaultLLM, str]) -> None:
    _, base = fault_llm
    run = converse(llm(base), "hi")
    (reply,) = run.collector.of(LLMReply)
    assert isinstance(reply, LLMReply) and reply.text == REPLY
    clauses = [t.text for t in run.collector.of(LLMText) if isinstance(t, LLMText)]
    assert len(clauses) >= 2 and " ".join(clauses).split() == REPLY.split()
    assert run.trace.named("llm")[0].attrs["ttft"] > 0


def test_connection_refused_is_an_error_span_and_the_conversation_goes_on() -> None:
    stage = llm(f"http://127.0.0.1:{free_port()}/v1", retries=1)
    run = converse(stage, "hello", "again")
    spans = errors(run)
    assert [s.turn for s in spans] == [1, 2]
    assert "ProviderError" in spans[0].attrs["error"]
    assert "failed to connect" in spans[0].attrs["error"]
    assert "after 2 attempt(s)" in spans[0].attrs["error"]


def test_401_names_the_key_variable_and_never_shows_the_key(
        fault_llm: tuple[FaultLLM, str], monkeypatch: pytest.MonkeyPatch) -> None:
    _, base = fault_llm
    monkeypatch.setenv("TEST_LLM_KEY", "sk-test-very-secret-123")
    run = converse(llm(base, model="status-401", api_key_env="TEST_LLM_KEY", retries=3), "hi")
    (span,) = errors(run)
    assert "HTTP 401" in span.attrs["error"] and "TEST_LLM_KEY" in span.attrs["error"]
    assert "sk-test-very-secret-123" not in span.to_json()
    assert "***" in span.attrs["error"]  # the echoed key was scrubbed


def test_429_is_retried_until_success(fault_llm: tuple[FaultLLM, str]) -> None:
    server, base = fault_llm
    model = f"flaky-2-{uuid.uuid4().hex[:6]}"
    stage = llm(base, model=model, retries=3)
    run = converse(stage, "hi")
    assert not errors(run)
    assert server.seen[model] == 3
    (reply,) = run.collector.of(LLMReply)
    assert isinstance(reply, LLMReply) and reply.text == REPLY


def test_429_beyond_the_retries_is_an_error(fault_llm: tuple[FaultLLM, str]) -> None:
    server, base = fault_llm
    model = f"flaky-5-{uuid.uuid4().hex[:6]}"
    run = converse(llm(base, model=model, retries=1), "hi")
    (span,) = errors(run)
    assert "HTTP 429" in span.attrs["error"] and server.seen[model] == 2


@pytest.mark.parametrize(("model", "expected"), [
    ("malformed", "malformed stream event"),
    ("cut", "mid-reply"),
    ("error-event", "model overloaded"),
    ("status-503", "HTTP 503"),
])
def test_bad_streams_are_traced_errors(fault_llm: tuple[FaultLLM, str], model: str,
                                       expected: str) -> None:
    _, base = fault_llm
    run = converse(llm(base), (model, "hi"), ("ok", "and now?"))
    (span,) = errors(run)
    assert span.turn == 1 and expected in span.attrs["error"], span.attrs["error"]
    assert [f.turn for f in run.collector.of(LLMReply)] == [2]


def test_tool_calls_are_traced_and_surfaced_as_frames(fault_llm: tuple[FaultLLM, str]) -> None:
    _, base = fault_llm
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    run = converse(llm(base, model="tools", tools=tools), "weather in Paris?")
    assert not errors(run)
    (call,) = run.trace.named("tool_call")
    assert call.turn == 1
    assert call.attrs["tool"] == "get_weather" and call.attrs["id"] == "call_1"
    assert call.attrs["arguments"] == '{"city": "Paris"}'
    (frame,) = run.collector.of(ToolCallRequested)
    assert isinstance(frame, ToolCallRequested) and frame.turn == 1
    assert (frame.call_id, frame.name, frame.arguments) == (
        "call_1", "get_weather", '{"city": "Paris"}')
