"""A SIP user agent server on UDP: answers calls and runs each as a conversation over RTP.

Handles INVITE (SDP offer/answer: PCMU, PCMA, telephone-event; 100 Trying, 180
Ringing, 200 OK retransmitted until the ACK), ACK, BYE, CANCEL (487 to the
INVITE) and OPTIONS; re-INVITEs get the same answer, INFO carries DTMF, other
methods get 405. Calls come only from trusted addresses or with digest auth
(``SipAccess``). Retransmitted requests get the response already sent.
Malformed datagrams are counted and dropped; nothing a caller sends stops the
server. One media clock ticks every call every 20 ms (``tick_calls``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import signal
import socket
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, cast

from cascade.config import PipelineConfig
from cascade.conversation import Pipeline
from cascade.telephony import sip_message as sm
from cascade.telephony.calls import CallBook, CallHook, TraceFactory, run_server
from cascade.telephony.operations import OperationsServer
from cascade.telephony.rtp import open_media_socket
from cascade.telephony.sdp import Negotiated, SdpError, answer, negotiate, parse_offer
from cascade.telephony.sip_auth import SipAccess
from cascade.telephony.sip_call import MediaClock, MediaSettings, SipCall, tick_calls
from cascade.telephony.telemetry import PhoneMetrics

log = logging.getLogger("cascade.telephony")
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO"
T1 = 0.5


@dataclass
class SipSettings:
    """Where the SIP server listens, who may call, and how calls behave."""

    host: str = "127.0.0.1"
    port: int = 5060
    media_address: str | None = None
    """Address written into SDP answers (default: ``host``, or the one facing the caller)."""
    rtp_ports: range | None = None
    """Ports for RTP (default: any free port)."""
    access: SipAccess = field(default_factory=SipAccess)
    max_calls: int = 100
    ring_seconds: float = 0.0
    """Seconds between 180 Ringing and 200 OK (a caller may CANCEL meanwhile)."""
    media: MediaSettings = field(default_factory=MediaSettings)
    traces: TraceFactory | None = None
    on_call: CallHook | None = None


@dataclass
class Dialog:
    """Signalling state of one call: who, which tags, and its INVITE."""

    invite: sm.SipMessage
    source: tuple[str, int]
    local_tag: str
    call: SipCall | None = None
    answer: bytes = b""
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: bool = False
    closing: bool = False
    reserved: bool = False
    local_cseq: int = 0


class SipServer(asyncio.DatagramProtocol):
    """The UAS: one UDP socket for signalling, one per call for media."""

    def __init__(self, pipeline: Pipeline, settings: SipSettings) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.metrics = PhoneMetrics("sip")
        self.calls = CallBook(self.metrics, settings.max_calls)
        self.dialogs: dict[str, Dialog] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self._sent: OrderedDict[tuple[str, str, str], tuple[bytes, tuple[str, int]]] = (
            OrderedDict())
        self._byes: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.clock = MediaClock(self._tick)
        self._clock: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self,
                                            local_addr=(self.settings.host, self.settings.port))
        self._clock = loop.create_task(self.clock.run(), name="sip:media-clock")

    @property
    def port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    async def stop(self) -> None:
        """Hang up every call (one BYE each, not waiting for answers) and close."""
        for call_id in list(self.dialogs):
            await self.hang_up(call_id, "server stopping", attempts=1)
        if self._clock is not None:
            self._clock.cancel()
        if self.transport is not None:
            self.transport.close()

    async def drain(self, timeout: float | None = None) -> bool:
        """Refuse new calls (503), wait for active ones; hang up the rest after ``timeout``."""
        finished = await self.calls.drain(timeout)
        if not finished:
            for call_id in list(self.dialogs):
                await self.hang_up(call_id, "drain timeout")
        return finished

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def spawn(self, coroutine: Any) -> None:
        """Run ``coroutine`` as a task the server keeps, logging it if it fails."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.metrics.error("internal")
            log.error("SIP task failed", exc_info=task.exception())

    # --- signalling in -----------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.strip() == b"":
            return  # keep-alive CRLFs
        try:
            message = sm.parse(data)
        except Exception as exc:  # SipError, or anything else the parser did not foresee
            self.metrics.error("sip_malformed")
            log.debug("dropped a datagram from %s: %s", addr, exc)
            return
        try:
            if message.is_request:
                self._request(message, addr)
            else:
                self._response(message)
        except Exception:  # one bad message must not take the server down
            self.metrics.error("internal")
            log.exception("SIP request from %s failed", addr)

    def _send(self, message: sm.SipMessage, addr: tuple[str, int],
              request: sm.SipMessage | None = None) -> None:
        data = message.encode()
        if request is not None:
            key = (request.call_id, request.branch, request.cseq[1])
            self._sent[key] = (data, addr)
            self._sent.move_to_end(key)
            while len(self._sent) > 2048:
                self._sent.popitem(last=False)
        if self.transport is not None:
            self.transport.sendto(data, addr)

    def _reply(self, request: sm.SipMessage, addr: tuple[str, int], status: int,
               **options: Any) -> None:
        self._send(sm.response(request, status, source=addr, **options), addr, request)

    def _request(self, request: sm.SipMessage, addr: tuple[str, int]) -> None:
        method = request.method
        if method != "ACK":
            again = self._sent.get((request.call_id, request.branch, request.cseq[1]))
            if again is not None:  # a retransmission: say the same again
                if self.transport is not None:
                    self.transport.sendto(again[0], addr)
                return
        dialog = self.dialogs.get(request.call_id)
        if method == "INVITE":
            if dialog is not None and request.to_tag == dialog.local_tag:
                self._reply(request, addr, 200, to_tag=dialog.local_tag, body=dialog.answer,
                            headers=self._contact(addr) + [("Content-Type", "application/sdp")])
            elif dialog is None and not request.to_tag:
                self._reply(request, addr, 100)  # at once: stops the caller retransmitting
                self.spawn(self._invite(request, addr))
            else:
                self._reply(request, addr, 481)
        elif method == "ACK":
            if dialog is not None:
                dialog.acked.set()
        elif method == "BYE":
            if dialog is None or request.to_tag != dialog.local_tag:
                self._reply(request, addr, 481)
                return
            self._reply(request, addr, 200)
            self.spawn(self._end(request.call_id, "caller hung up"))
        elif method == "CANCEL":
            self._cancel(request, addr, dialog)
        elif method == "OPTIONS":
            self._reply(request, addr, 200, headers=[
                ("Allow", ALLOW), ("Accept", "application/sdp"), *self._contact(addr)])
        elif method == "INFO":
            self._info(request, addr, dialog)
        else:
            self._reply(request, addr, 405, headers=[("Allow", ALLOW)])

    def _response(self, message: sm.SipMessage) -> None:
        done = self._byes.get(message.branch)
        if done is not None and message.status >= 200:
            done.set()

    def _contact(self, addr: tuple[str, int]) -> list[tuple[str, str]]:
        host = self._media_address(addr)
        host = f"[{host}]" if ":" in host else host
        return [("Contact", f"<sip:cascade@{host}:{self.port}>")]

    def _media_address(self, addr: tuple[str, int]) -> str:
        configured = self.settings.media_address
        if configured:
            return configured
        if self.settings.host not in ("0.0.0.0", "::", ""):
            return self.settings.host
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(addr)  # no packet is sent: this only picks the route
            local: str = probe.getsockname()[0]
            return local

    # --- calls -------------------------------------------------------------

    async def _invite(self, invite: sm.SipMessage, addr: tuple[str, int]) -> None:
        verdict = self.settings.access.check(invite, addr[0])
        if verdict == "challenge":
            self.metrics.call("challenged")
            self._reply(invite, addr, 401, to_tag=sm.new_tag(), headers=[
                ("WWW-Authenticate", self.settings.access.challenge())])
            return
        if verdict == "refuse":
            self.metrics.call("forbidden")
            self._reply(invite, addr, 403, to_tag=sm.new_tag())
            return
        refused = self.calls.admit()
        if refused is not None:
            self.metrics.call(refused)
            self._reply(invite, addr, 503 if refused == "draining" else 486,
                        to_tag=sm.new_tag(), headers=[("Retry-After", "5")])
            return
        try:
            negotiated = negotiate(parse_offer(invite.body))
        except SdpError as exc:
            self.metrics.call("no_common_media")
            self._reply(invite, addr, 488, to_tag=sm.new_tag(),
                        headers=[("Warning", f'304 cascade "{exc}"')])
            return
        dialog = Dialog(invite, addr, sm.new_tag())
        self.dialogs[invite.call_id] = dialog
        self.calls.reserve()
        dialog.reserved = True
        try:
            await self._answer(dialog, negotiated)
        except Exception:
            self.metrics.error("internal")
            log.exception("answering call %s failed", invite.call_id)
            if not dialog.answer:
                self._reply(invite, addr, 500, to_tag=dialog.local_tag)
            await self._end(invite.call_id, "internal error")
            self.dialogs.pop(invite.call_id, None)
        finally:
            if dialog.reserved:
                self.calls.release()

    async def _answer(self, dialog: Dialog, negotiated: Negotiated) -> None:
        invite, addr = dialog.invite, dialog.source
        self._reply(invite, addr, 180, to_tag=dialog.local_tag, headers=self._contact(addr))
        media_host = self._media_address(addr)
        holder: list[SipCall] = []
        socket_ = await open_media_socket(
            self.settings.host or "0.0.0.0",
            lambda data, source: holder[0].on_datagram(data, source) if holder else None,
            self.settings.rtp_ports)
        parameters = {"from": sm.uri_of(invite.get("From")), "to": sm.uri_of(invite.get("To")),
                      "call_id": invite.call_id}
        call = SipCall(invite.call_id, negotiated, socket_, addr[0], self.pipeline,
                       self.metrics, self.settings.media, parameters, self.settings.traces,
                       self.settings.on_call)
        holder.append(call)
        dialog.call = call
        if self.settings.ring_seconds:
            await asyncio.sleep(self.settings.ring_seconds)
        if dialog.cancelled or self.dialogs.get(invite.call_id) is not dialog:
            socket_.close()
            return
        self.calls.begin(call.id)
        self.calls.release()
        dialog.reserved = False
        await call.start()
        if dialog.cancelled or self.dialogs.get(invite.call_id) is not dialog:
            # CANCEL (or a hang-up) came while the stages started: it ends unanswered
            await call.stop()  # done already by whoever ended it, unless it has not run yet
            self.calls.end(call.id)
            return
        dialog.answer = answer(negotiated, media_host, socket_.port, random.getrandbits(31))
        self.metrics.call("answered")
        ok = sm.response(invite, 200, to_tag=dialog.local_tag, source=addr, body=dialog.answer,
                         headers=[*self._contact(addr), ("Allow", ALLOW),
                                  ("Content-Type", "application/sdp")])
        self._send(ok, addr, invite)
        interval = T1
        waited = 0.0
        while not dialog.acked.is_set() and waited < 64 * T1:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dialog.acked.wait(), interval)
            if dialog.acked.is_set() or self.dialogs.get(invite.call_id) is not dialog:
                return
            waited += interval
            interval = min(interval * 2, 4.0)
            self._send(ok, addr)
        if not dialog.acked.is_set():
            self.metrics.error("no_ack")
            await self.hang_up(invite.call_id, "no ACK for the 200 OK")

    def _cancel(self, cancel: sm.SipMessage, addr: tuple[str, int],
                dialog: Dialog | None) -> None:
        if dialog is None or dialog.invite.branch != cancel.branch:
            self._reply(cancel, addr, 481)
            return
        self._reply(cancel, addr, 200)
        if dialog.answer:  # already answered: the caller must send BYE instead
            return
        dialog.cancelled = True
        if dialog.call is not None:  # its stages may be starting: they stop, unannounced
            self.spawn(dialog.call.stop())
        self.metrics.call("cancelled")
        self._reply(dialog.invite, dialog.source, 487, to_tag=dialog.local_tag)
        self.dialogs.pop(cancel.call_id, None)

    def _info(self, request: sm.SipMessage, addr: tuple[str, int],
              dialog: Dialog | None) -> None:
        if dialog is None or dialog.call is None:
            self._reply(request, addr, 481)
            return
        found = re.search(rb"Signal\s*=\s*([0-9*#A-D])", request.body)
        if found:
            dialog.call.dtmf_info(found.group(1).decode())
        self._reply(request, addr, 200)

    async def _end(self, call_id: str, why: str) -> None:
        dialog = self.dialogs.pop(call_id, None)
        if dialog is None or dialog.call is None:
            return
        log.info("%s ended: %s", dialog.call.id, why)
        await dialog.call.stop()
        self.calls.end(dialog.call.id)

    async def hang_up(self, call_id: str, why: str, attempts: int = 7) -> None:
        """End a call from our side: BYE (retransmitted until answered), then stop it."""
        dialog = self.dialogs.get(call_id)
        if dialog is None:
            return
        if dialog.answer:
            await self._bye(dialog, attempts)
        await self._end(call_id, why)

    async def _bye(self, dialog: Dialog, attempts: int) -> None:
        dialog.local_cseq += 1
        bye, branch = sm.bye(dialog.invite, dialog.local_tag, dialog.local_cseq,
                             (self._media_address(dialog.source), self.port))
        done = self._byes[branch] = asyncio.Event()
        try:
            for attempt in range(attempts):
                self._send(bye, dialog.source)
                if attempt + 1 == attempts:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), min(T1 * 2**attempt, 4.0))
                if done.is_set():
                    return
        finally:
            self._byes.pop(branch, None)

    # --- media -------------------------------------------------------------

    def _tick(self) -> None:
        """Every 20 ms: each answered call moves one frame each way; ended ones hang up."""
        answered = [(call_id, dialog, dialog.call) for call_id, dialog in self.dialogs.items()
                    if dialog.call is not None and dialog.call.conversation is not None
                    and dialog.answer]  # media flows once the call is answered
        tick_calls([call for _, _, call in answered], self._tick_failed)
        for call_id, dialog, call in answered:
            if call.ended and not dialog.closing:
                dialog.closing = True
                self.spawn(self.hang_up(call_id, call.ended))

    def _tick_failed(self, call: SipCall, exc: Exception) -> None:
        self.metrics.error("internal")
        log.error("%s: media tick failed", call.id, exc_info=exc)
        call.ended = call.ended or "internal error"


def serve(config: PipelineConfig, *, host: str = "127.0.0.1", port: int = 5060,
          token: str | None = None, console: Any = None, drain_seconds: float = 3600.0,
          http_port: int | None = None) -> None:
    """Run the SIP server until SIGTERM (drains calls) or ^C.

    Callers from loopback are trusted; others need digest auth as user ``cascade``
    with ``token`` as the password (or CASCADE_SIP_ALLOW=net1,net2 to trust networks).
    ``/healthz``, ``/readyz`` and ``/metrics`` are served over HTTP on ``http_port``
    (default: the SIP port + 1).
    """
    from cascade.run_command import load_for_serving

    allow = os.environ.get("CASCADE_SIP_ALLOW", "127.0.0.0/8,::1/128").split(",")
    access = SipAccess(allow=[a.strip() for a in allow if a.strip()],
                       users={"cascade": token} if token else {})
    pipeline = Pipeline(config)
    load_for_serving(pipeline, console)
    settings = SipSettings(host=host, port=port, access=access,
                           media_address=os.environ.get("CASCADE_MEDIA_ADDRESS") or None)

    async def main() -> None:
        server = SipServer(pipeline, settings)
        await server.start()
        operations = OperationsServer(server.calls, server.metrics, host,
                                      server.port + 1 if http_port is None else http_port)
        try:
            await operations.start()
        except Exception:
            await server.stop()
            raise
        if console is not None:
            console.print(f"SIP server on udp://{host}:{server.port} "
                          f"(trusted: {', '.join(access.allow) or 'none'}; digest users: "
                          f"{', '.join(access.users) or 'none'}); /healthz /readyz /metrics "
                          f"on http://{host}:{operations.port}")
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def drain() -> None:
            log.warning("SIGTERM: draining %d call(s)", len(server.calls.active))
            await server.drain(drain_seconds)
            stopping.set()

        loop.add_signal_handler(signal.SIGTERM, lambda: server.spawn(drain()))
        loop.add_signal_handler(signal.SIGINT, stopping.set)
        try:
            await stopping.wait()
        finally:
            await server.stop()
            await operations.stop()

    run_server(main())
