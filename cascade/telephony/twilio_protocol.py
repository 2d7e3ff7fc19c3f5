"""Twilio Media Streams messages: parse what Twilio sends, build what we send back.

Twilio speaks JSON text frames on the websocket. In: ``connected``, ``start``
(stream and call ids, media format, custom parameters), ``media`` (base64
μ-law, 8 kHz, normally 20 ms, with a running ``chunk`` number), ``dtmf``,
``mark`` (a mark we sent has played, or was dropped by ``clear``) and ``stop``.
Out: ``media``, ``mark`` and ``clear``. Parsing never trusts the input: every
problem is a ``ProtocolError`` saying what was wrong, and the call goes on.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cascade.errors import CascadeError
from cascade.telephony import is_number

MULAW = "audio/x-mulaw"


class ProtocolError(CascadeError):
    """A websocket message that is not valid Media Streams input."""


@dataclass(slots=True)
class Connected:
    protocol: str


@dataclass(slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    encoding: str
    sample_rate: int
    channels: int
    custom: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Media:
    payload: bytes
    chunk: int | None
    timestamp_ms: int | None
    track: str


@dataclass(slots=True)
class Mark:
    name: str


@dataclass(slots=True)
class Dtmf:
    digit: str


@dataclass(slots=True)
class Stop:
    call_sid: str


@dataclass(slots=True)
class Unknown:
    event: str


Message = Connected | Start | Media | Mark | Dtmf | Stop | Unknown
DTMF_DIGITS = frozenset("0123456789*#ABCD")


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    section = data.get(name)
    if not isinstance(section, dict):
        raise ProtocolError(f"'{data.get('event')}' message has no '{name}' object")
    return section


def _text(section: dict[str, Any], key: str, default: str | None = None) -> str:
    value = section.get(key, default)
    if not isinstance(value, str):
        raise ProtocolError(f"field '{key}' must be a string, got {type(value).__name__}")
    return value


def _number(value: Any) -> int | None:
    """Twilio sends counters as strings of digits; anything else counts as absent."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and is_number(value) and len(value) <= 18:
        return int(value)
    return None


def parse(text: str | bytes) -> Message:
    """One inbound message; ``ProtocolError`` for anything malformed."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("a message must be a JSON object")
    event = data.get("event")
    if not isinstance(event, str):
        raise ProtocolError("message has no 'event' string")
    if event == "media":
        media = _section(data, "media")
        try:
            payload = base64.b64decode(_text(media, "payload"), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(f"media payload is not base64: {exc}") from None
        return Media(payload, _number(media.get("chunk")), _number(media.get("timestamp")),
                      str(media.get("track", "inbound")))
    if event == "start":
        start = _section(data, "start")
        media_format = start.get("mediaFormat") or {}
        if not isinstance(media_format, dict):
            raise ProtocolError("start.mediaFormat must be an object")
        custom = start.get("customParameters") or {}
        if not isinstance(custom, dict):
            raise ProtocolError("start.customParameters must be an object")
        return Start(
            stream_sid=_text(start, "streamSid", _text(data, "streamSid", "")),
            call_sid=_text(start, "callSid", ""),
            account_sid=_text(start, "accountSid", ""),
            encoding=str(media_format.get("encoding", MULAW)),
            sample_rate=_number(media_format.get("sampleRate")) or 0,
            channels=_number(media_format.get("channels")) or 0,
            custom={str(k): str(v) for k, v in custom.items()},
        )
    if event == "mark":
        return Mark(_text(_section(data, "mark"), "name"))
    if event == "dtmf":
        digit = _text(_section(data, "dtmf"), "digit")
        if digit not in DTMF_DIGITS:
            raise ProtocolError(f"dtmf digit {digit!r} is not one of 0-9 * # A-D")
        return Dtmf(digit)
    if event == "stop":
        stop = data.get("stop")
        return Stop(str(stop.get("callSid", "")) if isinstance(stop, dict) else "")
    if event == "connected":
        return Connected(str(data.get("protocol", "")))
    return Unknown(event)


def media_messages(stream_sid: str) -> Callable[[bytes], str]:
    """Builds one stream's ``media`` messages; the part naming the stream is encoded once."""
    head = '{"event":"media","streamSid":' + json.dumps(stream_sid) + ',"media":{"payload":"'

    def message(payload: bytes) -> str:
        return head + base64.b64encode(payload).decode("ascii") + '"}}'

    return message


def mark_message(stream_sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> str:
    return json.dumps({"event": "clear", "streamSid": stream_sid})
