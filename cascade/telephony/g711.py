"""G.711 μ-law (PCMU) and A-law (PCMA): 8-bit telephone codes <-> 16-bit PCM, with numpy.

Both directions are table look-ups built once at import: 65,536 entries to
encode (indexed by the sample's bit pattern) and 256 to decode. The tables
follow G.711's segment rule on the code's native precision, as the classic
reference coder (and CPython's ``audioop``) does:

* μ-law quantises the top 14 bits: magnitude clipped to 8159, a bias of 33
  added, then 8 segments of 16 steps whose step doubles (2, 4, ... 256).
* A-law quantises the top 13 bits: negatives as one's complement, segments
  0 and 1 of step 2, then a doubling step; even bits are inverted (``0x55``).

Decoding returns the middle of each code's interval, scaled back to 16 bits.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from cascade.frames import PCM

Codec = Literal["PCMU", "PCMA"]
SILENCE: dict[str, int] = {"PCMU": 0xFF, "PCMA": 0xD5}
"""The code for a zero sample: what a silent packet is filled with."""

_U8 = npt.NDArray[np.uint8]


def _ulaw_encode_table() -> _U8:
    samples = np.arange(-32768, 32768, dtype=np.int32)
    value = samples >> 2  # 14-bit, rounding toward -inf like an arithmetic shift
    negative = value < 0
    magnitude = np.minimum(np.minimum(np.where(negative, -value, value), 8159) + 33, 8191)
    segment = np.clip(np.floor(np.log2(magnitude)).astype(np.int32) - 5, 0, 7)
    step = (magnitude >> (segment + 1)) & 0x0F
    code = (segment << 4) | step
    code = np.where(negative, code ^ 0x7F, code ^ 0xFF)
    return _by_bit_pattern(samples, code)


def _alaw_encode_table() -> _U8:
    samples = np.arange(-32768, 32768, dtype=np.int32)
    value = samples >> 3  # 13-bit
    negative = value < 0
    magnitude = np.where(negative, -value - 1, value)
    segment = np.clip(np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int32) - 4, 0, 7)
    step = np.where(segment < 2, magnitude >> 1, magnitude >> segment) & 0x0F
    code = (segment << 4) | step
    code = np.where(negative, code ^ 0x55, code ^ 0xD5)
    return _by_bit_pattern(samples, code)


def _by_bit_pattern(samples: npt.NDArray[np.int32], code: npt.NDArray[np.int32]) -> _U8:
    """Reorder so that ``table[pcm.view(uint16)]`` encodes ``pcm``."""
    table = np.zeros(65536, np.uint8)
    table[samples.astype(np.int16).view(np.uint16)] = code.astype(np.uint8)
    return table


def _ulaw_decode_table() -> PCM:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    segment = (code >> 4) & 0x07
    level = (((code & 0x0F) << 3) + 0x84) << segment
    return np.where(code & 0x80, 0x84 - level, level - 0x84).astype(np.int16)


def _alaw_decode_table() -> PCM:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    segment = (code >> 4) & 0x07
    step = (code & 0x0F) << 4
    level = np.where(segment == 0, step + 8, (step + 0x108) << np.maximum(segment - 1, 0))
    return np.where(code & 0x80, level, -level).astype(np.int16)


ULAW_ENCODE = _ulaw_encode_table()
ALAW_ENCODE = _alaw_encode_table()
ULAW_DECODE = _ulaw_decode_table()
ALAW_DECODE = _alaw_decode_table()
_ENCODE = {"PCMU": ULAW_ENCODE, "PCMA": ALAW_ENCODE}
_DECODE = {"PCMU": ULAW_DECODE, "PCMA": ALAW_DECODE}


def encode(pcm: PCM, codec: Codec = "PCMU") -> bytes:
    """PCM16 samples (already at 8 kHz) -> G.711 bytes, one per sample."""
    pattern = np.ascontiguousarray(pcm, dtype=np.int16).view(np.uint16)
    return _ENCODE[codec].take(pattern).tobytes()  # take: faster than fancy indexing


def decode(payload: bytes, codec: Codec = "PCMU") -> PCM:
    """G.711 bytes -> PCM16 samples at 8 kHz."""
    decoded: PCM = _DECODE[codec].take(np.frombuffer(payload, np.uint8))
    return decoded


def ulaw_encode(pcm: PCM) -> bytes:
    return encode(pcm, "PCMU")


def ulaw_decode(payload: bytes) -> PCM:
    return decode(payload, "PCMU")


def alaw_encode(pcm: PCM) -> bytes:
    return encode(pcm, "PCMA")


def alaw_decode(payload: bytes) -> PCM:
    return decode(payload, "PCMA")
