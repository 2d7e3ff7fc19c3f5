"""An adaptive acoustic echo canceller for the microphone front end (numpy only).

A loudspeaker's echo is not one delayed, scaled copy of what was played: the
sound card's and the mixer's resamplers, a fractional-sample delay and the
room's reflections smear it, and a single-tap subtraction (the in-graph echo
gate) leaves enough behind for a sensitive VAD to hear the agent. This is the
classic remedy, in two parts, for 20 ms frames:

* ``DelayFinder`` - where the echo sits: GCC-PHAT between the last second of
  microphone input and what playout played (``PlaybackHistory``), re-checked
  every ``update_every`` seconds while the agent is heard and the caller is not.
* ``AdaptiveFilter`` - what the echo sounds like: a short partitioned-block
  frequency-domain NLMS filter (overlap-save, constrained gradient) on the
  reference aligned by that delay, which learns the rest of the path.

A Geigel detector pauses learning while the microphone is louder than the echo
could be (the caller talking over the agent). With nothing played nearby the
frame passes through untouched. While only the agent is heard, what is left
is suppressed (a VAD hears speech in even a faint residual); when the caller
talks over the agent, the frame passes with the estimated echo removed.

Why our own: no maintained binding of a canceller installs on our Python 3.11
/ Linux machines. PyPI's ``webrtc-apm`` has no distribution for them,
``aec-audio-processing`` is a source package that needs meson, swig and a C++
build of WebRTC's audio processing (tens of minutes on two cores), and the
``pyaec`` wheel that does install damages the caller's speech even when there
is no echo at all.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

from cascade.frames import PCM
from cascade.playback import PlaybackHistory

Floats = npt.NDArray[np.float64]
Spectrum = npt.NDArray[np.complex128]


class AdaptiveFilter:
    """Partitioned-block frequency-domain NLMS: ``error = mic - filter(reference)``."""

    def __init__(self, frame: int, partitions: int = 3, step: float = 0.8,
                 regularization: float = 0.05) -> None:
        self.frame = frame
        self.step = step
        self.regularization = regularization
        bins = frame + 1
        self.weights: list[Spectrum] = [np.zeros(bins, np.complex128)
                                        for _ in range(partitions)]
        self._spectra: deque[Spectrum] = deque(
            [np.zeros(bins, np.complex128) for _ in range(partitions)], maxlen=partitions)
        self._previous: Floats = np.zeros(frame, np.float64)
        self._power: Floats = np.zeros(bins, np.float64)

    def cancel(self, mic: Floats, reference: Floats, learn: bool) -> Floats:
        n = self.frame
        self._spectra.appendleft(np.fft.rfft(np.concatenate([self._previous, reference])))
        self._previous = reference
        estimate = sum(w * s for w, s in zip(self.weights, self._spectra, strict=True))
        error: Floats = mic - np.fft.irfft(estimate, 2 * n)[n:]
        if learn:
            self._learn(error)
        return error

    def _learn(self, error: Floats) -> None:
        n = self.frame
        # NLMS: normalise by the reference energy the whole filter sees, bin by bin.
        energy = sum(s.real**2 + s.imag**2 for s in self._spectra)
        self._power = np.maximum(energy, 0.5 * self._power)
        mean = float(self._power.mean())
        if mean < len(self.weights) * (2 * n) * 10.0**2:
            return  # (near) silence in the reference: nothing to learn from
        gradient = np.fft.rfft(np.concatenate([np.zeros(n), error]))
        scaled = self.step * gradient / (self._power + self.regularization * mean)
        for index, spectrum in enumerate(self._spectra):
            update = np.fft.irfft(np.conj(spectrum) * scaled, 2 * n)
            update[n:] = 0.0  # keep each partition causal and one frame long
            self.weights[index] += np.fft.rfft(update)


class DelayFinder:
    """The echo path's bulk delay, by GCC-PHAT of microphone input against playback."""

    def __init__(self, rate: int, max_delay: float, window: float = 1.0,
                 min_peak: float = 0.15) -> None:
        self.rate = rate
        self.max_delay = max_delay
        self.min_peak = min_peak
        self._mic: Floats = np.zeros(int(rate * window), np.float64)
        self._heard = 0  # samples remembered, up to the window

    def remember(self, mic: Floats) -> None:
        n = len(mic)
        if n >= len(self._mic):
            self._mic = mic[-len(self._mic):].copy()
        else:  # shift in place: no new one-second window per frame
            self._mic[:-n] = self._mic[n:]
            self._mic[-n:] = mic
        self._heard = min(len(self._mic), self._heard + n)

    def find(self, playback: PlaybackHistory, end: float) -> float | None:
        """Delay (s) of the echo in the window ending at ``end``; None when unclear."""
        x = self._mic
        lags = int(self.max_delay * self.rate)
        ref = playback.read(end - (len(x) + lags) / self.rate, len(x) + lags).astype(np.float64)
        if self._heard < len(x) or not ref.any() or not x.any():
            return None  # a partly empty window correlates with anything
        size = 1 << int(np.ceil(np.log2(len(ref) + len(x))))
        cross = np.fft.rfft(ref, size) * np.conj(np.fft.rfft(x, size))
        phat = np.fft.irfft(cross / np.maximum(np.abs(cross), 1e-9), size)
        # phat[k] peaks where x[t] matches ref[t + k]; ref starts ``lags`` samples early.
        candidates = phat[: lags + 1]
        best = int(np.argmax(candidates))
        if candidates[best] < self.min_peak:
            return None
        return (lags - best) / self.rate


class EchoCanceller:
    """Removes the agent's echo from microphone frames stamped on the pipeline clock."""

    def __init__(self, playback: PlaybackHistory, frame: int, *, max_delay: float = 0.6,
                 update_every: float = 0.25, double_talk: float = 0.45,
                 hangover: int = 10, suppression: float = 0.01,
                 talk_floor: float = 300.0) -> None:
        self.playback = playback
        self.rate = playback.rate
        self.frame = frame
        self.max_delay = max_delay
        self.update_every = update_every
        self.double_talk = double_talk
        self.hangover = hangover
        self.suppression = suppression
        self.talk_floor = talk_floor
        self.erle = 0.0  # echo return loss enhancement achieved (dB, smoothed)
        self.margin = 2 * frame // 3  # filter taps before the bulk delay (fractional spread)
        self.delay: float | None = None
        self.frames_cancelled = 0
        self._finder = DelayFinder(self.rate, max_delay)
        self._filter = AdaptiveFilter(frame)
        self._next_check = float("-inf")
        self._held = 0

    def process(self, mic: PCM, at: float) -> PCM:
        """``mic`` (played into the room from pipeline time ``at``) without the echo."""
        if len(mic) != self.frame:
            raise ValueError(f"the echo canceller works on frames of {self.frame} samples, "
                             f"got {len(mic)}")
        d = mic.astype(np.float64)
        self._finder.remember(d)
        if not self.playback.playing_near(at - self.max_delay - 0.1):
            return mic  # nothing played within reach: no echo
        end = at + self.frame / self.rate
        talking = self._double_talk(d, at)
        if not talking and end >= self._next_check:
            self._next_check = end + self.update_every
            found = self._finder.find(self.playback, end)
            if found is not None and (self.delay is None or abs(found - self.delay) > 0.004):
                self.delay = found
                self._filter = AdaptiveFilter(self.frame)  # the path moved: learn it anew
                self.erle = 0.0
        out = d
        if self.delay is not None:
            start = at - self.delay + self.margin / self.rate  # the echo lags it by margin
            reference = self.playback.read(start, self.frame).astype(np.float64)
            cancelled = self._filter.cancel(d, reference, learn=not talking)
            before, after = float(np.dot(d, d)), float(np.dot(cancelled, cancelled))
            if after <= before:  # else the estimate adds more than it removes: keep the input
                out = cancelled
                self.frames_cancelled += 1
                if not talking and before > self.frame * 100.0**2:
                    self.erle = 0.9 * self.erle + 0.1 * 10 * np.log10(before / max(after, 1.0))
        if not talking:
            # What is left while only the agent is heard: a VAD hears speech in even a
            # faint residual, so suppress it; the caller talking over the agent is double
            # talk and passes.
            out = out * self.suppression
        return np.clip(np.round(out), -32768, 32767).astype(np.int16)

    def _double_talk(self, mic: Floats, at: float) -> bool:
        """Geigel: the microphone is louder than the loudest echo of recent playback could be."""
        recent = self.playback.read(at - self.max_delay, int(self.max_delay * self.rate)
                                    + self.frame)
        # The peak straight from the int16 samples: no float copy of the window per frame.
        loudest = float(max(int(recent.max()), -int(recent.min()))) if len(recent) else 0.0
        if float(np.abs(mic).max()) > max(self.double_talk * loudest, self.talk_floor):
            self._held = self.hangover
        elif self._held:
            self._held -= 1
        return self._held > 0
