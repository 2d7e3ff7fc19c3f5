"""Streaming resampling between the 8 kHz phone line and the pipeline rate, 20 ms at a time.

A phone call moves 160-sample chunks both ways, and every chunk must come out
at once: a resampler that buffers (soxr's better qualities hold back tens of
milliseconds and release blocks) would add latency and make packets bursty.
When the pipeline rate is a whole multiple of 8 kHz (16, 24, 32, 48 kHz) a
windowed-sinc FIR does it sample-exact: each chunk of N samples in gives
exactly N*L or N/L out, with the filter state carried across chunks. Other rates
fall back to soxr's streaming resampler.

One chunk alone is one product of the buffer's overlapping windows (a strided
view, no copy) with the taps; the interpolator never stores its stuffed zeros
(polyphase). ``process_batch`` stacks many calls' chunks
of the same size into one matrix product (history + chunk) @ M, where M is the
filter's response to each input sample, built once per process: a server pays
a few numpy calls per tick instead of several per call, and reads M once
instead of the taps per call. The result equals chunk-by-chunk ``process`` up
to float rounding (at most 1 in 32768).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import soxr

from cascade.frames import PCM

LINE_RATE = 8000
TAPS_PER_PHASE = 24
MATRIX_LIMIT = 1024
"""Chunks longer than this (input samples) are filtered by convolution, not a matrix."""
BATCH_MIN = 4
"""Fewer same-sized chunks than this are filtered one by one (a matrix read for a few
chunks costs more than their convolutions)."""
_F32 = npt.NDArray[np.float32]


class Resampler(Protocol):
    def process(self, pcm: PCM) -> PCM: ...

    def reset(self) -> None: ...


def lowpass(factor: int, taps_per_phase: int = TAPS_PER_PHASE) -> _F32:
    """A Blackman-windowed sinc cutting at 0.9 x the lower rate's Nyquist (unity DC gain)."""
    length = taps_per_phase * factor + 1
    middle = (length - 1) / 2
    cutoff = 0.9 / factor  # in units of the higher rate's Nyquist
    n = np.arange(length) - middle
    taps = cutoff * np.sinc(cutoff * n) * np.blackman(length)
    normalised: _F32 = (taps / taps.sum()).astype(np.float32)
    return normalised


def _to_pcm(samples: _F32) -> PCM:
    """Float samples -> a new PCM16 array, rounded and clipped (``samples`` is clobbered)."""
    np.rint(samples, out=samples)
    np.minimum(samples, 32767.0, out=samples)  # the filter can overshoot full scale;
    np.maximum(samples, -32768.0, out=samples)  # two ufuncs cost less than np.clip
    return samples.astype(np.int16)


def _windows(buffer: _F32, offset: int, count: int, step: int, width: int) -> _F32:
    """``count`` overlapping windows of ``width`` samples, ``step`` apart, from ``offset``:
    a view of ``buffer`` (no copy), so it sees whatever the buffer holds next."""
    item = buffer.itemsize
    view: _F32 = np.ndarray((count, width), np.float32, buffer, offset * item,
                            (step * item, item))
    return view


class _FIRResampler:
    """Shared by both directions: the input buffer with its history, and the matrices.

    The buffer holds the last ``keep`` inputs, then the chunk being filtered; it is
    reused from chunk to chunk. One chunk is filtered as a product of the buffer's
    overlapping windows (a view, built once per chunk size) with the taps: one BLAS
    call, about twice as fast as ``np.convolve`` on a 20 ms chunk."""

    factor: int

    def __init__(self, factor: int, keep: int) -> None:
        self.factor = factor
        self._keep = keep
        self._buffer = np.zeros(keep, np.float32)
        self._plans: dict[int, tuple[_F32, _F32]] = {}
        """Per chunk size (and phase): the windows over the buffer and the output buffer."""

    @property
    def history(self) -> _F32:
        """The last inputs, which the next chunk's first outputs still depend on (a view:
        writing it sets the state)."""
        view: _F32 = self._buffer[len(self._buffer) - self._keep :]
        return view

    def _load(self, pcm: PCM) -> _F32:
        """History, then ``pcm``: the buffer to filter (the tail becomes the history)."""
        held = self._keep
        size = held + len(pcm)
        buffer = self._buffer
        if len(buffer) != size:  # another chunk size: a new buffer, same history
            resized = np.zeros(size, np.float32)
            resized[:held] = self.history
            self._buffer = buffer = resized
            self._plans.clear()  # their windows look at the old buffer
        else:
            buffer[:held] = buffer[size - held :]
        buffer[held:] = pcm
        return buffer

    def process(self, pcm: PCM) -> PCM:
        """Resample one chunk, carrying the filter state on to the next."""
        raise NotImplementedError

    def batch_key(self, n: int) -> tuple[int, ...] | None:
        """What an n-sample chunk's matrix depends on, or None: filter it alone."""
        raise NotImplementedError

    def matrix(self, n: int) -> _F32:
        """The (history + n) x outputs matrix that filters the next n-sample chunk."""
        raise NotImplementedError

    def batched(self, n: int) -> None:
        """An n-sample chunk went through ``matrix(n)``: advance what ``process`` would."""

    def reset(self) -> None:
        self._buffer[:] = 0.0


class Decimator(_FIRResampler):
    """Rate / factor: low-pass, then keep every ``factor``-th sample."""

    def __init__(self, factor: int) -> None:
        super().__init__(factor, keep=TAPS_PER_PHASE * factor)
        self._reversed = lowpass(factor)[::-1].copy()  # a window times these = one output
        self._phase = 0

    def process(self, pcm: PCM) -> PCM:
        n = len(pcm)
        if not n:
            return pcm
        buffer = self._load(pcm)
        plan = self._plans.get(self._phase)
        if plan is None:
            # the outputs kept: filtered samples phase, phase + factor, ... below n
            count = len(range(self._phase, n, self.factor))
            plan = (_windows(buffer, self._phase, count, self.factor, len(self._reversed)),
                    np.empty(count, np.float32))
            self._plans[self._phase] = plan
        windows, out = plan
        np.dot(windows, self._reversed, out=out)
        self._phase = (self._phase - n) % self.factor
        return _to_pcm(out)

    def batch_key(self, n: int) -> tuple[int, ...] | None:
        return (self.factor, n, self._phase) if 0 < n <= MATRIX_LIMIT else None

    def matrix(self, n: int) -> _F32:
        return _decimation_matrix(self.factor, n, self._phase)

    def batched(self, n: int) -> None:
        self._phase = (self._phase - n) % self.factor

    def reset(self) -> None:
        super().reset()
        self._phase = 0


class Interpolator(_FIRResampler):
    """Rate x factor: insert zeros, then low-pass (gain ``factor`` keeps the level).

    The zeros are never stored: output ``factor * i + p`` is window i of the inputs
    times phase p of the taps (polyphase), so each input is read once per phase."""

    def __init__(self, factor: int) -> None:
        super().__init__(factor, keep=TAPS_PER_PHASE)
        self._phases = _polyphase(factor)

    def process(self, pcm: PCM) -> PCM:
        n = len(pcm)
        if not n:
            return pcm
        buffer = self._load(pcm)
        plan = self._plans.get(0)
        if plan is None:
            plan = (_windows(buffer, 0, n, 1, self._keep + 1),
                    np.empty((n, self.factor), np.float32))
            self._plans[0] = plan
        windows, out = plan
        np.dot(windows, self._phases, out=out)
        return _to_pcm(out.reshape(-1))  # row i holds outputs factor*i .. factor*i+factor-1

    def batch_key(self, n: int) -> tuple[int, ...] | None:
        return (self.factor, n) if 0 < n <= MATRIX_LIMIT else None

    def matrix(self, n: int) -> _F32:
        return _interpolation_matrix(self.factor, n)


def _polyphase(factor: int) -> _F32:
    """(TAPS_PER_PHASE + 1) x factor: column p weighs a window of inputs into output phase p.

    Zero-stuffed, input j of a window sits at position ``factor * j``; output phase p
    of the filtered signal takes reversed tap ``factor * j - p`` from it."""
    reversed_taps = (lowpass(factor) * factor)[::-1]
    phases = np.zeros((TAPS_PER_PHASE + 1, factor), np.float32)
    for j in range(TAPS_PER_PHASE + 1):
        for p in range(factor):
            tap = factor * j - p
            if 0 <= tap < len(reversed_taps):
                phases[j, p] = reversed_taps[tap]
    return phases


@lru_cache(maxsize=16)  # a few chunk sizes in practice; odd packet sizes must not pile up
def _decimation_matrix(factor: int, n: int, phase: int) -> _F32:
    taps = lowpass(factor)
    keep = TAPS_PER_PHASE * factor
    starts = range(phase, n, factor)  # the filtered samples kept, as ``process`` keeps them
    matrix = np.zeros((keep + n, len(starts)), np.float32)
    for out, start in enumerate(starts):  # taps reversed over inputs start .. start+len-1
        matrix[start : start + len(taps), out] = taps[::-1]
    return matrix


@lru_cache(maxsize=16)
def _interpolation_matrix(factor: int, n: int) -> _F32:
    taps = lowpass(factor) * factor
    inputs = TAPS_PER_PHASE + n
    matrix = np.zeros((inputs, factor * n), np.float32)
    for row in range(inputs):  # each input sample's contribution, zero-stuffed then filtered
        stuffed = np.zeros(inputs * factor, np.float32)
        stuffed[row * factor] = 1.0
        matrix[row] = np.convolve(stuffed, taps, mode="valid")
    return matrix


def process_batch(jobs: Sequence[tuple[Resampler, PCM]]) -> list[PCM]:
    """``[r.process(pcm) for r, pcm in jobs]``, with same-shaped FIR work in one product.

    Each resampler may appear once: its chunks depend on each other in order.
    """
    if len({id(resampler) for resampler, _ in jobs}) < len(jobs):
        raise ValueError("process_batch: a resampler appears twice; its chunks depend "
                         "on each other, so batch them in separate calls, in order")
    out: list[PCM] = []
    groups: dict[tuple[Any, ...], list[tuple[int, _FIRResampler, PCM]]] = {}
    for index, (resampler, pcm) in enumerate(jobs):
        key = resampler.batch_key(len(pcm)) if isinstance(resampler, _FIRResampler) else None
        if key is None or not isinstance(resampler, _FIRResampler):
            out.append(resampler.process(pcm))
        else:
            groups.setdefault((type(resampler), *key), []).append((index, resampler, pcm))
            out.append(pcm)  # replaced below
    for members in groups.values():
        if len(members) < BATCH_MIN:
            for index, fir, chunk in members:
                out[index] = fir.process(chunk)
            continue
        first = members[0][1]
        n = len(members[0][2])
        keep = len(first.history)
        signals = np.empty((len(members), keep + n), np.float32)
        for row, (_, fir, chunk) in enumerate(members):
            signals[row, :keep] = fir.history
            signals[row, keep:] = chunk
        block = _to_pcm(signals @ first.matrix(n))
        for row, (index, fir, _) in enumerate(members):  # state moves only once all is done
            fir.history[:] = signals[row, n:]
            fir.batched(n)
            out[index] = block[row].copy()  # a frame must not pin the whole block
    return out


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
