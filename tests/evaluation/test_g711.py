"""G.711 mu-law: agreement with audioop, bounded round-trip error, the phone line."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

from cascade.evaluation.g711 import band_limit, telephone, ulaw_decode, ulaw_encode

EVERY_SAMPLE = np.arange(-32768, 32768, dtype=np.int16)


def test_round_trip_error_is_bounded_by_the_mu_law_step() -> None:
    decoded = ulaw_decode(ulaw_encode(EVERY_SAMPLE)).astype(np.int64)
    x = EVERY_SAMPLE.astype(np.int64)
    error = np.abs(decoded - x)
    inside = np.abs(x) <= 32124  # the largest decodable magnitude
    assert (error[inside] <= np.abs(x[inside]) / 32 + 8).all()  # ~3% of the level, 8 near 0
    assert error[~inside].max() <= 32768 - 32124
    assert np.array_equal(np.sign(decoded[np.abs(x) > 8]), np.sign(x[np.abs(x) > 8]))


def test_every_code_decodes_and_re_encodes_to_itself() -> None:
    codes = np.arange(256, dtype=np.uint8)
    again = ulaw_encode(ulaw_decode(codes))
    zero_codes = {0x7F, 0xFF}  # +0 and -0 both decode to 0, which encodes as 0xFF
    for code, back in zip(codes, again, strict=True):
        assert back == code or (code in zero_codes and back == 0xFF)


def test_matches_audioop_on_every_input() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            audioop = importlib.import_module("audioop")
        except ModuleNotFoundError:
            pytest.skip("audioop is gone from this Python")
    reference = np.frombuffer(audioop.lin2ulaw(EVERY_SAMPLE.tobytes(), 2), np.uint8)
    assert np.array_equal(ulaw_encode(EVERY_SAMPLE), reference)
    codes = np.arange(256, dtype=np.uint8)
    assert np.array_equal(ulaw_decode(codes),
                          np.frombuffer(audioop.ulaw2lin(codes.tobytes(), 2), np.int16))


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
