"""Language model: the user's turn -> the agent's reply, streamed clause by clause.

``LLMStage`` keeps the conversation history under a token budget, builds the
messages (system prompt first), streams the vendor's text deltas, cuts them
into clauses for TTS and records the ``llm`` span with time to first token.
When the caller barges in, the history keeps only what the agent actually got
to say (reported by playout), not the reply it planned.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

from pydantic import BaseModel, ConfigDict, Field

from cascade.clock import Clock
from cascade.frames import (
    AgentSpeechStopped,
    EndOfTurn,
    Frame,
    LLMReply,
    LLMText,
    ResumeReply,
    SystemFrame,
)
from cascade.registry import Adapter
from cascade.stages.clauses import ClauseSplitter

Message = dict[str, str]
Generate = Callable[[Callable[[str], None], threading.Event], None]
"""A blocking generator loop: hands each text piece to its first argument and returns
early once its second argument (the stop flag) is set."""


async def stream_from_thread(clock: Clock, generate: Generate) -> AsyncIterator[str]:
    """Text pieces of a blocking local model, produced in a worker thread, as they come.

    Closing the iterator (a barge-in cancels the stage) sets the stop flag, so the
    worker returns before its next token instead of finishing the reply unseen."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    stop = threading.Event()

    def deliver(piece: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, piece)

    async def run() -> None:
        try:
            await clock.run_blocking(generate, deliver, stop)
        finally:
            queue.put_nowait(None)

    worker = asyncio.create_task(run())
    try:
        while (piece := await queue.get()) is not None:
            yield piece
        await worker
    finally:
        stop.set()
        worker.add_done_callback(_abandoned)  # closed early: its outcome no longer matters


def _abandoned(task: asyncio.Task[None]) -> None:
    """Mark a worker's outcome as seen, so a cut reply's late error is not logged as lost."""
    if not task.cancelled():
        task.exception()


class LLMOptions(BaseModel):
    """Persona and budget settings shared by every LLM adapter."""

    model_config = ConfigDict(extra="forbid")

    system_prompt: str = Field(
        "You are a friendly, concise voice assistant. Answer in one or two short sentences.",
        description="persona and instructions",
    )
    greeting: str | None = Field(None, description="what the agent says first (turn 0)")
    max_tokens: int = Field(80, ge=1)
    temperature: float = Field(0.7, ge=0.0)
    history_tokens: int = Field(1024, ge=64, description="token budget for past turns")
    clause_min_words: int = Field(4, ge=1)


class LLMStage(Adapter):
    """Base of LLM adapters: history, clause streaming, interruption-aware memory."""

    kind = "llm"
    accepts = (EndOfTurn, ResumeReply)
    interruptible = True

    def __init__(self, options: LLMOptions) -> None:
        self.options = options
        self.history: list[Message] = []
        self._replies: dict[int, Message] = {}
        self._planned: dict[int, str] = {}
        self._heard_before: dict[int, str] = {}
        self.turn = 0
        """The turn being answered: set by ``process``, or by a wrapper (``fallback-llm``)
        that calls ``stream`` itself, so what a vendor traces or pushes is stamped right."""

    def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        """Yield reply text deltas for ``messages`` (vendor)."""
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` (vendors with a tokenizer override this estimate)."""
        return max(1, len(text) // 4)

    def messages(self) -> list[Message]:
        """System prompt plus the newest history that fits the token budget."""
        budget = self.options.history_tokens
        kept: list[Message] = []
        for message in reversed(self.history):
            cost = self.count_tokens(message["content"]) + 4
            if cost > budget and kept:
                break
            budget -= cost
            kept.append(message)
        return [{"role": "system", "content": self.options.system_prompt}, *reversed(kept)]

    async def start(self) -> None:
        greeting = self.options.greeting
        if greeting:
            self._remember_reply(0, greeting)
            await self.push(LLMText(conversation=self.ctx.conversation, turn=0,
                                    time=self.now(), text=greeting, last=True))

    async def process(self, frame: Frame) -> None:
        self.turn = frame.turn
        if isinstance(frame, ResumeReply):
            await self._resume(frame)
            return
        assert isinstance(frame, EndOfTurn)
        if not frame.text.strip():
            return
        ctx = self.ctx
        self.history.append({"role": "user", "content": frame.text})
        messages = self.messages()
        message = self._remember_reply(frame.turn, "")
        span = ctx.tracer.begin("llm", self.name, frame.turn)
        splitter = ClauseSplitter(self.options.clause_min_words)
        ttft: float | None = None
        try:
            async for delta in self.stream(messages):
                if ttft is None and delta.strip():
                    ttft = self.now() - span.start
                message["content"] += delta
                self._planned[frame.turn] = message["content"]
                for clause in splitter.feed(delta):
                    await self._say(frame.turn, clause, last=False)
        finally:
            text = message["content"].strip()
            message["content"] = text
            if not text:
                self._forget_reply(frame.turn)
            span.end(text=text, ttft=None if ttft is None else round(ttft, 4),
                     user=frame.text)
        await self._say(frame.turn, splitter.flush(), last=True)
        await self.push(LLMReply(conversation=ctx.conversation, turn=frame.turn,
                                 time=self.now(), text=text))

    async def _say(self, turn: int, text: str, last: bool) -> None:
        """One clause for TTS; the last one may be empty (it only marks the reply's end)."""
        await self.push(LLMText(conversation=self.ctx.conversation, turn=turn,
                                time=self.now(), text=text, last=last))

    async def _resume(self, frame: ResumeReply) -> None:
        """Speak the cut reply again from the sentence where the caller cut in."""
        message = self._replies.get(frame.resumes)
        heard = message["content"] if message is not None else ""
        kept, rest = unheard_part(self._planned.get(frame.resumes, ""), heard)
        if not rest:
            return
        self.ctx.tracer.record("resume", self.name, frame.turn, self.now(), self.now(),
                               resumes=frame.resumes, text=rest, reason=frame.reason)
        if message is None:
            message = self._remember_reply(frame.turn, "")
        self._replies[frame.turn] = message
        message["content"] = f"{kept} {rest}".strip()
        self._planned[frame.turn] = rest
        self._heard_before[frame.turn] = kept
        splitter = ClauseSplitter(self.options.clause_min_words)
        for clause in splitter.feed(rest + " "):
            await self._say(frame.turn, clause, last=False)
        await self._say(frame.turn, splitter.flush(), last=True)

    def _remember_reply(self, turn: int, text: str) -> Message:
        message = {"role": "assistant", "content": text}
        self.history.append(message)
        self._replies[turn] = message
        return message

    def _forget_reply(self, turn: int) -> None:
        message = self._replies.pop(turn, None)
        if message is not None:
            self.history = [m for m in self.history if m is not message]

    async def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, AgentSpeechStopped) and frame.interrupted:
            self.truncate_reply(frame.turn, frame.spoken_text)

    def truncate_reply(self, turn: int, spoken: str) -> None:
        """Keep only what the caller actually heard of the reply to ``turn``."""
        message = self._replies.get(turn)
        if message is None:
            return
        spoken = f"{self._heard_before.get(turn, '')} {spoken}".strip()
        if spoken:
            message["content"] = spoken
        else:
            self._forget_reply(turn)


def unheard_part(planned: str, heard: str) -> tuple[str, str]:
    """Split ``planned`` into the whole sentences the caller heard and the rest, which
    restarts at the sentence they cut into (``heard`` is a word prefix of ``planned``)."""
    words = planned.split()
    cut = min(len(heard.split()), len(words))
    while cut > 0 and not words[cut - 1].endswith((".", "!", "?", "…")):
        cut -= 1
    return " ".join(words[:cut]), " ".join(words[cut:])

