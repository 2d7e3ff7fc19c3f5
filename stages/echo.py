"""Echo gate: the agent's own voice coming back through the caller's microphone
must not count as the caller speaking.

``EchoGate`` sits in front of the VAD. While nothing was played recently it
passes the caller's audio through untouched (one comparison per frame). During
and just after agent playback it compares the input with what was played
(``ctx.playback``): it finds the echo path's delay and gain by normalised
cross-correlation over the last ``window`` seconds, subtracts the delayed,
scaled reference, and passes the residual on, so the VAD hears the caller and
not the echo. When the caller talks over the agent (double talk) the
correlation drops and the last good estimate is kept. This is a single-path
gate for loudspeaker echo, not a full adaptive canceller (the microphone front
end can add one).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from cascade.frames import PCM, Frame, UserAudio
from cascade.registry import Adapter


class EchoGateOptions(BaseModel):
    """How far and how often the gate looks for the echo."""

    model_config = ConfigDict(extra="forbid")

    max_delay: float = Field(0.4, gt=0.0, description="longest echo path delay (s)")
    window: float = Field(0.6, gt=0.0, description="input analysed per estimate (s)")
    update_every: float = Field(0.2, gt=0.0, description="seconds between estimates")
    min_correlation: float = Field(0.5, ge=0.0, le=1.0, description="below this the input "
                                   "is not (only) echo: keep the previous estimate")


class EchoGate(Adapter):
    """Removes the agent's own playback from the input before the VAD hears it."""

    kind = "other"
    accepts = (UserAudio,)
    Options = EchoGateOptions

    def __init__(self, options: EchoGateOptions) -> None:
        self.options = options
        self.delay: float | None = None
        self.gain = 0.0
        self.correlation = 0.0
        self.suppressed = 0.0  # seconds of input silenced while the echo path was unknown
        self._history: npt.NDArray[np.float32] = np.zeros(0, np.float32)
        self._next_estimate = float("-inf")
        self._since: float | None = None  # when the current stretch of playback began

    async def start(self) -> None:
        rate = self.ctx.sample_rate
        self._history = np.zeros(int(rate * self.options.window), np.float32)

    async def process(self, frame: Frame) -> None:
        assert isinstance(frame, UserAudio)
        playback = self.ctx.playback
        if playback is None or not playback.playing_near(frame.time - self.options.max_delay):
            self._since = None
            self._remember(frame.pcm)
            await self.push(frame)
            return
        if self._since is None:
            self._since = frame.time
        await self.push(self.cancel(frame))

    def _remember(self, pcm: PCM) -> None:
        n = len(pcm)
        self._history = np.concatenate([self._history[n:], pcm.astype(np.float32)])

    def cancel(self, frame: UserAudio) -> UserAudio:
        """The frame with the estimated echo of the agent's playback taken out."""
        self._remember(frame.pcm)
        end = frame.time + frame.duration
        if end >= self._next_estimate or self.delay is None:
            self._estimate(end)
            self._next_estimate = end + self.options.update_every
        if self.delay is None:
            # The echo path is not known yet: keep the gate shut for as long as the
            # first echo could take to arrive and be measured, then let audio through
            # (with headphones there is no echo to find).
            settling = self._since is not None and (
                frame.time - self._since < self.options.max_delay + 0.2)
            if settling:
                self.suppressed += frame.duration
                return UserAudio(conversation=frame.conversation, turn=frame.turn,
                                 time=frame.time, pcm=np.zeros_like(frame.pcm),
                                 sample_rate=frame.sample_rate)
            return frame
        assert self.ctx.playback is not None
        echo = self.ctx.playback.read(frame.time - self.delay, len(frame.pcm))
        residual = frame.pcm.astype(np.float32) - self.gain * echo.astype(np.float32)
        pcm = np.clip(residual, -32768, 32767).astype(np.int16)
        return UserAudio(conversation=frame.conversation, turn=frame.turn, time=frame.time,
                         pcm=pcm, sample_rate=frame.sample_rate)

    def _estimate(self, end: float) -> None:
        """Delay and gain of the echo path from the last ``window`` seconds of input."""
        assert self.ctx.playback is not None
        rate = self.ctx.sample_rate
        x = self._history
        lags = int(self.options.max_delay * rate)
        reference = self.ctx.playback.read(end - len(x) / rate - self.options.max_delay,
                                           len(x) + lags).astype(np.float32)
        energy_x = float(np.dot(x, x))
        if energy_x <= 0.0 or not reference.any():
            return
        size = 1 << int(np.ceil(np.log2(len(reference) + len(x))))
        spectrum = np.fft.rfft(reference, size) * np.conj(np.fft.rfft(x, size))
        corr = np.fft.irfft(spectrum, size)[: lags + 1]  # corr[k]: reference shifted by k
        squares = np.concatenate([[0.0], np.cumsum(reference.astype(np.float64) ** 2)])
        energy_r = squares[len(x) : len(x) + lags + 1] - squares[: lags + 1]
        valid = energy_r > max(float(energy_r.max()) * 1e-3, 1.0)
        normalised = np.where(
            valid, corr / np.sqrt(np.maximum(energy_r, 1e-9) * energy_x), 0.0)
        shift = int(np.argmax(normalised))
        if self.delay is not None:
            # A room's echo path does not jump: keep the known delay while it still
            # explains the input about as well as the best candidate (periodic sounds
            # have several equally good peaks).
            known = lags - round(self.delay * rate)
            if 0 <= known <= lags and normalised[known] >= max(
                    self.options.min_correlation, normalised[shift] - 0.05):
                shift = known
        self.correlation = float(normalised[shift])
        if self.correlation >= self.options.min_correlation:
            self.delay = (lags - shift) / rate
            self.gain = float(corr[shift] / max(energy_r[shift], 1e-9))
        elif self.correlation < 0.1:
            # No echo left to explain (headphones, or a canceller upstream already took
            # it out): let the old gain fade rather than subtract an echo that is gone.
            self.gain *= 0.5
