"""RTP (RFC 3550) packets, DTMF telephone-events (RFC 4733), and one call's media socket.

``RtpPacket.parse`` checks version, padding, CSRCs and the header extension
and raises ``ValueError`` on anything malformed. ``RtpSender`` numbers and
stamps outgoing 20 ms packets. ``DtmfReceiver`` turns the several packets RFC
4733 sends per key press (updates, then three end packets, all with the
event's timestamp) into one digit. ``MediaSocket`` is the asyncio datagram
endpoint a call owns; it hands every datagram to the call.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

EVENT_DIGITS = "0123456789*#ABCD"
"""RFC 4733 event codes 0-15 in order; 16 is flash (not a digit)."""
_HEADER = struct.Struct("!BBHII")


@dataclass(slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < 12:
            raise ValueError(f"{len(data)} bytes is shorter than an RTP header")
        first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        if first >> 6 != 2:
            raise ValueError(f"RTP version {first >> 6}, expected 2")
        offset = 12 + 4 * (first & 0x0F)
        if first & 0x10:  # header extension: 16-bit profile, 16-bit length in words
            if len(data) < offset + 4:
                raise ValueError("truncated RTP header extension")
            offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
        end = len(data)
        if first & 0x20:  # padding: the last byte says how much
            if end == 0 or data[-1] == 0 or data[-1] > end - offset:
                raise ValueError("bad RTP padding length")
            end -= data[-1]
        if offset > end:
            raise ValueError("RTP header longer than the packet")
        return cls(second & 0x7F, sequence, timestamp, ssrc, bytes(data[offset:end]),
                   bool(second & 0x80))

    def encode(self) -> bytes:
        second = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        return _HEADER.pack(0x80, second, self.sequence & 0xFFFF,
                            self.timestamp & 0xFFFFFFFF, self.ssrc) + self.payload


@dataclass(slots=True, frozen=True)
class TelephoneEvent:
    event: int
    end: bool
    volume: int
    duration: int

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        if len(payload) < 4:
            raise ValueError("a telephone-event payload is 4 bytes")
        event, flags, duration = struct.unpack_from("!BBH", payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def encode(self) -> bytes:
        return struct.pack("!BBH", self.event, (0x80 if self.end else 0) | self.volume,
                           self.duration)

    @property
    def digit(self) -> str | None:
        return EVENT_DIGITS[self.event] if self.event < len(EVENT_DIGITS) else None


class DtmfReceiver:
    """One digit per key press, whichever of its packets arrive (first one wins)."""

    def __init__(self) -> None:
        self._seen: list[int] = []

    def receive(self, packet: RtpPacket) -> str | None:
        event = TelephoneEvent.parse(packet.payload)
        if packet.timestamp in self._seen:
            return None
        self._seen = [*self._seen[-7:], packet.timestamp]
        return event.digit


class RtpSender:
    """Stamps outgoing packets: random SSRC and starting numbers, 160 samples apart."""

    def __init__(self, payload_type: int, samples: int = 160) -> None:
        self.payload_type = payload_type & 0x7F
        self.samples = samples
        self.ssrc = random.getrandbits(32)
        self.sequence = random.getrandbits(16)
        self.timestamp = random.getrandbits(32)
        self.talking = False

    def packet(self, payload: bytes, speech: bool = True) -> bytes:
        """The next packet; the marker bit opens each talk spurt."""
        marker = speech and not self.talking
        self.talking = speech
        header = _HEADER.pack(0x80, (0x80 if marker else 0) | self.payload_type,
                              self.sequence, self.timestamp, self.ssrc)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + self.samples) & 0xFFFFFFFF
        return header + payload


class MediaSocket(asyncio.DatagramProtocol):
    """A call's RTP port: every datagram goes to ``on_datagram``; ``send`` never waits."""

    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable and the like: the caller's side is gone or not ready

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    @property
    def port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_media_socket(host: str, on_datagram: Callable[[bytes, tuple[str, int]], None],
                            ports: range | None = None) -> MediaSocket:
    """Bind an RTP socket on ``host``: any free port, or the first free one in ``ports``."""
    loop = asyncio.get_running_loop()
    candidates = [p for p in ports if p % 2 == 0] if ports else [0]  # RTP takes even ports
    if ports:
        random.shuffle(candidates)
    last: OSError | None = None
    for port in candidates:
        try:
            _, protocol = await loop.create_datagram_endpoint(
                lambda: MediaSocket(on_datagram), local_addr=(host, port))
            return protocol
        except OSError as exc:
            last = exc
    raise OSError(f"no free RTP port on {host} in {ports}: {last}")
