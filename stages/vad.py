"""Voice activity detection: speech probability per window -> speech start/stop events.

``VADStage`` turns a vendor's per-window speech probability into
``SpeechStarted``/``SpeechStopped`` with hysteresis (a start threshold, a lower
stop threshold, minimum speech and minimum silence), passes the caller's audio
on unchanged, and records one ``user_speech`` span per utterance. A vendor only
implements ``speech_probability`` for windows of ``window`` samples at ``rate``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cascade.audio import resample
from cascade.frames import PCM, Frame, SpeechStarted, SpeechStopped, UserAudio
from cascade.registry import Adapter


class VADOptions(BaseModel):
    """Hysteresis settings shared by every VAD."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.5, ge=0.0, le=1.0, description="P(speech) that starts speech")
    stop_threshold: float | None = Field(None, description="P(speech) below which silence "
                                         "counts (default threshold - 0.15)")
    min_speech: float = Field(0.1, ge=0.0, description="seconds of speech before a start")
    min_silence: float = Field(0.2, ge=0.0, description="seconds of silence before a stop")


class VADStage(Adapter):
    """Base of VAD adapters: hysteresis, events and the user_speech span."""

    kind = "vad"
    accepts = (UserAudio,)
    rate: ClassVar[int] = 16000
    window: ClassVar[int] = 512

    def __init__(self, options: VADOptions) -> None:
        self.options = options
        self.stop_threshold = (
            options.stop_threshold if options.stop_threshold is not None
            else max(0.0, options.threshold - 0.15)
        )
        self._pending: PCM = np.zeros(0, np.int16)
        self._pending_time = 0.0
        self.speaking = False
        self._voiced = 0.0
        self._onset: float | None = None
        self._silence_from: float | None = None
        self.last_probability = 0.0

    def speech_probability(self, window: PCM) -> float:
        """P(speech) for ``window`` samples of PCM16 at ``rate``."""
        raise NotImplementedError

    def reset_model(self) -> None:
        """Forget recurrent state (called between utterances by vendors that keep it)."""

    async def process(self, frame: Frame) -> None:
        assert isinstance(frame, UserAudio)
        await self.push(frame)
        pcm = frame.pcm if frame.sample_rate == self.rate else resample(
            frame.pcm, frame.sample_rate, self.rate)
        if len(self._pending):
            pcm = np.concatenate([self._pending, pcm])
        else:
            self._pending_time = frame.time
        step = self.window / self.rate
        used = 0
        while len(pcm) - used >= self.window:
            at = self._pending_time
            probability = self.speech_probability(pcm[used : used + self.window])
            self.last_probability = probability
            used += self.window
            self._pending_time = at + step
            await self._update(probability, at, step)
        self._pending = pcm[used:]

    async def _update(self, probability: float, at: float, step: float) -> None:
        opts = self.options
        ctx = self.ctx
        if not self.speaking:
            if probability >= opts.threshold:
                if self._onset is None:
                    self._onset = at
                self._voiced += step
                if self._voiced >= opts.min_speech:
                    self.speaking = True
                    self._silence_from = None
                    await self.push(SpeechStarted(
                        conversation=ctx.conversation, turn=ctx.turn, time=self._onset))
            elif probability < self.stop_threshold:
                self._onset, self._voiced = None, 0.0
            return
        if probability < self.stop_threshold:
            if self._silence_from is None:
                self._silence_from = at
            if at + step - self._silence_from >= opts.min_silence:
                await self._stopped(self._silence_from)
        else:
            self._silence_from = None

    async def _stopped(self, end: float) -> None:
        ctx = self.ctx
        onset = self._onset if self._onset is not None else end
        self.speaking, self._onset, self._voiced, self._silence_from = False, None, 0.0, None
        ctx.tracer.record("user_speech", self.name, ctx.turn, onset, end,
                          duration=round(end - onset, 3))
        await self.push(SpeechStopped(
            conversation=ctx.conversation, turn=ctx.turn, time=end, started=onset))

    async def finish(self) -> None:
        if self.speaking:
            await self._stopped(self._silence_from or self._pending_time)
