"""The realtime server over a real websocket: bad input, auth, manual turns without words."""

from __future__ import annotations

import json
import socket
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from cascade.cli import app
from cascade.servers.realtime import RealtimeServer
from cascade.servers.realtime_protocol import encode_audio
from tests.realtime.conftest import AUTH, next_event, url


async def send(ws: Any, event: dict[str, Any] | str | bytes) -> None:
    await ws.send(event if isinstance(event, (str, bytes)) else json.dumps(event))


async def error_for(ws: Any, event: dict[str, Any] | str | bytes) -> dict[str, Any]:
    await send(ws, event)
    found: dict[str, Any] = (await next_event(ws, "error"))["error"]
    return found


async def test_bad_events_are_answered_with_errors_and_the_connection_stays_up(
        server: RealtimeServer) -> None:
    async with connect(url(server), additional_headers=AUTH) as ws:
        created = await next_event(ws, "session.created")
        assert created["session"]["audio"]["input"]["format"] == {"type": "audio/pcm",
                                                                  "rate": 24000}
        assert created["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"

        assert (await error_for(ws, "{not json"))["code"] == "invalid_json"
        assert (await error_for(ws, b"\x00\x01"))["code"] == "invalid_json"
        assert (await error_for(ws, "[1, 2]"))["code"] == "invalid_event"
        unknown = await error_for(ws, {"type": "response.dance", "event_id": "evt_7"})
        assert unknown["code"] == "unknown_event" and unknown["event_id"] == "evt_7"
        assert "input_audio_buffer.append" in unknown["message"]
        bad_b64 = await error_for(ws, {"type": "input_audio_buffer.append", "audio": "%%%",
                                       "event_id": "evt_8"})
        assert (bad_b64["code"], bad_b64["param"], bad_b64["event_id"]) == (
            "invalid_base64", "audio", "evt_8")
        wrong_type = await error_for(ws, {"type": "input_audio_buffer.append", "audio": 12})
        assert (wrong_type["code"], wrong_type["param"]) == ("invalid_value", "audio")
        odd = await error_for(ws, {"type": "input_audio_buffer.append", "audio": "AAAA"})
        assert odd["code"] == "invalid_audio"  # 3 bytes: not whole 16-bit samples
        ulaw = await error_for(ws, {"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}}})
        assert ulaw["param"] == "session.audio.input.format.type"
        no_cancel = await error_for(ws, {"type": "response.cancel"})
        assert no_cancel["code"] == "response_cancel_not_active"
        no_item = await error_for(ws, {"type": "conversation.item.truncate",
                                       "item_id": "item_x", "content_index": 0,
                                       "audio_end_ms": 10})
        assert no_item["code"] == "item_not_found"
        assert (await error_for(ws, {"type": "input_audio_buffer.commit"}))["code"] == \
            "invalid_request"  # server_vad commits by itself
        silent_vad = await error_for(ws, {"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"turn_detection": {
                "type": "server_vad", "create_response": False}}}}})
        assert silent_vad["code"] == "unsupported_value"

        await send(ws, {"type": "session.update", "session": {
            "type": "realtime", "instructions": "Be brief.",
            "audio": {"input": {"turn_detection": None}}}})
        updated = (await next_event(ws, "session.updated"))["session"]
        assert updated["instructions"] == "Be brief."
        assert updated["audio"]["input"]["turn_detection"] is None


async def test_manual_turns_without_words_fail_cleanly(server: RealtimeServer) -> None:
    quiet = encode_audio(np.zeros(2400, np.int16))  # 100 ms
    async with connect(url(server), additional_headers=AUTH) as ws:
        await send(ws, {"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"turn_detection": None}}}})
        await next_event(ws, "session.updated")
        await send(ws, {"type": "input_audio_buffer.append", "audio": quiet[:96]})
        too_small = await error_for(ws, {"type": "input_audio_buffer.commit"})
        assert too_small["code"] == "input_audio_buffer_commit_empty"
        nothing = await error_for(ws, {"type": "response.create"})
        assert nothing["code"] == "input_audio_buffer_empty"

        for _ in range(5):
            await send(ws, {"type": "input_audio_buffer.append", "audio": quiet})
        await send(ws, {"type": "input_audio_buffer.commit"})
        committed = await next_event(ws, "input_audio_buffer.committed")
        item = await next_event(ws, "conversation.item.created")
        assert item["item"]["id"] == committed["item_id"]
        assert item["item"]["role"] == "user"
        await send(ws, {"type": "response.create"})
        created = await next_event(ws, "response.created")
        busy = await error_for(ws, {"type": "response.create"})
        assert busy["code"] == "conversation_already_has_active_response"
        done = await next_event(ws, "response.done", timeout=3.0)  # reply_timeout is 1 s
        assert done["response"]["id"] == created["response"]["id"]
        assert done["response"]["status"] == "failed"
        assert "no reply" in done["response"]["status_details"]["error"]["message"]

        await send(ws, {"type": "input_audio_buffer.clear"})
        await next_event(ws, "input_audio_buffer.cleared")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic dGVzdA=="}])
async def test_a_missing_or_wrong_token_is_refused(server: RealtimeServer,
                                                   headers: dict[str, str]) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url(server), additional_headers=headers):
            pass
    assert refused.value.response.status_code == 401


async def test_other_paths_are_not_found(server: RealtimeServer) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url(server, "/v1/chat"), additional_headers=AUTH):
            pass
    assert refused.value.response.status_code == 404


def test_cascade_serve_reports_a_busy_port_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--protocol", "openai-realtime",
                                          "--pipeline", "scripted", "--port", str(port)])
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
