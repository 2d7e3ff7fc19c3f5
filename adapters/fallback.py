"""Fallback adapters: an ordered list of providers for one stage, switched on failure.

``fallback-llm``, ``fallback-tts`` and ``fallback-asr`` each wrap providers given
as ``{adapter, options}`` (any installed adapter of the same kind). A request
goes to the active provider; if it raises, or (LLM/TTS) produces nothing within
``first_output_timeout``, the next provider gets the same request and a
``failover`` span records ``from``, ``to`` and ``reason``. Once a provider has
answered, a later failure in the same reply is an error, not a switch (the
caller has already heard part of it). After ``recovery_interval`` seconds on a
backup, the primary is tried first again; a success there records a
``failover`` span with reason ``recovered``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from cascade.adapters.provider import ProviderError
from cascade.errors import ConfigError
from cascade.frames import PCM, Frame, ToolCallRequested
from cascade.registry import Adapter, load_adapter
from cascade.stage import Stage, StageContext
from cascade.stages.asr import ASROptions, ASRStage, Recognition
from cascade.stages.llm import LLMOptions, LLMStage, Message
from cascade.stages.tts import TTSOptions, TTSStage

T = TypeVar("T")
S = TypeVar("S", bound=Stage)


class ProviderSpec(BaseModel):
    """One provider: an adapter name and its options."""

    model_config = ConfigDict(extra="forbid")

    adapter: str
    options: dict[str, Any] = Field(default_factory=dict)


class FailoverOptions(BaseModel):
    """Which providers, in order of preference, and when to switch back."""

    model_config = ConfigDict(extra="forbid")

    providers: list[ProviderSpec] = Field(min_length=1, description="primary first")
    first_output_timeout: float = Field(5.0, gt=0.0, description="seconds a provider has to "
                                        "produce its first token or audio")
    recovery_interval: float = Field(30.0, ge=0.0, description="seconds on a backup before "
                                     "the primary is tried again")


def build_providers(owner: str, kind: str, specs: list[ProviderSpec]) -> list[tuple[str, Stage]]:
    """(adapter name, stage) per provider; a ConfigError for a provider of the wrong kind."""
    built: list[tuple[str, Stage]] = []
    for spec in specs:
        cls: type[Adapter] = load_adapter(spec.adapter)
        if cls.kind != kind:
            raise ConfigError(f"adapter '{owner}': provider '{spec.adapter}' is a {cls.kind} "
                              f"adapter; list only {kind} adapters")
        options = cls.Options.model_validate(spec.options)
        cls.ensure_available(spec.adapter, options)
        built.append((spec.adapter, cls.create(options)))
    return built


FORWARDED = (ToolCallRequested,)
"""What a provider may push through its fallback stage (its text comes back as returns)."""


class Failover(Generic[S]):
    """The provider list of one stage: which one is active, when it failed, the spans."""

    def __init__(self, owner: Stage, providers: list[tuple[str, S]], options: FailoverOptions
                 ) -> None:
        self.owner = owner
        self.providers = providers
        self.options = options
        self.active = 0
        self.switched_at = 0.0
        self.turn = 0

    async def start(self, ctx: StageContext) -> None:
        for name, stage in self.providers:
            stage.bind(f"{self.owner.name}/{name}", ctx, self._forward)
            await stage.start()

    async def _forward(self, frame: Frame) -> None:
        """Providers are called directly; of what they push, only tool calls go on (the
        wrapper stamps each provider with the turn it answers, so they carry it already)."""
        if isinstance(frame, FORWARDED):
            await self.owner.push(frame)

    async def stop(self) -> None:
        for _, stage in self.providers:
            await stage.stop()

    def order(self) -> list[int]:
        """Provider indexes to try: the active one first, the primary when recovery is due."""
        now = self.owner.now()
        start = self.active
        if self.active and now - self.switched_at >= self.options.recovery_interval:
            start = 0
        return [*range(start, len(self.providers)), *range(0, start)]

    def _span(self, from_index: int, to_index: int, reason: str) -> None:
        now = self.owner.now()
        self.owner.ctx.tracer.record(
            "failover", self.owner.name, self.turn, now, now,
            **{"from": self.providers[from_index][0], "to": self.providers[to_index][0]},
            reason=reason[:500])

    def succeeded(self, index: int) -> None:
        if index != self.active:
            if index < self.active:
                self._span(self.active, index, "recovered")
            self.active = index
            self.switched_at = self.owner.now()

    def failed(self, tried: list[int], index: int, reason: str) -> None:
        """Note a failure; record the switch to the next provider in ``tried`` order."""
        position = tried.index(index)
        if position + 1 < len(tried):
            self._span(index, tried[position + 1], reason)

    async def first(self, begin: Callable[[S], AsyncIterator[T]]
                    ) -> tuple[AsyncIterator[T], T | None]:
        """The first item from the first provider that produces one in time, and the rest."""
        tried = self.order()
        reasons: list[str] = []
        for index in tried:
            name, stage = self.providers[index]
            items = begin(stage)
            try:
                first: T | None = await asyncio.wait_for(
                    anext(items), self.options.first_output_timeout)
            except StopAsyncIteration:
                first = None
            except Exception as exc:
                await _close(items)
                reason = ("timeout: nothing within "
                          f"{self.options.first_output_timeout} s" if isinstance(
                              exc, TimeoutError) else f"{type(exc).__name__}: {exc}")
                reasons.append(f"{name}: {reason}")
                self.failed(tried, index, reason)
                continue
            except BaseException:
                await _close(items)
                raise
            self.succeeded(index)
            return items, first
        raise ProviderError(f"adapter '{self.owner.name}': every provider failed - "
                            + "; ".join(reasons), retryable=True)


async def _close(items: AsyncIterator[Any]) -> None:
    aclose = getattr(items, "aclose", None)
    if aclose is not None:
        await aclose()


class FallbackLLMOptions(LLMOptions, FailoverOptions):
    pass


class FallbackLLM(LLMStage):
    """LLM providers in order of preference, switched on error or a slow first token."""

    Options = FallbackLLMOptions

    def __init__(self, options: FallbackLLMOptions) -> None:
        super().__init__(options)
        llms = build_providers("fallback-llm", "llm", options.providers)
        self.failover = Failover(self, [(n, s) for n, s in llms if isinstance(s, LLMStage)],
                                 options)
        self._current: AsyncIterator[str] | None = None

    async def start(self) -> None:
        await self.failover.start(self.ctx)
        await super().start()

    async def stop(self) -> None:
        await self.failover.stop()

    async def process(self, frame: Frame) -> None:
        self.failover.turn = frame.turn
        for _, provider in self.failover.providers:
            provider.turn = frame.turn
        try:
            await super().process(frame)
        finally:  # a barge-in cancels us anywhere; the provider's stream must end too
            current, self._current = self._current, None
            if current is not None:
                await _close(current)

    async def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        rest, first = await self.failover.first(lambda llm: llm.stream(messages))
        self._current = rest
        if first is not None:
            yield first
        async for delta in rest:
            yield delta


class FallbackTTSOptions(TTSOptions, FailoverOptions):
    pass


class FallbackTTS(TTSStage):
    """TTS providers in order of preference, switched on error or a slow first chunk."""

    Options = FallbackTTSOptions

    def __init__(self, options: FallbackTTSOptions) -> None:
        super().__init__(options)
        voices = build_providers("fallback-tts", "tts", options.providers)
        self.failover = Failover(self, [(n, s) for n, s in voices if isinstance(s, TTSStage)],
                                 options)

    async def start(self) -> None:
        await self.failover.start(self.ctx)

    async def stop(self) -> None:
        await self.failover.stop()

    async def process(self, frame: Frame) -> None:
        self.failover.turn = frame.turn
        await super().process(frame)

    async def synthesize(self, text: str) -> AsyncIterator[tuple[PCM, int]]:
        rest, first = await self.failover.first(lambda tts: tts.synthesize(text))
        try:
            if first is not None:
                yield first
            async for chunk in rest:
                yield chunk
        finally:
            await _close(rest)


class FallbackASROptions(ASROptions, FailoverOptions):
    pass


class FallbackASR(ASRStage):
    """ASR providers in order of preference, switched when recognition raises."""

    Options = FallbackASROptions

    def __init__(self, options: FallbackASROptions) -> None:
        super().__init__(options)
        ears = build_providers("fallback-asr", "asr", options.providers)
        self.failover = Failover(self, [(n, s) for n, s in ears if isinstance(s, ASRStage)],
                                 options)

    async def start(self) -> None:
        await self.failover.start(self.ctx)

    async def stop(self) -> None:
        await super().stop()
        await self.failover.stop()

    async def process(self, frame: Frame) -> None:
        self.failover.turn = frame.turn
        await super().process(frame)

    def recognize(self, audio: npt.NDArray[np.float32]) -> Recognition:
        """Each provider in turn (this runs in a worker thread; spans are thread-safe
        enough here: the tracer only appends to its sinks)."""
        tried = self.failover.order()
        reasons: list[str] = []
        for index in tried:
            name, stage = self.failover.providers[index]
            try:
                result = stage.recognize(audio)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                reasons.append(f"{name}: {reason}")
                self.failover.failed(tried, index, reason)
                continue
            self.failover.succeeded(index)
            return result
        raise ProviderError(f"adapter '{self.name}': every provider failed - "
                            + "; ".join(reasons), retryable=True)
