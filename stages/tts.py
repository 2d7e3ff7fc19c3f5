"""Speech synthesis: reply clauses -> agent audio frames at the pipeline rate.

``TTSStage`` asks the vendor for audio clause by clause as the LLM produces
them, resamples it with soxr to the pipeline rate, cuts it into 20 ms
``AgentAudio`` frames tagged with the clause they speak, and records the
``tts`` span with time to first byte.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cascade.audio import FrameCutter, resample
from cascade.frames import PCM, AgentAudio, Frame, LLMText
from cascade.registry import Adapter


class TTSOptions(BaseModel):
    """Options shared by every TTS adapter."""

    model_config = ConfigDict(extra="forbid")

    speed: float = Field(1.0, gt=0.0, description="speaking rate (1.0: the voice's own)")


class TTSStage(Adapter):
    """Base of TTS adapters: per-clause synthesis, resampling, framing, the tts span."""

    kind = "tts"
    accepts = (LLMText,)
    interruptible = True

    def __init__(self, options: TTSOptions) -> None:
        self.options = options

    def synthesize(self, text: str) -> AsyncIterator[tuple[PCM, int]]:
        """Yield (PCM16 mono, sample rate) chunks speaking ``text`` (vendor)."""
        raise NotImplementedError

    async def process(self, frame: Frame) -> None:
        assert isinstance(frame, LLMText)
        ctx = self.ctx
        rate = ctx.sample_rate
        text = frame.text.strip()
        chunks: list[PCM] = []
        known = 0.0
        if text:
            span = ctx.tracer.begin("tts", self.name, frame.turn)
            ttfb: float | None = None
            produced = span.start
            frames = FrameCutter(rate)
            async for pcm, source_rate in self.synthesize(text):
                produced = self.now()
                if ttfb is None:
                    ttfb = produced - span.start
                pcm = resample(pcm, source_rate, rate)
                known += len(pcm) / rate
                for chunk in frames.cut(pcm):
                    await self._send(frame, chunk, rate, known)
            if len(held := frames.rest()):
                chunks.append(held)
            span.end(produced, text=text, ttfb=None if ttfb is None else round(ttfb, 4))
        tail = chunks[0] if chunks else np.zeros(0, np.int16)
        await self._send(frame, tail, rate, known, clause_end=True, reply_end=frame.last)

    async def _send(self, frame: LLMText, pcm: PCM, rate: int, known: float,
                    clause_end: bool = False, reply_end: bool = False) -> None:
        await self.push(AgentAudio(
            conversation=frame.conversation, turn=frame.turn, time=self.now(), pcm=pcm,
            sample_rate=rate, text=frame.text, clause_seconds=known, clause_end=clause_end,
            reply_end=reply_end,
        ))
