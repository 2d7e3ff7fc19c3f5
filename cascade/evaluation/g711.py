"""The telephone line a scenario's caller may be on: band limit, 8 kHz, G.711 mu-law.

The codec itself is ``cascade.telephony.g711`` (the phone backend's, checked against
the standard on every input); this module adds the band limit and the line a caller
track goes through.
"""

from __future__ import annotations

import numpy as np

from cascade.audio import resample
from cascade.evaluation.network import received
from cascade.evaluation.scenarios import Network
from cascade.frames import PCM
from cascade.telephony import g711

TELEPHONE_RATE = 8000
TELEPHONE_BAND = (300.0, 3400.0)


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


def telephone(pcm: PCM, rate: int, network: Network | None = None) -> PCM:
    """The caller as heard over a phone line: 8 kHz, 300-3400 Hz, mu-law, back to ``rate``
    (through ``network``'s packet loss and jitter when given: ``evaluation.network``).

    The band's skirts are gentle below 300 Hz (12 dB per octave, like an analogue
    line's coupling) and steep above 3400 Hz (the codec's anti-alias filter)."""
    narrow = band_limit(resample(pcm, rate, TELEPHONE_RATE), TELEPHONE_RATE, *TELEPHONE_BAND)
    encoded = g711.ulaw_encode(narrow)
    line = g711.ulaw_decode(encoded) if network is None else received(encoded, network)
    out = resample(line, TELEPHONE_RATE, rate)
    if len(out) != len(pcm):  # soxr may be a sample off; the track keeps its length
        out = np.pad(out, (0, max(0, len(pcm) - len(out))))[: len(pcm)]
    return out
