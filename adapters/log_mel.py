"""Whisper-style log-mel spectrograms in numpy, the input of Whisper-family models.

``log_mel(audio)`` turns 16 kHz mono audio into an (80, frames) array the way
Whisper's feature extractor does: a centred STFT (reflect padding, periodic
Hann window of 400 samples, hop 160), the power spectrum projected on 80
Slaney-scale mel bands with Slaney area normalisation (0-8 kHz), ``log10``
floored at 1e-10, values below ``max - 8`` raised to it, then ``(x + 4) / 4``.
One frame per full hop: ``len(audio) // 160`` frames (the STFT's trailing
frame is dropped, as Whisper does). Smart Turn uses these features.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
FLOOR = 1e-10
DYNAMIC_RANGE = 8.0
"""Decades of log10 power kept below the loudest bin of the whole spectrogram."""

_LINEAR_HZ_PER_MEL = 200.0 / 3.0
_LOG_START_HZ = 1000.0
_LOG_START_MEL = _LOG_START_HZ / _LINEAR_HZ_PER_MEL
_MELS_PER_LOG_HZ = 27.0 / np.log(6.4)


def hz_to_mel(hz: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(hz, np.float64)
    log_part = _LOG_START_MEL + np.log(np.maximum(f, _LOG_START_HZ) / _LOG_START_HZ) \
        * _MELS_PER_LOG_HZ
    return np.where(f < _LOG_START_HZ, f / _LINEAR_HZ_PER_MEL, log_part)


def mel_to_hz(mel: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The inverse of ``hz_to_mel``."""
    m = np.asarray(mel, np.float64)
    log_part = _LOG_START_HZ * np.exp(np.maximum(m - _LOG_START_MEL, 0.0) / _MELS_PER_LOG_HZ)
    return np.where(m < _LOG_START_MEL, m * _LINEAR_HZ_PER_MEL, log_part)


@functools.lru_cache(maxsize=8)
def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = RATE
                   ) -> npt.NDArray[np.float64]:
    """Triangular mel filters, (n_mels, n_fft // 2 + 1), each of unit area in Hz.

    Band edges are equally spaced in Slaney mels from 0 Hz to ``rate / 2``.
    The array is cached and shared: callers must not modify it.
    """
    bins_hz = np.fft.rfftfreq(n_fft, 1.0 / rate)
    edges_hz = mel_to_hz(np.linspace(0.0, hz_to_mel(rate / 2), n_mels + 2))
    low, centre, high = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins_hz - low) / (centre - low)
    falling = (high - bins_hz) / (high - centre)
    filters = np.clip(np.minimum(rising, falling), 0.0, None)
    filters *= 2.0 / (high - low)  # equal area per band
    filters.setflags(write=False)
    return filters


@functools.lru_cache(maxsize=8)
def hann_window(n_fft: int = N_FFT) -> npt.NDArray[np.float64]:
    """The periodic Hann window of ``n_fft`` samples (as used for STFTs). Shared, read-only."""
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
    window.setflags(write=False)
    return window


def power_spectrogram(audio: npt.ArrayLike, n_fft: int = N_FFT, hop: int = HOP
                      ) -> npt.NDArray[np.float64]:
    """|STFT|^2 of centred, reflect-padded frames: (len // hop + 1, n_fft // 2 + 1)."""
    x = np.asarray(audio, np.float64)
    padded = np.pad(x, n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    spectrum = np.fft.rfft(frames * hann_window(n_fft), axis=-1)
    power: npt.NDArray[np.float64] = spectrum.real ** 2 + spectrum.imag ** 2
    return power


def log_mel(audio: npt.ArrayLike, n_mels: int = N_MELS) -> npt.NDArray[np.float32]:
    """Whisper's normalised log-mel features of 16 kHz mono audio: (n_mels, len // 160).

    ``audio`` is a 1-D float array (any scale: the dynamic-range clamp is
    relative to the loudest bin). At least one hop (160 samples) is needed.
    """
    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"log_mel expects 1-D mono audio, got an array of shape {x.shape}")
    if x.size < HOP:
        raise ValueError(f"log_mel needs at least {HOP} samples (one 10 ms hop), got {x.size}")
    # Frames-major keeps the product one contiguous BLAS call (a strided one is ~10x slower).
    mel = power_spectrogram(x)[:-1] @ mel_filterbank(n_mels).T
    logs: npt.NDArray[np.float64] = np.log10(np.maximum(mel, FLOOR))
    logs = np.maximum(logs, logs.max() - DYNAMIC_RANGE)
    scaled: npt.NDArray[np.float32] = ((logs.T + 4.0) / 4.0).astype(np.float32, order="C")
    return scaled
