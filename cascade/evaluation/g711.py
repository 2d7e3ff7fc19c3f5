"""G.711 mu-law in numpy, and the telephone line a scenario's caller may be on.

The encoder is the 14-bit algorithm of Sun's reference ``g711.c`` (the one
CPython's ``audioop.lin2ulaw`` uses): a 16-bit sample is shifted to 14 bits,
its magnitude clipped at 8159 and biased by 33, and coded as sign, 3-bit
segment and 4-bit mantissa, all bits inverted. The decoder is the matching
``ulaw2linear``. They agree with ``audioop`` on all 65,536 inputs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from cascade.audio import resample
from cascade.frames import PCM

TELEPHONE_RATE = 8000
TELEPHONE_BAND = (300.0, 3400.0)
_SEGMENT_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], np.int32)
_CLIP = 8159
_BIAS = 0x84


def ulaw_encode(pcm: PCM) -> npt.NDArray[np.uint8]:
    """PCM16 -> one mu-law byte per sample."""
    value = pcm.astype(np.int32) >> 2
    negative = value < 0
    magnitude = np.minimum(np.where(negative, -value, value), _CLIP) + (_BIAS >> 2)
    segment = np.searchsorted(_SEGMENT_END, magnitude, side="left")
    mantissa = (magnitude >> np.minimum(segment + 1, 15)) & 0x0F
    code = np.where(segment >= 8, 0x7F, (np.minimum(segment, 7) << 4) | mantissa)
    mask = np.where(negative, 0x7F, 0xFF)
    out: npt.NDArray[np.uint8] = (code ^ mask).astype(np.uint8)
    return out


def ulaw_decode(codes: npt.NDArray[np.uint8]) -> PCM:
    """mu-law bytes -> PCM16."""
    inverted = (~codes.astype(np.int32)) & 0xFF
    magnitude = (((inverted & 0x0F) << 3) + _BIAS) << ((inverted & 0x70) >> 4)
    out: PCM = np.where(inverted & 0x80, _BIAS - magnitude,
                        magnitude - _BIAS).astype(np.int16)
    return out


def band_limit(pcm: PCM, rate: int, low: float, high: float, low_order: int = 2,
               high_order: int = 8) -> PCM:
    """Keep ``low``..``high`` Hz: Butterworth-shaped magnitudes (-3 dB at the edges,
    ``6 * order`` dB per octave outside), zero phase, applied in the frequency domain."""
    if len(pcm) == 0:
        return pcm
    spectrum = np.fft.rfft(pcm.astype(np.float64))
    frequencies = np.maximum(np.fft.rfftfreq(len(pcm), 1.0 / rate), 1e-9)
    gain = 1.0 / np.sqrt((1.0 + (low / frequencies) ** (2 * low_order))
                         * (1.0 + (frequencies / high) ** (2 * high_order)))
    filtered = np.fft.irfft(spectrum * gain, n=len(pcm))
    out: PCM = np.clip(np.round(filtered), -32768, 32767).astype(np.int16)
    return out


def telephone(pcm: PCM, rate: int) -> PCM:
    """The caller as heard over a phone line: 8 kHz, 300-3400 Hz, mu-law, back to ``rate``.

    The band's skirts are gentle below 300 Hz (12 dB per octave, like an analogue
    line's coupling) and steep above 3400 Hz (the codec's anti-alias filter)."""
    narrow = band_limit(resample(pcm, rate, TELEPHONE_RATE), TELEPHONE_RATE, *TELEPHONE_BAND)
    line = ulaw_decode(ulaw_encode(narrow))
    out = resample(line, TELEPHONE_RATE, rate)
    if len(out) != len(pcm):  # soxr may be a sample off; the track keeps its length
        out = np.pad(out, (0, max(0, len(pcm) - len(out))))[: len(pcm)]
    return out
