"""The SIP server with sipp as the caller: real UDP signalling and RTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np

from cascade import MemoryTrace
from cascade.frames import Event
from cascade.telephony import g711
from cascade.telephony.impairments import paced, replay
from cascade.telephony.rtp import RtpPacket
from cascade.telephony.sip_auth import SipAccess
from cascade.telephony.sip_server import SipServer, SipSettings
from tests.telephony.conftest import CLIPS, needs_sipp, phone_pipeline
from tests.telephony.sip_caller import SipCaller, offer
from tests.telephony.sipp_runner import SCENARIOS, caller_scenario, run_sipp

pytestmark = needs_sipp


class AgentEar:
    """A UDP socket where a call's agent RTP arrives (the port the caller's SDP names)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.packets: list[RtpPacket] = []

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    async def listen(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.packets.append(RtpPacket.parse(await loop.sock_recv(self.sock, 2048)))

    def audio(self) -> np.ndarray:
        return g711.ulaw_decode(b"".join(p.payload for p in self.packets if p.payload_type == 0))


@asynccontextmanager
async def sip_server(pipeline: Any = None, **settings: Any
                     ) -> AsyncIterator[tuple[SipServer, dict[str, MemoryTrace], list[Event]]]:
    traces: dict[str, MemoryTrace] = {}
    events: list[Event] = []

    def trace(call_id: str) -> list[MemoryTrace]:
        traces[call_id] = MemoryTrace()
        return [traces[call_id]]

    def watch(conversation: Any, parameters: dict[str, str]) -> None:
        conversation.graph.observers.append(
            lambda stage, frame: events.append(frame) if isinstance(frame, Event) else None)

    server = SipServer(pipeline or phone_pipeline(), SipSettings(
        port=0, traces=trace, on_call=watch, **settings))
    await server.start()
    try:
        yield server, traces, events
    finally:
        await server.stop()


async def settled(server: SipServer, seconds: float = 3.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if not server.dialogs and not server.calls.active:
            return
        await asyncio.sleep(0.05)


async def test_a_sipp_call_speaks_presses_a_key_hears_the_agent_and_hangs_up(
        ulaw_dir: Path, tmp_path: Path) -> None:
    ear = AgentEar()
    listening = asyncio.create_task(ear.listen())
    async with sip_server() as (server, traces, events):
        scenario = caller_scenario(ulaw_dir / "0880.ulaw", ear.port, 7000, dtmf="1")
        result = await run_sipp(server.port, scenario, tmp_path)
        await settled(server)
        metrics = server.metrics.render().decode()
    listening.cancel()
    assert result.ok, result.output
    (spans,) = traces.values()
    assert [s.attrs["text"] for s in spans.named("end_of_turn")] == [CLIPS["0880"]]
    (speech,) = spans.named("agent_speech")
    assert not speech.attrs["interrupted"]
    # agent RTP came back: 20 ms PCMU packets, consecutive, with the agent's tones in them
    voiced = [p for p in ear.packets if max(g711.ulaw_decode(p.payload), key=abs) > 2000]
    assert len(voiced) * 0.02 > 1.5
    assert all(len(p.payload) == 160 and p.payload_type == 0 for p in ear.packets)
    sequences = [p.sequence for p in ear.packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(sequences))
    assert [(e.name, e.data.get("digit")) for e in events if e.name == "dtmf"] == [("dtmf", "1")]
    start = next(e for e in events if e.name == "call_start")
    assert start.data["from"].startswith("sip:caller@127.0.0.1")
    assert not server.dialogs and "cascade_phone_active_calls 0.0" in metrics


async def test_two_sipp_calls_at_once(ulaw_dir: Path, tmp_path: Path) -> None:
    ears = [AgentEar(), AgentEar()]
    listening = [asyncio.create_task(ear.listen()) for ear in ears]
    async with sip_server() as (server, traces, _):
        results = await asyncio.gather(*(
            run_sipp(server.port, caller_scenario(ulaw_dir / f"{clip}.ulaw", ear.port, 6500),
                     tmp_path, name=f"call{index}")
            for index, (clip, ear) in enumerate(zip(("0880", "0930"), ears, strict=True))))
        await settled(server)
    for task in listening:
        task.cancel()
    assert all(r.ok for r in results), [r.output for r in results]
    assert len(traces) == 2
    for trace in traces.values():
        assert len(trace.named("end_of_turn")) == 1
        assert trace.named("tts")  # the reply was being spoken when the caller hung up
    for ear in ears:  # each caller got its own agent's audio
        assert np.abs(ear.audio().astype(np.int32)).max() > 2000
    assert not server.dialogs


async def test_digest_auth_with_sipp(tmp_path: Path) -> None:
    access = SipAccess(allow=[], users={"alice": "wonderland"})
    scenario = (SCENARIOS / "digest.xml").read_text()
    async with sip_server(access=access) as (server, _, _):
        accepted = await run_sipp(server.port, scenario, tmp_path, name="good",
                                  extra=("-au", "alice", "-ap", "wonderland"))
        refused = await run_sipp(server.port, scenario, tmp_path, name="bad", timeout=5,
                                 extra=("-au", "alice", "-ap", "guess"))
        await settled(server)
        metrics = server.metrics.render().decode()
    assert accepted.ok, accepted.output
    assert not refused.ok and "403" in refused.output
    assert 'cascade_phone_calls_total{outcome="forbidden"} 1.0' in metrics
    assert 'cascade_phone_calls_total{outcome="answered"} 1.0' in metrics



async def test_a_pcma_call_with_info_dtmf_and_a_late_cancel(ulaw: dict[str, bytes]) -> None:
    """A-law both ways, a key pressed by SIP INFO, and a CANCEL after the 200 OK, which
    is answered 200 and changes nothing (RFC 3261 9.2): the call goes on until BYE."""
    async with sip_server() as (server, traces, events):
        caller = SipCaller(("127.0.0.1", server.port))
        invite, branch = caller.request("INVITE", offer(caller.rtp_port, (8, 101)))
        caller.send(invite)
        ok = await caller.expect(200, timeout=10.0)
        caller.send(caller.request("ACK", cseq=ok.cseq[0])[0])
        assert b"a=rtpmap:8 PCMA/8000" in ok.body and b"RTP/AVP 8" in ok.body
        spoken = g711.alaw_encode(g711.ulaw_decode(ulaw["0880"]))
        frames = [spoken[i : i + 160] for i in range(0, len(spoken) - 159, 160)]
        quiet = g711.alaw_encode(np.zeros(160, np.int16))
        stream = paced(RtpPacket(8, i, i * 160, 91, frame)
                       for i, frame in enumerate(frames + [quiet] * 100))
        await replay(stream, caller.send_rtp)
        caller.send(caller.request("INFO", "Signal=5\r\nDuration=160\r\n")[0])
        await caller.expect(200)
        caller.send(caller.request("CANCEL", branch=branch, cseq=1)[0])
        assert (await caller.expect(200)).cseq == (1, "CANCEL")
        back = caller.received_rtp()
        assert server.dialogs  # the late CANCEL did not end the call
        await caller.hang_up()
        await settled(server)
        caller.close()
    assert back and all(p.payload_type == 8 for p in back)
    loudest = max(int(np.abs(g711.alaw_decode(p.payload).astype(np.int32)).max())
                  for p in back)
    assert loudest > 2000  # the agent's tones, A-law encoded
    (trace,) = traces.values()
    assert [s.attrs["text"] for s in trace.named("end_of_turn")] == [CLIPS["0880"]]
    assert [(e.name, e.data.get("digit")) for e in events if e.name == "dtmf"] == [("dtmf", "5")]
