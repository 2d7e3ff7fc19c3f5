"""SDP offer/answer (RFC 3264) for one audio stream: PCMU or PCMA, plus telephone-event.

``parse_offer`` reads the first audio ``m=`` line of an offer (address, port,
payload types, ``rtpmap``); ``negotiate`` picks the codec we both speak (our
preference first) and the offer's telephone-event payload type; ``answer``
writes our side. An offer we cannot serve is a ``SdpError`` (488 to the caller).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from cascade.errors import CascadeError
from cascade.telephony import is_number
from cascade.telephony.g711 import Codec

STATIC = {0: ("PCMU", 8000), 8: ("PCMA", 8000), 13: ("CN", 8000)}
"""Static RTP payload types (RFC 3551) an offer may use without an rtpmap."""
SUPPORTED: tuple[Codec, ...] = ("PCMU", "PCMA")


class SdpError(CascadeError):
    """An SDP offer we cannot answer; the message says why."""


@dataclass(slots=True)
class AudioOffer:
    """The caller's audio stream as offered."""

    address: str
    port: int
    payload_types: list[int]
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)
    ptime: int | None = None
    direction: str = "sendrecv"


@dataclass(slots=True, frozen=True)
class Negotiated:
    """What both sides will send: the codec's payload type, and DTMF's if any."""

    codec: Codec
    payload_type: int
    dtmf_payload_type: int | None
    remote: tuple[str, int]
    ptime: int = 20


def parse_offer(body: bytes | str) -> AudioOffer:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    session_address = ""
    offer: AudioOffer | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "m":
            if offer is not None:
                break  # only the first audio stream is used
            parts = value.split()
            if len(parts) >= 4 and parts[0] == "audio" and "RTP/AVP" in parts[2]:
                offer = _media(parts, session_address)
        elif kind == "c":
            address = _connection(value)
            if offer is None:
                session_address = address
            else:
                offer.address = address
        elif kind == "a" and offer is not None:
            _attribute(offer, value)
    if offer is None:
        raise SdpError("the offer has no RTP/AVP audio stream")
    if not offer.address:
        raise SdpError("the offer has no connection address (c=)")
    return offer


def _media(parts: list[str], address: str) -> AudioOffer:
    port = parts[1].split("/", 1)[0]
    if not is_number(port) or not 0 <= int(port) < 65536:
        raise SdpError(f"audio port {parts[1]!r} is not a port number")
    types = [int(p) for p in parts[3:] if is_number(p) and int(p) < 128]
    return AudioOffer(address, int(port), types)


def _connection(value: str) -> str:
    parts = value.split()
    if len(parts) < 3 or parts[0] != "IN":
        raise SdpError(f"connection line 'c={value}' is not 'IN IP4|IP6 ADDRESS'")
    address = parts[2].split("/", 1)[0]
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise SdpError(f"connection address {address!r} is not an IP address") from None
    return address


def _attribute(offer: AudioOffer, value: str) -> None:
    name, _, rest = value.partition(":")
    if name == "rtpmap":
        number, _, encoding = rest.partition(" ")
        codec, _, rate = encoding.partition("/")
        if is_number(number) and is_number(rate.split("/")[0]):
            offer.rtpmap[int(number)] = (codec.strip(), int(rate.split("/")[0]))
    elif name == "ptime" and is_number(rest.strip()):
        offer.ptime = int(rest.strip())
    elif name in ("sendrecv", "sendonly", "recvonly", "inactive"):
        offer.direction = name


def encoding_of(offer: AudioOffer, payload_type: int) -> tuple[str, int] | None:
    found = offer.rtpmap.get(payload_type) or STATIC.get(payload_type)
    return None if found is None else (found[0].upper(), found[1])


def negotiate(offer: AudioOffer, codecs: tuple[Codec, ...] = SUPPORTED) -> Negotiated:
    """Our first codec the offer has, and its telephone-event type (``SdpError`` if none)."""
    if offer.port == 0:
        raise SdpError("the offer's audio stream is disabled (port 0)")
    offered = {encoding_of(offer, pt): pt for pt in reversed(offer.payload_types)}
    chosen = next((c for c in codecs if (c, 8000) in offered), None)
    if chosen is None:
        names = ", ".join(f"{e[0]}/{e[1]}" for e in offered if e) or "none"
        raise SdpError(f"no common codec: offered {names}; this server speaks "
                       f"{', '.join(codecs)} at 8000 Hz")
    dtmf = offered.get(("TELEPHONE-EVENT", 8000))
    return Negotiated(chosen, offered[(chosen, 8000)], dtmf, (offer.address, offer.port),
                      offer.ptime or 20)


def answer(negotiated: Negotiated, address: str, port: int, session: int) -> bytes:
    """Our SDP answer: one audio stream at ``address``:``port`` with the chosen codec."""
    family = "IP6" if ":" in address else "IP4"
    types = [negotiated.payload_type]
    lines = [
        "v=0",
        f"o=cascade {session} {session} IN {family} {address}",
        "s=cascade",
        f"c=IN {family} {address}",
        "t=0 0",
    ]
    rtpmap = [f"a=rtpmap:{negotiated.payload_type} {negotiated.codec}/8000"]
    if negotiated.dtmf_payload_type is not None:
        types.append(negotiated.dtmf_payload_type)
        rtpmap += [f"a=rtpmap:{negotiated.dtmf_payload_type} telephone-event/8000",
                   f"a=fmtp:{negotiated.dtmf_payload_type} 0-16"]
    lines += [f"m=audio {port} RTP/AVP {' '.join(map(str, types))}", *rtpmap, "a=ptime:20",
              "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
