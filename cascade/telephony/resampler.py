"""Streaming resampling between the 8 kHz phone line and the pipeline rate, 20 ms at a time.

A phone call moves 160-sample chunks both ways, and every chunk must come out
at once: a resampler that buffers (soxr's better qualities hold back tens of
milliseconds and release blocks) would add latency and make packets bursty.
When the pipeline rate is a whole multiple of 8 kHz (16, 24, 32, 48 kHz) a
windowed-sinc FIR does it sample-exact: each chunk of N samples in gives
exactly N*L or N/L out, with the filter state carried across chunks. Other rates
fall back to soxr's streaming resampler.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt
import soxr

from cascade.frames import PCM

LINE_RATE = 8000
_F32 = npt.NDArray[np.float32]


class Resampler(Protocol):
    def process(self, pcm: PCM) -> PCM: ...

    def reset(self) -> None: ...


def lowpass(factor: int, taps_per_phase: int = 24) -> _F32:
    """A Blackman-windowed sinc cutting at 0.9 x the lower rate's Nyquist (unity DC gain)."""
    length = taps_per_phase * factor + 1
    middle = (length - 1) / 2
    cutoff = 0.9 / factor  # in units of the higher rate's Nyquist
    n = np.arange(length) - middle
    taps = cutoff * np.sinc(cutoff * n) * np.blackman(length)
    normalised: _F32 = (taps / taps.sum()).astype(np.float32)
    return normalised


def _to_pcm(samples: _F32) -> PCM:
    np.rint(samples, out=samples)
    np.minimum(samples, 32767.0, out=samples)  # the filter can overshoot full scale;
    np.maximum(samples, -32768.0, out=samples)  # two ufuncs cost less than np.clip
    return samples.astype(np.int16)


class _FIR:
    """A streaming FIR: keeps the last ``len(taps) - 1`` inputs between chunks."""

    def __init__(self, taps: _F32) -> None:
        self.taps = taps
        self._keep = len(taps) - 1
        self._signal = np.zeros(self._keep, np.float32)

    def filter(self, samples: PCM | _F32) -> _F32:
        """Filtered output, one sample per input sample."""
        keep = self._keep
        signal = self._signal
        if len(signal) != keep + len(samples):
            signal = np.zeros(keep + len(samples), np.float32)
            signal[:keep] = self._signal[-keep:] if keep else signal[:0]
            self._signal = signal
        else:
            signal[:keep] = signal[len(samples) :]
        signal[keep:] = samples
        filtered: _F32 = np.convolve(signal, self.taps, mode="valid")
        return filtered

    def reset(self) -> None:
        self._signal[:] = 0.0


class Decimator:
    """Rate / factor: low-pass, then keep every ``factor``-th sample."""

    def __init__(self, factor: int) -> None:
        self.factor = factor
        self._fir = _FIR(lowpass(factor))
        self._phase = 0

    def process(self, pcm: PCM) -> PCM:
        if not len(pcm):
            return pcm
        kept = self._fir.filter(pcm)[self._phase :: self.factor]
        self._phase = (self._phase - len(pcm)) % self.factor
        return _to_pcm(np.ascontiguousarray(kept))

    def reset(self) -> None:
        self._fir.reset()
        self._phase = 0


class Interpolator:
    """Rate x factor: insert zeros, then low-pass (gain ``factor`` keeps the level)."""

    def __init__(self, factor: int) -> None:
        self.factor = factor
        self._fir = _FIR(lowpass(factor) * factor)

    def process(self, pcm: PCM) -> PCM:
        if not len(pcm):
            return pcm
        stuffed = np.zeros(len(pcm) * self.factor, np.float32)
        stuffed[:: self.factor] = pcm
        return _to_pcm(self._fir.filter(stuffed))

    def reset(self) -> None:
        self._fir.reset()


class Passthrough:
    def process(self, pcm: PCM) -> PCM:
        return pcm

    def reset(self) -> None:
        pass


class SoxrStream:
    """Any pair of rates, through soxr (may hold samples back between chunks)."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.rates = (rate_in, rate_out)
        self._stream = soxr.ResampleStream(rate_in, rate_out, 1, dtype="int16")

    def process(self, pcm: PCM) -> PCM:
        out: PCM = self._stream.resample_chunk(pcm)
        return out

    def reset(self) -> None:
        self._stream = soxr.ResampleStream(*self.rates, 1, dtype="int16")


def resampler(rate_in: int, rate_out: int) -> Resampler:
    """The cheapest exact streaming resampler for this pair of rates."""
    if rate_in == rate_out:
        return Passthrough()
    if rate_in % rate_out == 0:
        return Decimator(rate_in // rate_out)
    if rate_out % rate_in == 0:
        return Interpolator(rate_out // rate_in)
    return SoxrStream(rate_in, rate_out)
