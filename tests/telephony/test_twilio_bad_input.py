"""Bad input never takes the Twilio endpoint down, and a misbehaving client is cut off."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import websockets

from cascade.telephony.twilio_call import CallLimits, Outbox
from tests.telephony.conftest import serving
from tests.telephony.test_twilio_server import answer, endpoint
from tests.telephony.twilio_caller import ULAW_SILENCE, TwilioCaller


async def metrics_of(base: str) -> str:
    async with httpx.AsyncClient(verify=False) as client:
        return (await client.get(base + "/metrics")).text


def count(metrics: str, line_start: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def closed(caller: TwilioCaller, within: float = 5.0) -> int:
    assert caller._reader is not None
    await asyncio.wait_for(caller._reader, within)
    code: int = caller.closed.rcvd.code
    return code


async def test_garbage_on_a_live_call_is_counted_and_ignored() -> None:
    app = endpoint()
    async with serving(app) as base:
        caller = await TwilioCaller(await answer(base)).connect()
        stream = caller.stream_sid
        garbage = [
            "{not json", "[]", "null", '"media"', json.dumps({"no": "event"}),
            json.dumps({"event": "teleport"}),
            json.dumps({"event": "media", "media": {"payload": "!!not base64!!"}}),
            json.dumps({"event": "media", "media": {"payload": 7}}),
            json.dumps({"event": "media", "media": "flat"}),
            json.dumps({"event": "media", "media": {"payload": ""}}),
            json.dumps({"event": "dtmf", "dtmf": {"digit": "x"}}),
            json.dumps({"event": "mark", "mark": {"name": "never-sent"}}),
            json.dumps({"event": "start", "start": "twice"}),
            "[" * 100_000,  # deeply nested and oversized
            "x" * 70_000,
        ]
        for text in garbage:
            await caller.send(text)
        await caller.ws.send(b"\x00\x01binary")
        await caller.send(caller.media(ULAW_SILENCE * 100))  # two seconds in one message
        superscript = caller.media(ULAW_SILENCE)
        superscript["media"]["chunk"] = "\u00b2"  # str.isdigit() says yes, int() says no
        await caller.send(superscript)
        for chunk in (1, 2, 2, 4, 3, 5):  # a duplicate, a gap, a late one
            await caller.send(caller.media(ULAW_SILENCE, chunk=chunk))
        caller.chunk = 5
        await caller.silence(0.2)
        healthy = await metrics_of(base)
        await caller.hang_up()
        assert caller.closed.rcvd.code == 1000
        async with httpx.AsyncClient(verify=False) as client:
            assert (await client.get(base + "/healthz")).status_code == 200
    assert count(healthy, 'cascade_phone_errors_total{kind="malformed"}') >= 10
    assert count(healthy, 'cascade_phone_errors_total{kind="unknown_event"}') == 1
    assert count(healthy, 'cascade_phone_errors_total{kind="oversized"}') == 2
    assert count(healthy, 'cascade_phone_errors_total{kind="binary_frame"}') == 1
    assert count(healthy, 'cascade_phone_errors_total{kind="bad_media_size"}') == 2  # 0, 2 s
    assert count(healthy, 'cascade_phone_media_frames_total{direction="in",fate="stale"}') == 2
    assert count(healthy,
                 'cascade_phone_media_frames_total{direction="in",fate="gap_filled"}') == 1
    assert count(healthy,
                 'cascade_phone_media_frames_total{direction="in",fate="accepted"}') >= 10
    assert count(healthy, "cascade_phone_active_calls") == 1
    assert count(healthy, 'cascade_phone_errors_total{kind="internal"}') == 0
    assert stream  # the call survived all of it


async def test_wrong_codec_flooding_idle_and_vanishing_clients() -> None:
    app = endpoint(limits=CallLimits(idle_timeout=0.5))
    async with serving(app) as base:
        alaw = await TwilioCaller(await answer(base), encoding="audio/x-alaw").connect()
        assert await closed(alaw) == 1003
        wideband = await TwilioCaller(await answer(base), sample_rate=16000).connect()
        assert await closed(wideband) == 1003

        flood = await TwilioCaller(await answer(base)).connect()
        try:
            for _ in range(400):  # 8 s of audio as fast as the socket takes it
                await flood.send(flood.media(ULAW_SILENCE))
        except websockets.ConnectionClosed:
            pass
        assert await closed(flood) == 1008

        skipper = await TwilioCaller(await answer(base)).connect()
        try:  # one byte per message, each skipping 50 chunk numbers: 1 s of filled silence
            for message in range(1, 100):
                await skipper.send(skipper.media(b"\xff", chunk=message * 51))
        except websockets.ConnectionClosed:
            pass
        assert await closed(skipper) == 1008

        before_start = await TwilioCaller(await answer(base)).connect(send_start=False)
        await before_start.send(before_start.media(ULAW_SILENCE))
        assert await closed(before_start, 3) == 1001  # idle: never started

        idle = await TwilioCaller(await answer(base)).connect()
        await idle.silence(0.1)
        assert await closed(idle, 3) == 1001

        vanishing = await TwilioCaller(await answer(base)).connect()
        await vanishing.silence(0.2)
        vanishing.ws.transport.abort()  # no stop, no close frame: the network went away
        for _ in range(100):
            if count(await metrics_of(base), "cascade_phone_active_calls") == 0:
                break
            await asyncio.sleep(0.05)
        metrics = await metrics_of(base)
    assert count(metrics, "cascade_phone_active_calls") == 0
    assert count(metrics, 'cascade_phone_calls_total{outcome="bad_media_format"}') == 2
    assert count(metrics, 'cascade_phone_errors_total{kind="flooding"}') == 2
    assert count(metrics, 'cascade_phone_errors_total{kind="idle_timeout"}') == 2
    assert count(metrics, 'cascade_phone_errors_total{kind="vanished"}') == 1
    assert count(metrics, 'cascade_phone_errors_total{kind="media_before_start"}') == 1


def test_a_slow_socket_holds_a_bounded_queue_of_agent_audio() -> None:
    outbox = Outbox(limit=3)
    for index in range(10):
        outbox.put(str(index))
    assert list(outbox.items) == ["7", "8", "9"]
    assert outbox.dropped == 7


def test_a_media_payload_round_trips_through_base64() -> None:
    caller = TwilioCaller("ws://unused")
    message = caller.media(b"\x01\x02")
    assert base64.b64decode(message["media"]["payload"]) == b"\x01\x02"


async def test_slow_call_setup_is_not_an_idle_caller() -> None:
    """The idle timer counts only time spent waiting for the caller, not our own work."""
    from cascade.conversation import Pipeline
    from cascade.stage import Stage
    from cascade.telephony.twilio_server import TwilioEndpoint, TwilioSettings
    from tests.telephony.conftest import phone_pipeline
    from tests.telephony.test_twilio_server import TOKEN

    class SlowToStart(Pipeline):
        def __init__(self) -> None:
            inner = phone_pipeline()
            self.config, self.adapters = inner.config, inner.adapters
            self._inner = inner

        def build_stages(self) -> dict[str, Stage]:
            stages = self._inner.build_stages()
            vad = stages["vad"]
            start = vad.start

            async def slow_start() -> None:
                await asyncio.sleep(0.8)  # e.g. a vendor handshake: longer than idle_timeout
                await start()

            vad.start = slow_start  # type: ignore[method-assign]
            return stages

    app = TwilioEndpoint(SlowToStart(), TwilioSettings(
        auth_token=TOKEN, limits=CallLimits(idle_timeout=0.4)))
    async with serving(app) as base:
        caller = await TwilioCaller(await answer(base)).connect()
        await caller.silence(1.0)  # 20 ms media messages: never idle from the caller's side
        assert caller._reader is not None and not caller._reader.done()
        await caller.hang_up()
        metrics = await metrics_of(base)
    assert count(metrics, 'cascade_phone_errors_total{kind="idle_timeout"}') == 0
