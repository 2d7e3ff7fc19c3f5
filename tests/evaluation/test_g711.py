"""The phone line a caller track goes through (the codec is tests/telephony/test_g711.py)."""

from __future__ import annotations

import numpy as np

from cascade.evaluation.g711 import band_limit, telephone


def tone(frequency: float, seconds: float = 1.0, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * frequency * t) * 8000).astype(np.int16)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def test_the_phone_line_keeps_the_voice_band_and_drops_the_rest() -> None:
    expected = {1000.0: (0.95, 1.05), 300.0: (0.65, 0.76), 3400.0: (0.65, 0.76),
                100.0: (0.0, 0.15), 5000.0: (0.0, 0.02)}  # -3 dB at the band's edges
    for frequency, (low, high) in expected.items():
        line = telephone(tone(frequency), 16000)
        assert len(line) == 16000
        ratio = rms(line[2000:-2000]) / rms(tone(frequency)[2000:-2000])
        assert low < ratio < high, (frequency, ratio)


def test_band_limit_of_nothing_is_nothing() -> None:
    assert len(band_limit(np.zeros(0, np.int16), 8000, 300, 3400)) == 0
