"""A minimal SIP caller over real UDP sockets, for the cases sipp cannot provoke.

It writes requests as text (so a test can break them on purpose), reads the
responses, and has its own RTP socket: what the agent sends arrives there,
and ``send_rtp`` sends from it.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterable

from cascade.telephony import sip_message as sm
from cascade.telephony.rtp import RtpPacket
from cascade.telephony.sdp import parse_offer


def offer(port: int, payload_types: Iterable[int] = (0, 101), address: str = "127.0.0.1"
          ) -> str:
    types = list(payload_types)
    maps = {0: "PCMU/8000", 8: "PCMA/8000", 18: "G729/8000", 101: "telephone-event/8000"}
    lines = ["v=0", f"o=test 1 1 IN IP4 {address}", "s=-", f"c=IN IP4 {address}", "t=0 0",
             f"m=audio {port} RTP/AVP {' '.join(map(str, types))}",
             *(f"a=rtpmap:{t} {maps[t]}" for t in types if t in maps)]
    return "\r\n".join(lines) + "\r\n"


class SipCaller:
    """One UDP signalling socket and one RTP socket on ``address``."""

    def __init__(self, server: tuple[str, int], address: str = "127.0.0.1") -> None:
        self.server = server
        self.address = address
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((address, 0))
        self.sip.setblocking(False)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((address, 0))
        self.rtp.setblocking(False)
        self.call_id = uuid.uuid4().hex
        self.tag = uuid.uuid4().hex[:8]
        self.cseq = 0
        self.to_tag = ""
        self.remote_rtp: tuple[str, int] | None = None

    @property
    def port(self) -> int:
        port: int = self.sip.getsockname()[1]
        return port

    @property
    def rtp_port(self) -> int:
        port: int = self.rtp.getsockname()[1]
        return port

    def request(self, method: str, body: str = "", headers: Iterable[str] = (),
                branch: str | None = None, cseq: int | None = None) -> tuple[str, str]:
        """The request text and its branch (for retransmissions and CANCEL)."""
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        branch = branch or sm.new_branch()
        to_tag = f";tag={self.to_tag}" if self.to_tag and method != "CANCEL" else ""
        lines = [
            f"{method} sip:agent@{self.server[0]}:{self.server[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.address}:{self.port};branch={branch};rport",
            f"From: <sip:caller@{self.address}>;tag={self.tag}",
            f"To: <sip:agent@{self.server[0]}>{to_tag}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:caller@{self.address}:{self.port}>",
            "Max-Forwards: 70",
            *headers,
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + body, branch

    def send(self, text: str | bytes) -> None:
        self.sip.sendto(text.encode() if isinstance(text, str) else text, self.server)

    async def receive(self, timeout: float = 2.0) -> sm.SipMessage:
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sip, 65536), timeout)
        return sm.parse(data)

    async def expect(self, status: int, timeout: float = 3.0) -> sm.SipMessage:
        """The next response with ``status`` (provisional ones before it are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            message = await self.receive(max(0.01, deadline - time.monotonic()))
            if message.is_request:
                continue
            if message.status == status:
                if message.to_tag and 100 < status < 300:  # a final failure makes no dialog
                    self.to_tag = message.to_tag
                if message.body:
                    media = parse_offer(message.body)
                    self.remote_rtp = (media.address, media.port)
                return message
            if message.status >= 200:
                raise AssertionError(f"expected {status}, got {message.status} "
                                     f"{message.reason}")

    async def call(self, payload_types: Iterable[int] = (0, 101)) -> sm.SipMessage:
        """INVITE, wait for the 200 OK, ACK it."""
        return await self.call_with([], payload_types)

    async def call_with(self, headers: Iterable[str], payload_types: Iterable[int] = (0, 101)
                        ) -> sm.SipMessage:
        text, _ = self.request("INVITE", offer(self.rtp_port, payload_types, self.address),
                               headers)
        self.send(text)
        ok = await self.expect(200, timeout=10.0)
        self.send(self.request("ACK", cseq=ok.cseq[0])[0])
        return ok

    async def hang_up(self) -> sm.SipMessage:
        self.send(self.request("BYE")[0])
        return await self.expect(200)

    def answer(self, request: sm.SipMessage, status: int = 200) -> None:
        """Respond to a request from the server (its BYE)."""
        self.send(sm.response(request, status).encode())

    def send_rtp(self, packet: bytes | RtpPacket) -> None:
        assert self.remote_rtp is not None
        data = packet.encode() if isinstance(packet, RtpPacket) else packet
        self.rtp.sendto(data, self.remote_rtp)

    def received_rtp(self) -> list[RtpPacket]:
        out = []
        while True:
            try:
                out.append(RtpPacket.parse(self.rtp.recv(2048)))
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()
