"""llama.cpp with the bundled SmolLM2: a streamed reply, history under the token
budget, and a barge-in that stops generation and leaves the model usable."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from cascade.adapters import bundled
from cascade.adapters.llama_cpp import LlamaCppLLM, LlamaCppOptions
from cascade.clock import Clock, RealClock, VirtualClock
from cascade.frames import EndOfTurn, Interrupt, LLMReply, LLMText
from cascade.stages.llm import LLMStage, Message
from tests.adapters.harness import CONVERSATION, Collector, Run, build, drive
from tests.conftest import needs_models

pytestmark = needs_models

STORY = "Tell me a long story about a dragon who lives in a castle."


class Observed(LlamaCppLLM):
    """The real adapter, noting the prompts it sends and the text that streams back."""

    def __init__(self, options: LlamaCppOptions) -> None:
        super().__init__(options)
        self.prompts: list[list[Message]] = []
        self.deltas: list[list[str]] = []
        """Deltas that reached the stage, per generation."""
        self.generated: list[int] = []
        """Deltas the worker thread produced, per generation."""
        self.watchers: list[Callable[[], None]] = []

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.ended = asyncio.Event()
        await super().start()

    async def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        self.prompts.append([dict(m) for m in messages])
        self.deltas.append([])
        self.generated.append(0)
        async for delta in super().stream(messages):
            self.deltas[-1].append(delta)
            for watch in self.watchers:
                watch()
            yield delta

    def _generate(self, messages: list[Message], deliver: Any, stop: threading.Event) -> None:
        index = len(self.generated) - 1

        def counted(delta: str) -> None:
            self.generated[index] += 1
            deliver(delta)

        try:
            super()._generate(messages, counted, stop)
        finally:
            self.loop.call_soon_threadsafe(self.ended.set)


def end_of_turn(turn: int, text: str) -> EndOfTurn:
    return EndOfTurn(conversation=CONVERSATION, turn=turn, time=0.0, text=text,
                     reason="test", speech_end=0.0)


def converse(clock: Clock, llm: Observed, *texts: str) -> Run:
    """Send each user turn to the LLM in order; wait until every reply is done."""
    run = build(clock, [("llm", llm)], Collector(LLMText, LLMReply))

    async def feed(run: Run) -> None:
        for turn, text in enumerate(texts, 1):
            await run.graph.send(end_of_turn(turn, text))

    clock.run(drive(run, feed))
    return run


def test_ready_here() -> None:
    assert LlamaCppLLM.missing() == []
    path = bundled.smollm2_gguf()
    assert path is not None and path.read_bytes()[:4] == b"GGUF"


def test_streamed_reply_on_the_real_clock() -> None:
    llm = Observed(LlamaCppLLM.Options(max_tokens=48, temperature=0.0))
    run = converse(RealClock(), llm, STORY)

    frames = run.collector.frames
    texts = [f for f in frames if isinstance(f, LLMText)]
    replies = [f for f in frames if isinstance(f, LLMReply)]
    assert len(replies) == 1 and frames[-1] is replies[0]
    reply = replies[0]
    assert reply.text.strip() and reply.turn == 1
    assert len(texts) >= 2, [t.text for t in texts]
    assert [t.last for t in texts] == [False] * (len(texts) - 1) + [True]
    assert all(t.text.strip() for t in texts)
    assert " ".join(t.text for t in texts).split() == reply.text.split()
    # Clauses go out while the model is still writing, not all at the end.
    assert texts[0].time < reply.time
    assert len(llm.deltas[0]) > len(texts)

    (span,) = run.trace.named("llm")
    assert span.attrs["text"] == reply.text and span.attrs["user"] == STORY
    ttft = span.attrs["ttft"]
    assert ttft is not None and 0.0 < ttft <= span.end - span.start


def test_count_tokens_is_the_models_tokenizer() -> None:
    llm = LlamaCppLLM.create(LlamaCppLLM.Options())
    assert isinstance(llm, LlamaCppLLM)
    tokenizer = llm.shared.llama
    for text in ("antidisestablishmentarianism", "Supercalifragilistic xyzzy plugh",
                 "The quick brown fox jumps over the lazy dog."):
        assert llm.count_tokens(text) == len(tokenizer.tokenize(text.encode(), add_bos=False))
    # ... and not the characters/4 estimate of the base stage.
    word = "antidisestablishmentarianism"
    assert llm.count_tokens(word) != LLMStage.count_tokens(llm, word)


def test_history_is_kept_under_the_token_budget() -> None:
    budget = 64
    llm = Observed(LlamaCppLLM.Options(history_tokens=budget, max_tokens=12, temperature=0.0))
    said = [
        "My name is Alice and I live in a small village near the sea.",
        "I have two cats called Pepper and Salt, and a very old dog.",
        "Yesterday I walked along the beach and found a green bottle.",
        "What should I cook tonight for my neighbours who like fish?",
    ]
    run = converse(VirtualClock(), llm, *said)

    assert len(run.collector.of(LLMReply)) == len(said)
    assert len(llm.prompts) == len(said)
    for turn, prompt in enumerate(llm.prompts):
        assert prompt[0] == {"role": "system", "content": llm.options.system_prompt}
        assert prompt[-1] == {"role": "user", "content": said[turn]}
        history = prompt[1:]
        cost = sum(llm.count_tokens(m["content"]) + 4 for m in history)
        assert cost <= budget, (turn, cost, history)
    oldest = [m["content"] for m in llm.prompts[-1]]
    assert said[0] not in oldest and said[1] not in oldest


def test_barge_in_stops_generation_and_frees_the_model() -> None:
    max_tokens = 64
    llm = Observed(LlamaCppLLM.Options(max_tokens=max_tokens, temperature=0.0))
    clock = VirtualClock()
    run = build(clock, [("llm", llm)], Collector(LLMText, LLMReply))
    heard_at_interrupt: list[int] = []

    async def feed(run: Run) -> None:
        streaming = asyncio.Event()

        def watch() -> None:
            if len(llm.deltas[0]) >= 3:
                streaming.set()

        llm.watchers.append(watch)
        await run.graph.send(end_of_turn(1, STORY))
        await streaming.wait()
        heard_at_interrupt.append(len(llm.deltas[0]))
        await run.graph.broadcast(Interrupt(conversation=CONVERSATION, turn=1,
                                            time=clock.now(), reason="barge-in"))
        await asyncio.wait_for(llm.ended.wait(), 600)  # the worker thread returned
        llm.ended.clear()
        await run.graph.send(end_of_turn(2, "What is the capital of France?"))

    clock.run(drive(run, feed))

    (interrupted,) = heard_at_interrupt
    # The stream stopped where the barge-in found it; the thread stopped a few
    # tokens later at most (those already on their way to the loop, and the one
    # being computed when the flag was set), far short of max_tokens.
    assert len(llm.deltas[0]) == interrupted
    assert llm.generated[0] <= interrupted + 8 < max_tokens, llm.generated
    assert [f.turn for f in run.collector.of(LLMReply)] == [2]
    assert all(f.turn == 2 for f in run.collector.frames)
    reply = run.collector.of(LLMReply)[0]
    assert isinstance(reply, LLMReply) and reply.text.strip()

    spans = run.trace.named("llm")
    assert [s.turn for s in spans] == [1, 2]
    assert spans[0].attrs["text"] == "".join(llm.deltas[0]).strip()
    assert spans[1].attrs["ttft"] is not None
    assert llm.shared.lock.acquire(blocking=False)  # nobody holds the model
    llm.shared.lock.release()
