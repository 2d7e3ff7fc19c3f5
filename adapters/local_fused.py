"""Plug an in-process speech-to-speech model into the graph as a fused stage.

A researcher writes one class with one async method and names it in a pipeline::

    stages:
      vad:   {adapter: silero}
      turn:  {adapter: turn, options: {require_transcript: false}}
      fused: {adapter: local-fused, options: {model: "mypkg.s2s:MyModel",
                                              arguments: {checkpoint: "/models/x"}}}

``MyModel(**arguments)`` is built once per process (shared by all
conversations) and must provide::

    async def respond(self, audio: PCM, sample_rate: int,
                      history: list[dict[str, str]]) -> AsyncIterator[str | tuple[PCM, int]]

called once per caller turn with the turn's audio (int16 mono) and the
conversation so far (``{"role": "user"|"assistant", "content": text}``); it
yields reply text pieces (``str``) and audio chunks (``(pcm, sample_rate)``)
in any order. Turn-taking is the controller's (the stage asks at each end of
turn); a barge-in cancels the ``respond`` task. ``ToneModel`` below is a
complete, model-free example.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

import numpy as np
from pydantic import Field

from cascade.errors import ConfigError
from cascade.frames import PCM
from cascade.stages.fused import (
    AgentAudioChunk,
    AgentText,
    FusedEvent,
    FusedOptions,
    FusedSession,
    FusedStage,
    ReplyDone,
    UserText,
)


class SpeechToSpeech(Protocol):
    """The interface a local model implements."""

    def respond(self, audio: PCM, sample_rate: int,
                history: list[dict[str, str]]) -> AsyncIterator[str | tuple[PCM, int]]: ...


class LocalFusedOptions(FusedOptions):
    model: str = Field("cascade.adapters.local_fused:ToneModel",
                       description='"module:Class" of the model to load')
    arguments: dict[str, Any] = Field(default_factory=dict, description="keyword arguments "
                                      "for the model's constructor")


@functools.lru_cache(maxsize=4)
def _load(path: str, frozen_arguments: tuple[tuple[str, Any], ...]) -> SpeechToSpeech:
    module_name, _, attribute = path.partition(":")
    if not attribute:
        raise ConfigError(f'local-fused model "{path}" must look like "package.module:Class"')
    try:
        cls = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f'local-fused model "{path}" cannot be loaded: {exc}') from exc
    model: SpeechToSpeech = cls(**dict(frozen_arguments))
    return model


class LocalSession:
    """Buffers a turn's audio, runs the model at commit, turns its output into events."""

    def __init__(self, model: SpeechToSpeech) -> None:
        self.model = model
        self.history: list[dict[str, str]] = []
        self._audio: list[PCM] = []
        self._rate = 16000
        self._events: asyncio.Queue[FusedEvent | None] = asyncio.Queue()
        self._reply: asyncio.Task[None] | None = None

    async def send_audio(self, pcm: PCM, sample_rate: int) -> None:
        self._rate = sample_rate
        self._audio.append(pcm)

    async def commit(self) -> None:
        audio = np.concatenate(self._audio) if self._audio else np.zeros(0, np.int16)
        self._audio = []
        if self._reply is not None and not self._reply.done():
            self._reply.cancel()
        self._reply = asyncio.create_task(self._respond(audio))

    async def _respond(self, audio: PCM) -> None:
        text: list[str] = []
        try:
            async for piece in self.model.respond(audio, self._rate, list(self.history)):
                if isinstance(piece, str):
                    text.append(piece)
                    self._events.put_nowait(AgentText(piece))
                else:
                    self._events.put_nowait(AgentAudioChunk(piece[0], piece[1]))
        except asyncio.CancelledError:
            self._events.put_nowait(ReplyDone(cancelled=True))
            raise
        self.history.append({"role": "assistant", "content": "".join(text).strip()})
        self._events.put_nowait(ReplyDone())

    async def cancel(self, played_seconds: float) -> None:
        if self._reply is not None and not self._reply.done():
            self._reply.cancel()

    async def events(self) -> AsyncIterator[FusedEvent]:
        while (event := await self._events.get()) is not None:
            if isinstance(event, UserText):
                self.history.append({"role": "user", "content": event.text})
            yield event

    async def close(self) -> None:
        if self._reply is not None:
            self._reply.cancel()
        self._events.put_nowait(None)


class LocalFused(FusedStage):
    """Any in-process speech-to-speech model behind the turn controller."""

    Options = LocalFusedOptions

    def __init__(self, options: LocalFusedOptions) -> None:
        super().__init__(options)
        self.local = options
        self.model = _load(options.model, tuple(sorted(options.arguments.items())))

    async def open_session(self) -> FusedSession:
        return LocalSession(self.model)


class ToneModel:
    """A model-free example: answers every turn with a sentence about its length, in tones."""

    def __init__(self, first_byte_delay: float = 0.15, seconds_per_word: float = 0.25) -> None:
        self.first_byte_delay = first_byte_delay
        self.seconds_per_word = seconds_per_word

    async def respond(self, audio: PCM, sample_rate: int,
                      history: list[dict[str, str]]) -> AsyncIterator[str | tuple[PCM, int]]:
        seconds = len(audio) / sample_rate
        reply = f"I heard {seconds:.1f} seconds from you in turn {len(history) + 1}."
        await asyncio.sleep(self.first_byte_delay)
        yield reply
        t = np.arange(int(sample_rate * self.seconds_per_word)) / sample_rate
        tone = (np.sin(2 * np.pi * 330 * t) * 0.3 * 32767).astype(np.int16)
        for _ in reply.split():
            yield tone, sample_rate
