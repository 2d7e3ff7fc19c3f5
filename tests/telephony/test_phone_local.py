"""Phone calls through the embedded local models: the caller's words survive the phone line.

Real recorded speech, narrowed to 8 kHz μ-law by sox, goes through each transport
(a Twilio Media Stream; sipp's rtp_stream; RTP through a lossy, jittery network) into
faster-whisper;
the transcript must match the reference, and the agent's spoken reply must come back.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import yaml

from cascade import MemoryTrace, Pipeline, parse_pipeline
from cascade.pipelines import builtin_pipeline
from cascade.telephony import g711
from cascade.telephony.impairments import Impairment, impair, paced, replay
from cascade.telephony.rtp import RtpPacket
from cascade.telephony.twilio_server import TwilioEndpoint, TwilioSettings
from tests.conftest import needs_models, wer
from tests.telephony.conftest import CLIPS, serving
from tests.telephony.sip_caller import SipCaller
from tests.telephony.sipp_runner import caller_scenario, run_sipp
from tests.telephony.test_sip_server import AgentEar, settled, sip_server
from tests.telephony.twilio_caller import TwilioCaller, stream_url, webhook

pytestmark = needs_models


@pytest.fixture(scope="module")
def local() -> Pipeline:
    data = yaml.safe_load(builtin_pipeline("local").read_text())
    data["stages"]["llm"]["options"]["max_tokens"] = 16
    pipeline = Pipeline(parse_pipeline(data))
    pipeline.preload()
    return pipeline


def heard(trace: MemoryTrace) -> str:
    return " ".join(str(s.attrs.get("text", "")) for s in trace.named("end_of_turn"))


async def test_twilio_call_transcript(local: Pipeline, ulaw: dict[str, bytes]) -> None:
    traces: dict[str, MemoryTrace] = {}

    def trace(call_id: str) -> list[MemoryTrace]:
        traces[call_id] = MemoryTrace()
        return [traces[call_id]]

    endpoint = TwilioEndpoint(local, TwilioSettings(auth_token="t", traces=trace))
    async with serving(endpoint) as base:
        answered = await webhook(base, "t", {"CallSid": "CA9"})
        caller = await TwilioCaller(stream_url(answered.text), call_sid="CA9").connect()
        await caller.silence(0.3)
        await caller.play(ulaw["0930"])
        assert await caller.silence_until(lambda: caller.heard.seconds() > 0.5, 30)
        await caller.hang_up()
    spans = traces["twilio-CA9"]
    assert wer(CLIPS["0930"], heard(spans)) <= 0.25, heard(spans)
    played = np.concatenate([pcm for _, pcm in caller.heard.chunks])
    assert np.abs(played.astype(np.int32)).max() > 1000  # Piper's voice, through μ-law


async def test_a_sipp_call_is_transcribed_by_the_local_models_and_hears_the_reply(
        local: Pipeline, ulaw_dir: Path, tmp_path: Path) -> None:
    """sipp streams the recording with rtp_stream; faster-whisper must hear its words."""
    ear = AgentEar()
    listening = asyncio.create_task(ear.listen())
    async with sip_server(local) as (server, traces, _):
        scenario = caller_scenario(ulaw_dir / "0930.ulaw", ear.port, 12000)
        result = await run_sipp(server.port, scenario, tmp_path, timeout=60)
        await settled(server)
    listening.cancel()
    assert result.ok, result.output  # INVITE, media, BYE answered 200: a clean hang-up
    (trace,) = traces.values()
    assert wer(CLIPS["0930"], heard(trace)) <= 0.25, heard(trace)
    voiced = [p for p in ear.packets
              if np.abs(g711.ulaw_decode(p.payload).astype(np.int32)).max() > 1000]
    assert len(voiced) * 0.02 > 1.0  # Piper's reply came back as RTP
    assert not server.dialogs


async def test_sip_call_through_a_bad_network(local: Pipeline, ulaw: dict[str, bytes]) -> None:
    """5% loss in bursts, 40 ms of jitter (reordering), duplicates, silence suppression."""
    audio = ulaw["0880"] + b"\xff" * 8000 * 2  # the sentence, then two seconds of pause
    frames = [audio[i : i + 160] for i in range(0, len(audio) - 159, 160)]
    stream = paced(RtpPacket(0, i, i * 160, 77, frame) for i, frame in enumerate(frames))
    network = Impairment(loss=0.05, burst=0.3, jitter=0.04, duplicate=0.05, dtx=True, seed=7)
    quiet = g711.ulaw_encode(np.zeros(160, np.int16))

    def silent(packet: RtpPacket) -> bool:
        return packet.payload == quiet

    received = impair(stream, network, silent,
                      lambda p: RtpPacket(13, p.item.sequence, p.item.timestamp, 77, b"\x3c"))
    assert len(received) < len(stream)
    async with sip_server(local) as (server, traces, _):
        caller = SipCaller(("127.0.0.1", server.port))
        await caller.call()
        await replay(received, caller.send_rtp)
        for _ in range(300):  # wait for the agent's reply to come back as RTP
            if any(max(g711.ulaw_decode(p.payload), key=abs) > 1000
                   for p in caller.received_rtp()):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("no agent audio came back")
        await caller.hang_up()
        await settled(server)
        (trace,) = traces.values()
    assert wer(CLIPS["0880"], heard(trace)) <= 0.25, heard(trace)
    caller.close()

