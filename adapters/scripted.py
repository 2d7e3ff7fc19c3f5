"""Model-free adapters: deterministic stand-ins for tests, benchmarks and demos.

They run the same stage contracts as the real engines (so spans, metrics and
interruption behave identically) with no model: an energy VAD, an ASR that
reads its words from a script, an LLM that echoes the caller, and a TTS that
speaks in tones. Their delays are on the pipeline clock, so a virtual-clock run
is exact and repeatable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import numpy.typing as npt
from pydantic import Field

from cascade.frames import PCM
from cascade.stages.asr import ASROptions, ASRStage, Recognition
from cascade.stages.llm import LLMOptions, LLMStage, Message
from cascade.stages.tts import TTSOptions, TTSStage
from cascade.stages.vad import VADOptions, VADStage


class EnergyVADOptions(VADOptions):
    level_dbfs: float = Field(-35.0, description="RMS level that counts as speech")


class EnergyVAD(VADStage):
    """Speech = RMS energy above a level; no model, 20 ms windows."""

    Options = EnergyVADOptions
    window = 320

    def __init__(self, options: EnergyVADOptions) -> None:
        super().__init__(options)
        self._floor = (10 ** (options.level_dbfs / 20.0) * 32768.0) ** 2 * self.window

    def speech_probability(self, window: PCM) -> float:
        samples = window.astype(np.float32)
        return 1.0 if float(np.dot(samples, samples)) >= self._floor else 0.0


class ScriptedASROptions(ASROptions):
    partial_interval: float = 0.0
    script: list[str] = Field(default_factory=list, description="finals, in order")


class ScriptedASR(ASRStage):
    """Returns the next line of its script for each speech segment ("" when it runs out)."""

    Options = ScriptedASROptions

    def __init__(self, options: ScriptedASROptions) -> None:
        super().__init__(options)
        self._script = list(options.script)

    def recognize(self, audio: npt.NDArray[np.float32]) -> Recognition:
        text = self._script.pop(0) if self._script else ""
        return Recognition(text, avg_logprob=-0.1, no_speech_prob=0.01)


class EchoLLMOptions(LLMOptions):
    first_token_delay: float = Field(0.2, ge=0.0)
    token_interval: float = Field(0.01, ge=0.0)
    template: str = "You said: {text}. Is there anything else?"


class EchoLLM(LLMStage):
    """Answers with a template around the caller's words, word by word on the clock."""

    Options = EchoLLMOptions

    def __init__(self, options: EchoLLMOptions) -> None:
        super().__init__(options)
        self.echo = options

    async def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        clock = self.ctx.clock
        reply = self.echo.template.format(text=messages[-1]["content"].strip(" ."))
        await clock.sleep(self.echo.first_token_delay)
        for index, word in enumerate(reply.split(" ")):
            if index:
                await clock.sleep(self.echo.token_interval)
            yield word if index == 0 else " " + word


class ToneTTSOptions(TTSOptions):
    first_byte_delay: float = Field(0.05, ge=0.0)
    seconds_per_word: float = Field(0.25, gt=0.0)
    rate: int = 22050
    frequency: float = 220.0
    level: float = Field(0.3, gt=0.0, le=1.0)


class ToneTTS(TTSStage):
    """Speaks each word as a short tone: audio of realistic length, no model."""

    Options = ToneTTSOptions

    def __init__(self, options: ToneTTSOptions) -> None:
        super().__init__(options)
        self.tone = options

    async def synthesize(self, text: str) -> AsyncIterator[tuple[PCM, int]]:
        opts = self.tone
        await self.ctx.clock.sleep(opts.first_byte_delay)
        samples = int(opts.rate * opts.seconds_per_word / opts.speed)
        t = np.arange(samples, dtype=np.float32) / opts.rate
        word = (np.sin(2 * np.pi * opts.frequency * t) * opts.level * 32767).astype(np.int16)
        word[-samples // 5 :] = 0
        for _ in text.split():
            yield word, opts.rate
