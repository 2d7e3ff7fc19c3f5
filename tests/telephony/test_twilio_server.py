"""The Twilio endpoint against a Twilio-protocol client over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import numpy as np
import pytest

from cascade import MemoryTrace
from cascade.frames import Event, SystemFrame
from cascade.stage import Stage
from cascade.telephony.twilio_server import TwilioEndpoint, TwilioSettings
from tests.telephony.conftest import CLIPS, phone_pipeline, serving
from tests.telephony.twilio_caller import TwilioCaller, stream_url, webhook

TOKEN = "test-auth-token"
CALL = {"CallSid": "CA0001", "From": "+15550001111", "To": "+15550002222",
        "AccountSid": "AC0001"}


class EventLog(Stage):
    """Notes every application event that reaches the conversation."""

    def __init__(self, seen: list[Event]) -> None:
        self.seen = seen

    async def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, Event):
            self.seen.append(frame)


def endpoint(traces: dict[str, MemoryTrace] | None = None, **settings: object
             ) -> TwilioEndpoint:
    kept = traces if traces is not None else {}

    def trace(call_id: str) -> list[MemoryTrace]:
        kept[call_id] = MemoryTrace()
        return [kept[call_id]]

    return TwilioEndpoint(phone_pipeline(), TwilioSettings(
        auth_token=TOKEN, traces=trace, **settings))  # type: ignore[arg-type]


async def answer(base: str, form: dict[str, str] | None = None) -> str:
    response = await webhook(base, TOKEN, form or CALL)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    return stream_url(response.text)


async def test_two_turns_and_a_barge_in(ulaw: dict[str, bytes]) -> None:
    traces: dict[str, MemoryTrace] = {}
    app = endpoint(traces)
    async with serving(app) as base:
        caller = await TwilioCaller(await answer(base)).connect()
        await caller.play(ulaw["0880"])
        assert await caller.silence_until(lambda: caller.agent_quiet_for(0.4), 12)
        first_reply = caller.heard.seconds()
        assert first_reply > 2.0
        reply_one_chunks = len(caller.heard.chunks)
        await caller.play(ulaw["0930"])
        assert await caller.silence_until(lambda: caller.heard.seconds() > first_reply + 0.6,
                                          8)
        await caller.play(ulaw["0890"][: 8000 * 2])  # talk over the agent for 2 s
        assert await caller.silence_until(lambda: bool(caller.heard.clears), 4)
        await caller.silence(0.5)
        await caller.hang_up()
        metrics = (await httpx.AsyncClient(verify=False).get(base + "/metrics")).text
    spans = traces["twilio-CA0001"].spans
    turns = [s for s in spans if s.name == "end_of_turn"]
    assert [s.attrs["text"] for s in turns[:2]] == [CLIPS["0880"], CLIPS["0930"]]
    speech = [s for s in spans if s.name == "agent_speech"]
    assert [s.attrs["interrupted"] for s in speech[:2]] == [False, True]
    cut = speech[1]
    assert cut.attrs["text"] and len(cut.attrs["text"]) < len(speech[0].attrs["text"]) + 20
    # exact: the phone played as much of the cut reply as agent_speech says was heard
    # (audio sent ahead of time was dropped by the clear)
    played = sum(len(pcm) for _, pcm in caller.heard.chunks[reply_one_chunks:]) / 8000
    assert abs(played - (cut.end - cut.start)) < 0.06, (played, cut.end - cut.start)
    # the phone heard the agent's tones, paced in real time, and every mark came back
    audio = np.concatenate([pcm for _, pcm in caller.heard.chunks])
    assert np.abs(audio.astype(np.int32)).max() > 3000
    assert len(caller.heard.marks_echoed) > 5
    assert "cascade_phone_interruptions_total 1.0" in metrics
    assert 'cascade_turn_latency_seconds_count{metric="voice_to_voice"}' in metrics
    assert "cascade_phone_active_calls 0.0" in metrics


async def test_webhook_signatures_good_bad_missing() -> None:
    async with serving(endpoint()) as base:
        good = await webhook(base, TOKEN, CALL)
        wrong_key = await webhook(base, "not-the-token", CALL)
        missing = await webhook(base, None, CALL)
        tampered = await webhook(base, None, {**CALL, "From": "+15559999999"},
                                 signature=good.request.headers["X-Twilio-Signature"])
        too_big = await webhook(base, TOKEN, {**CALL, "Junk": "x" * 100_000})
    assert good.status_code == 200
    twiml = good.text
    assert "<Connect><Stream" in twiml and stream_url(twiml).startswith("ws://127.0.0.1:")
    assert '<Parameter name="from" value="+15550001111"' in twiml
    assert '<Parameter name="call_sid" value="CA0001"' in twiml
    for refused in (wrong_key, missing, tampered):
        assert refused.status_code == 403
        assert "<Stream" not in refused.text
    assert too_big.status_code == 413


async def test_a_chunked_webhook_body_is_refused_once_too_large_not_buffered_whole() -> None:
    """No Content-Length (chunked): the body is counted as it arrives, and refused past
    the limit while the client is still sending, long before a huge body would be read."""
    async with serving(endpoint()) as base:
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /twilio/voice HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     b"X-Twilio-Signature: junk\r\n\r\n")
        chunk = b"a" * 65536
        status = asyncio.ensure_future(reader.readline())
        sent = 0
        with contextlib.suppress(ConnectionError):
            while not status.done() and sent < 200:  # 200 x 64 KiB = 12.5 MiB at most
                writer.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                await writer.drain()
                sent += 1
                await asyncio.sleep(0.005)
        line = await asyncio.wait_for(status, 5)
        writer.close()
    assert line.startswith(b"HTTP/1.1 413")
    assert sent < 100  # answered while the body was still coming


async def test_a_replayed_webhook_reserves_one_place_and_an_answered_call_no_second(
        ) -> None:
    async with serving(endpoint(max_calls=3)) as base:
        urls = [await answer(base) for _ in range(5)]  # a retry, or a captured replay
        async with httpx.AsyncClient() as client:
            ready = (await client.get(base + "/readyz")).json()
        assert len(set(urls)) == 1 and ready["ready"]
        caller = await TwilioCaller(urls[0]).connect()
        await caller.silence(0.1)
        again = await webhook(base, TOKEN, CALL)
        assert again.status_code == 409 and "already has a media stream" in again.text
        other = await answer(base, {**CALL, "CallSid": "CA0002"})
        assert other != urls[0]
        await caller.hang_up()


async def test_webhook_behind_a_proxy_checks_the_public_url() -> None:
    public = "https://bot.example.com"
    app = endpoint(public_url=public)
    async with serving(app) as base:
        signed_public = await webhook(base, None, CALL,
                                      signature=_signature(public + "/twilio/voice"))
        signed_local = await webhook(base, TOKEN, CALL)
    assert signed_public.status_code == 200
    assert stream_url(signed_public.text).startswith("wss://bot.example.com/twilio/media/")
    assert signed_local.status_code == 403


def _signature(url: str) -> str:
    from tests.telephony.twilio_caller import sign

    return sign(TOKEN, url, CALL)


async def test_only_streams_the_webhook_started_and_each_only_once() -> None:
    import websockets

    async with serving(endpoint()) as base:
        url = await answer(base)
        forged = url.rsplit("/", 1)[0] + "/not-a-token"
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(forged)
        assert refused.value.response.status_code == 403
        first = await TwilioCaller(url).connect()
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(url)  # the token was spent
        await first.hang_up()
        other = await TwilioCaller(await answer(base), call_sid="CA-someone-else").connect()
        await asyncio.wait_for(other._reader, 3)  # type: ignore[arg-type]
        assert other.closed.rcvd.code == 1008  # a stream for another call's webhook


async def test_parameters_and_dtmf_reach_the_conversation() -> None:
    events: list[Event] = []

    def watch(conversation: object, parameters: dict[str, str]) -> None:
        conversation.graph.observers.append(  # type: ignore[attr-defined]
            lambda stage, frame: events.append(frame) if isinstance(frame, Event) else None)

    app = endpoint(on_call=watch, parameters=lambda form: {"caller_city": form["FromCity"]})
    async with serving(app) as base:
        caller = TwilioCaller(await answer(base, {**CALL, "FromCity": "Leeds"}),
                              custom={"from": "forged"})
        await caller.connect()
        await caller.silence(0.1)
        for digit in "4#":
            await caller.send({"event": "dtmf", "streamSid": caller.stream_sid,
                               "dtmf": {"track": "inbound_track", "digit": digit}})
        await caller.silence(0.1)
        await caller.hang_up()
    start, *digits = events
    assert start.name == "call_start"
    assert start.data["from"] == "+15550001111"  # from the signed webhook, not the socket
    assert start.data["caller_city"] == "Leeds"
    assert start.data["stream_sid"] == "MZ0001"
    assert [(e.name, e.data["digit"]) for e in digits] == [("dtmf", "4"), ("dtmf", "#")]


async def test_mounted_in_a_backend_app() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    backend = Starlette(routes=[Mount("/phone", app=endpoint().app)])
    async with serving(backend) as base:
        response = await webhook(base, TOKEN, CALL, path="/phone/twilio/voice")
        assert response.status_code == 200, response.text
        url = stream_url(response.text)
        assert url.startswith("ws://127.0.0.1:") and "/phone/twilio/media/" in url
        caller = await TwilioCaller(url).connect()
        await caller.silence(0.1)
        await caller.hang_up()
        assert caller.closed.rcvd.code == 1000
        async with httpx.AsyncClient(verify=False) as client:
            assert (await client.get(base + "/phone/readyz")).json()["ready"]


async def test_mounted_behind_a_public_url_signs_and_streams_under_the_mount() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    public = "https://bot.example.com"
    backend = Starlette(routes=[Mount("/phone", app=endpoint(public_url=public).app)])
    async with serving(backend) as base:
        signed_as_twilio = await webhook(
            base, None, CALL, path="/phone/twilio/voice",
            signature=_signature(public + "/phone/twilio/voice"))
        assert signed_as_twilio.status_code == 200, signed_as_twilio.text
        url = stream_url(signed_as_twilio.text)
        assert url.startswith("wss://bot.example.com/phone/twilio/media/")


async def test_a_second_stream_for_a_live_call_is_refused() -> None:
    """Even with a ticket of its own (issued before the first stream connected)."""
    import websockets

    app = endpoint()
    async with serving(app) as base:
        first = await answer(base)
        app.tickets._by_call.clear()  # as if the webhook was replayed in the gap
        second = await answer(base)
        assert first != second
        caller = await TwilioCaller(first).connect()
        await caller.silence(0.1)
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(second)
        assert refused.value.response.status_code == 403  # at the handshake
        assert len(app.calls.active) == 1
        await caller.hang_up()
