"""G.711 tables against an independent reference written from the standard's segment tables.

The reference below does not share a line with ``cascade.telephony.g711``: it
enumerates G.711's quantisation intervals (segment start, step size, 16 steps
per segment) and looks each input up in them, where the codec computes the
code with bit operations over numpy arrays. Every one of the 65,536 inputs and
256 codes is compared, plus values printed in the standard's tables, plus
CPython's ``audioop`` while it still exists (Python < 3.13).
"""

from __future__ import annotations

import bisect
import warnings

import numpy as np
import pytest

from cascade.telephony import g711

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def _intervals_ulaw() -> list[tuple[int, int, int]]:
    """(first, last, code index) over the 14-bit magnitude after adding the bias of 33."""
    out = []
    for segment in range(8):
        start, step = 32 << segment, 2 << segment  # segment s spans [2^(s+5), 2^(s+6))
        for quantum in range(16):
            first = start + quantum * step
            out.append((first, first + step - 1, segment * 16 + quantum))
    return out


def _intervals_alaw() -> list[tuple[int, int, int]]:
    """(first, last, code index) over the 12-bit magnitude of a 13-bit A-law input."""
    out = []
    for segment in range(8):
        start = 0 if segment == 0 else 16 << segment
        step = 2 if segment < 2 else 1 << segment
        for quantum in range(16):
            first = start + quantum * step
            out.append((first, first + step - 1, segment * 16 + quantum))
    return out


ULAW_INTERVALS = _intervals_ulaw()
ALAW_INTERVALS = _intervals_alaw()
_FIRSTS = {id(ULAW_INTERVALS): [i[0] for i in ULAW_INTERVALS],
           id(ALAW_INTERVALS): [i[0] for i in ALAW_INTERVALS]}


def _lookup(intervals: list[tuple[int, int, int]], magnitude: int) -> int:
    """The index of the interval holding ``magnitude`` (binary search on the firsts)."""
    position = bisect.bisect_right(_FIRSTS[id(intervals)], magnitude) - 1
    first, last, index = intervals[position]
    assert first <= magnitude <= last
    return index


def reference_ulaw_encode(sample: int) -> int:
    value = sample >> 2  # the 14 most significant bits
    negative = value < 0
    biased = min(abs(value), 8159) + 33
    biased = min(biased, 8191)  # the top of the last interval (clipping)
    index = _lookup(ULAW_INTERVALS, biased)
    code = index | (0x80 if negative else 0)  # sign bit set for negative values
    return code ^ 0xFF  # μ-law transmits every bit inverted


def reference_ulaw_decode(code: int) -> int:
    code ^= 0xFF
    first, last, _ = ULAW_INTERVALS[code & 0x7F]
    middle = (first + last + 1) // 2 - 33  # the interval's midpoint, unbiased
    value = middle * 4
    return -value if code & 0x80 else value


def reference_alaw_encode(sample: int) -> int:
    value = sample >> 3  # the 13 most significant bits
    magnitude = value if value >= 0 else -value - 1
    index = _lookup(ALAW_INTERVALS, magnitude)
    code = index | (0x80 if value >= 0 else 0)  # A-law: sign bit set for positive values
    return code ^ 0x55  # A-law inverts the even bits


def reference_alaw_decode(code: int) -> int:
    code ^= 0x55
    first, last, _ = ALAW_INTERVALS[code & 0x7F]
    value = (first + last + 1) * 4  # midpoint x 8
    return value if code & 0x80 else -value


def test_ulaw_encodes_every_sample_like_the_reference() -> None:
    expected = bytes(reference_ulaw_encode(int(s)) for s in ALL_SAMPLES)
    assert g711.ulaw_encode(ALL_SAMPLES) == expected


def test_alaw_encodes_every_sample_like_the_reference() -> None:
    expected = bytes(reference_alaw_encode(int(s)) for s in ALL_SAMPLES)
    assert g711.alaw_encode(ALL_SAMPLES) == expected


def test_every_code_decodes_like_the_reference() -> None:
    assert g711.ulaw_decode(ALL_CODES).tolist() == [reference_ulaw_decode(c) for c in ALL_CODES]
    assert g711.alaw_decode(ALL_CODES).tolist() == [reference_alaw_decode(c) for c in ALL_CODES]


def test_values_from_the_standard() -> None:
    ulaw = g711.ulaw_decode(bytes([0xFF, 0x7F, 0x80, 0x00, 0xF0, 0x70]))
    assert ulaw.tolist() == [0, 0, 32124, -32124, 120, -120]
    alaw = g711.alaw_decode(bytes([0xD5, 0x55, 0xAA, 0x2A, 0xD4, 0x54]))
    assert alaw.tolist() == [8, -8, 32256, -32256, 24, -24]
    edges = np.array([0, 32767, -32768, 1000, -1000], np.int16)
    assert g711.ulaw_encode(edges) == bytes([0xFF, 0x80, 0x00, 0xCE, 0x4E])
    assert g711.alaw_encode(edges) == bytes([0xD5, 0xAA, 0x2A, 0xFA, 0x7A])
    assert g711.SILENCE == {"PCMU": 0xFF, "PCMA": 0xD5}


def test_round_trip_error_is_a_few_percent_of_the_value() -> None:
    codec: g711.Codec
    for codec in ("PCMU", "PCMA"):
        decoded = g711.decode(g711.encode(ALL_SAMPLES, codec), codec).astype(np.int32)
        error = np.abs(decoded - ALL_SAMPLES.astype(np.int32))
        relative = error[np.abs(ALL_SAMPLES.astype(np.int32)) > 1024] / np.abs(
            ALL_SAMPLES.astype(np.int32))[np.abs(ALL_SAMPLES.astype(np.int32)) > 1024]
        assert relative.max() < 0.07  # logarithmic: about 3% of the value, at most ~6%


def test_codes_survive_decode_then_encode() -> None:
    cases: list[tuple[g711.Codec, int | None]] = [("PCMU", 0x7F), ("PCMA", None)]
    for codec, negative_zero in cases:
        again = g711.encode(g711.decode(ALL_CODES, codec), codec)
        differing = [c for c, a in zip(ALL_CODES, again, strict=True) if c != a]
        assert differing == ([] if negative_zero is None else [negative_zero])


def test_matches_cpython_audioop_when_present() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    raw = ALL_SAMPLES.tobytes()
    assert g711.ulaw_encode(ALL_SAMPLES) == audioop.lin2ulaw(raw, 2)
    assert g711.alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(raw, 2)
    assert g711.ulaw_decode(ALL_CODES).tobytes() == audioop.ulaw2lin(ALL_CODES, 2)
    assert g711.alaw_decode(ALL_CODES).tobytes() == audioop.alaw2lin(ALL_CODES, 2)


def test_non_contiguous_input_and_empty_payloads() -> None:
    stereo = np.arange(-200, 200, dtype=np.int16).reshape(-1, 2)
    assert g711.ulaw_encode(stereo[:, 0]) == g711.ulaw_encode(stereo[:, 0].copy())
    assert g711.ulaw_decode(b"").shape == (0,)
    assert g711.alaw_encode(np.zeros(0, np.int16)) == b""
