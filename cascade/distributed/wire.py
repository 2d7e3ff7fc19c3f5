"""The wire format of remote stages: one MQTT payload = one ``Envelope``.

Layout (all integers big-endian)::

    byte 0      format version (1)
    bytes 1..4  header length H
    bytes 5..   H bytes of msgpack header (a map with short keys, below)
    rest        raw body: the frame's PCM16 little-endian samples, or nothing

Header keys: ``k`` kind, ``c`` conversation, ``s`` stage, ``n`` sequence number,
``o`` output key ``[cause, index]``, ``e`` epoch, ``tc`` trace context
``[turn, time]``, ``m`` kind-specific metadata, ``f`` frame type, ``d`` frame
fields (every field but the PCM), ``sp`` a span. Audio therefore costs its raw
bytes plus ~80 bytes of header. Every frame type in ``cascade.frames`` round-trips
exactly; anything else raises ``WireError`` saying what was wrong.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack  # type: ignore[import-untyped]  # ships no type hints
import numpy as np

from cascade import frames as frame_types
from cascade.errors import CascadeError
from cascade.frames import Frame, Word
from cascade.tracing import Span

VERSION = 1
_PREFIX = struct.Struct(">BI")
MAX_HEADER = 1 << 20

KINDS = frozenset({
    "open",       # caller -> any worker (shared topic): start serving a conversation
    "opened",     # worker -> caller: this worker serves it now
    "frame",      # either way: one frame (input stream, control stream or output stream)
    "span",       # worker -> caller: a span the remote stage recorded
    "finished",   # worker -> caller: the stage finished after EndOfStream
    "sync",       # caller -> worker: what I have; resend what I missed
    "synced",     # worker -> caller: what I have; resend what I missed
    "unknown",    # worker -> caller: no such conversation here (reopen it)
    "close",      # caller -> worker: the conversation is over
    "heartbeat",  # worker -> everyone: alive, with its connection generation
    "offline",    # worker or caller (last will): gone
})


class WireError(CascadeError):
    """A payload is not a valid Cascade wire message."""


@dataclass(slots=True)
class Envelope:
    """One message between a caller's ``RemoteStage`` and a worker."""

    kind: str
    conversation: str = ""
    stage: str = ""
    seq: int = 0
    """Position in its stream (input, control or output), from 1; 0 when unsequenced."""
    key: tuple[int, int] = (0, 0)
    """Outputs: (input sequence number being handled, index of the output since)."""
    epoch: int = 0
    turn: int = 0
    """Trace context: the sender's current turn."""
    time: float = 0.0
    """Trace context: the sender's pipeline-clock time when it sent this."""
    meta: dict[str, Any] = field(default_factory=dict)
    frame: Frame | None = None
    span: Span | None = None


# --- frame fields ------------------------------------------------------------

Check = Callable[[Any], Any]


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return int(value)


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"expected true/false, got {type(value).__name__}")
    return bool(value)


def _words_out(value: Any) -> list[list[Any]]:
    return [[w.text, float(w.start), float(w.end), float(w.probability)] for w in value]


def _words_in(value: Any) -> tuple[Word, ...]:
    if not isinstance(value, list | tuple):
        raise TypeError("expected a list of words")
    words = []
    for item in value:
        if not isinstance(item, list | tuple) or len(item) != 4:
            raise TypeError("a word must be [text, start, end, probability]")
        words.append(Word(_str(item[0]), _float(item[1]), _float(item[2]), _float(item[3])))
    return tuple(words)


def _mapping(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise TypeError("expected a mapping of text to text")
    return dict(value)


# annotation (as written in cascade.frames) -> (encode, decode)
_FIELD_CODECS: dict[str, tuple[Check, Check]] = {
    "str": (_str, _str),
    "int": (_int, _int),
    "float": (_float, _float),
    "bool": (_bool, _bool),
    "tuple[Word, ...]": (_words_out, _words_in),
    "dict[str, str]": (_mapping, _mapping),
}
PCM_FIELD = "PCM"


@dataclass(frozen=True, slots=True)
class _FrameSpec:
    cls: type[Frame]
    fields: tuple[tuple[str, Check, Check], ...]
    pcm: str | None


_SPECS: dict[str, _FrameSpec] = {}


def register_frame(cls: type[Frame]) -> None:
    """Let frames of ``cls`` travel (every ``cascade.frames`` type is registered already)."""
    fields: list[tuple[str, Check, Check]] = []
    pcm: str | None = None
    for f in dataclasses.fields(cls):
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        if annotation == PCM_FIELD:
            if pcm is not None:
                raise WireError(f"{cls.__name__}: only one PCM field can travel per frame")
            pcm = f.name
            continue
        codec = _FIELD_CODECS.get(annotation)
        if codec is None:
            raise WireError(f"{cls.__name__}.{f.name}: fields of type {annotation} cannot "
                            f"travel; use one of {', '.join(_FIELD_CODECS)} or PCM")
        fields.append((f.name, *codec))
    _SPECS[cls.__name__] = _FrameSpec(cls, tuple(fields), pcm)


for _cls in vars(frame_types).values():
    if isinstance(_cls, type) and issubclass(_cls, Frame):
        register_frame(_cls)


# --- encoding ----------------------------------------------------------------


def encode(env: Envelope) -> bytes:
    """The payload of one MQTT message."""
    if env.kind not in KINDS:
        raise WireError(f"cannot encode a message of kind '{env.kind}'")
    header: dict[str, Any] = {"k": env.kind, "c": env.conversation, "s": env.stage}
    if env.seq:
        header["n"] = env.seq
    if env.key != (0, 0):
        header["o"] = list(env.key)
    if env.epoch:
        header["e"] = env.epoch
    header["tc"] = [env.turn, float(env.time)]
    if env.meta:
        header["m"] = env.meta
    body = b""
    if env.frame is not None:
        name = type(env.frame).__name__
        spec = _SPECS.get(name)
        if spec is None or spec.cls is not type(env.frame):
            raise WireError(f"frame type {name} cannot travel: register it with "
                            "cascade.distributed.wire.register_frame")
        header["f"] = name
        try:
            header["d"] = {n: enc(getattr(env.frame, n)) for n, enc, _ in spec.fields}
        except TypeError as exc:
            raise WireError(f"{name}: a field has the wrong type ({exc})") from None
        if spec.pcm is not None:
            pcm = np.asarray(getattr(env.frame, spec.pcm))
            if pcm.dtype != np.int16 or pcm.ndim != 1:
                raise WireError(f"{name}.{spec.pcm}: PCM must be 1-D int16, got "
                                f"{pcm.ndim}-D {pcm.dtype}")
            body = pcm.astype("<i2", copy=False).tobytes()
    if env.span is not None:
        header["sp"] = dataclasses.asdict(env.span)
    packed: bytes = msgpack.packb(header, use_bin_type=True)
    return _PREFIX.pack(VERSION, len(packed)) + packed + body


def decode(payload: bytes) -> Envelope:
    """Parse one payload; ``WireError`` names what is wrong with a bad one."""
    if len(payload) < _PREFIX.size:
        raise WireError(f"payload of {len(payload)} bytes is too short for a Cascade message")
    version, size = _PREFIX.unpack_from(payload)
    if version != VERSION:
        raise WireError(f"wire format version {version} is not supported (this Cascade "
                        f"speaks version {VERSION}); run the same Cascade on both ends")
    if size > MAX_HEADER or _PREFIX.size + size > len(payload):
        raise WireError(f"header length {size} does not fit the {len(payload)}-byte payload")
    try:
        header = msgpack.unpackb(payload[_PREFIX.size:_PREFIX.size + size], raw=False,
                                 strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise WireError(f"header is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise WireError("header must be a msgpack map")
    body = payload[_PREFIX.size + size:]
    try:
        return _envelope(header, body)
    except (TypeError, ValueError, KeyError) as exc:
        raise WireError(f"bad '{header.get('k', '?')}' message: {exc}") from None


def _envelope(header: dict[str, Any], body: bytes) -> Envelope:
    kind = _str(header.get("k"))
    if kind not in KINDS:
        raise ValueError(f"unknown kind '{kind}'")
    trace = header.get("tc", [0, 0.0])
    if not isinstance(trace, list) or len(trace) != 2:
        raise ValueError("trace context must be [turn, time]")
    key = header.get("o", [0, 0])
    if not isinstance(key, list) or len(key) != 2:
        raise ValueError("output key must be [cause, index]")
    meta = header.get("m", {})
    if not isinstance(meta, dict):
        raise ValueError("metadata must be a map")
    env = Envelope(
        kind=kind, conversation=_str(header.get("c", "")), stage=_str(header.get("s", "")),
        seq=_int(header.get("n", 0)), key=(_int(key[0]), _int(key[1])),
        epoch=_int(header.get("e", 0)), turn=_int(trace[0]), time=_float(trace[1]), meta=meta,
    )
    if "f" in header:
        env.frame = _frame(_str(header["f"]), header.get("d"), body)
    elif body:
        raise ValueError(f"{len(body)} bytes of body but no frame")
    if "sp" in header:
        span = header["sp"]
        if not isinstance(span, dict):
            raise ValueError("span must be a map")
        env.span = Span.from_dict(span)
    return env


def _frame(name: str, data: Any, body: bytes) -> Frame:
    spec = _SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown frame type '{name}'")
    if not isinstance(data, dict):
        raise ValueError(f"{name}: frame fields must be a map")
    expected = {n for n, _, _ in spec.fields}
    if set(data) != expected:
        missing = ", ".join(sorted(expected - set(data))) or "none"
        extra = ", ".join(sorted(set(data) - expected)) or "none"
        raise ValueError(f"{name}: fields do not match (missing: {missing}; unexpected: {extra})")
    values: dict[str, Any] = {}
    for field_name, _, dec in spec.fields:
        try:
            values[field_name] = dec(data[field_name])
        except TypeError as exc:
            raise ValueError(f"{name}.{field_name}: {exc}") from None
    if spec.pcm is not None:
        if len(body) % 2:
            raise ValueError(f"{name}: PCM body has an odd number of bytes ({len(body)})")
        values[spec.pcm] = np.frombuffer(body, dtype="<i2").astype(np.int16)
    elif body:
        raise ValueError(f"{name}: carries no audio but {len(body)} bytes of body came")
    return spec.cls(**values)
