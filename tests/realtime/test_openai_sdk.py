"""The official ``openai`` SDK's realtime client talking to a Cascade pipeline."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
import pytest

from cascade.audio import resample
from cascade.servers.realtime import RealtimeServer
from cascade.servers.realtime_protocol import encode_audio
from tests.conftest import RATE, babble, script, silence
from tests.realtime.conftest import TOKEN

openai = pytest.importorskip("openai")


def caller_24k(*parts: np.ndarray) -> np.ndarray:
    return resample(script(*parts), RATE, 24000)


async def append_all(connection: Any, audio: np.ndarray, pace: float) -> None:
    """100 ms appends, ``pace`` seconds apart (faster than real time when < 0.1)."""
    for start in range(0, len(audio), 2400):
        await connection.input_audio_buffer.append(audio=encode_audio(audio[start:start + 2400]))
        await asyncio.sleep(pace)


async def events_until(connection: Any, kind: str, seen: list[Any], timeout: float = 8.0
                       ) -> Any:
    async def find() -> Any:
        async for event in connection:
            seen.append(event)
            if event.type == kind:
                return event
        raise AssertionError(f"the connection closed before {kind}")

    return await asyncio.wait_for(find(), timeout)


async def test_sdk_server_vad_conversation(server: RealtimeServer) -> None:
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=TOKEN)
    seen: list[Any] = []
    async with client.realtime.connect(model="cascade-scripted") as connection:
        created = await events_until(connection, "session.created", seen)
        assert created.session.model == "cascade-scripted"
        await connection.session.update(session={
            "type": "realtime", "instructions": "Answer briefly.",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                "turn_detection": {"type": "server_vad"}}}})
        updated = await events_until(connection, "session.updated", seen)
        assert updated.session.instructions == "Answer briefly."
        await append_all(connection, caller_24k(silence(0.2), babble(0.8, 1), silence(0.8)),
                         pace=0.05)
        done = await events_until(connection, "response.done", seen)
    await client.close()

    kinds = [e.type for e in seen]
    for kind in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                 "input_audio_buffer.committed", "conversation.item.created",
                 "conversation.item.input_audio_transcription.completed", "response.created",
                 "response.output_audio_transcript.delta", "response.output_audio.delta"):
        assert kind in kinds, kind
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index(
        "input_audio_buffer.committed") < kinds.index("response.created")
    started = next(e for e in seen if e.type == "input_audio_buffer.speech_started")
    assert 150 <= started.audio_start_ms <= 300  # the babble starts at 200 ms
    heard = next(e for e in seen
                 if e.type == "conversation.item.input_audio_transcription.completed")
    assert heard.transcript == "hello there"
    assert done.response.status == "completed"
    transcript = "".join(e.delta for e in seen
                         if e.type == "response.output_audio_transcript.delta")
    assert transcript == "You said hello there."
    assert done.response.output[0].content[0].transcript == transcript
    audio = b"".join(base64.b64decode(e.delta) for e in seen
                     if e.type == "response.output_audio.delta")
    seconds = len(audio) / 2 / 24000
    assert abs(seconds - 4 * 0.15) < 0.05  # four tone words at 24 kHz


async def test_sdk_manual_turn_cancel_and_truncate(chatty_server: RealtimeServer) -> None:
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{chatty_server.port}/v1",
                                api_key=TOKEN)
    seen: list[Any] = []
    async with client.realtime.connect(model="cascade") as connection:
        await connection.session.update(session={
            "type": "realtime", "audio": {"input": {"turn_detection": None}}})
        await events_until(connection, "session.updated", seen)
        await append_all(connection, caller_24k(silence(0.2), babble(0.8, 1), silence(0.3)),
                         pace=0.0)
        await connection.input_audio_buffer.commit()
        committed = await events_until(connection, "input_audio_buffer.committed", seen)
        await connection.response.create()
        created = await events_until(connection, "response.created", seen)
        first = await events_until(connection, "response.output_audio.delta", seen)
        assert first.response_id == created.response.id
        await asyncio.sleep(0.3)
        await connection.response.cancel()
        done = await events_until(connection, "response.done", seen)
        assert done.response.status == "cancelled"
        assert done.response.status_details.reason == "client_cancelled"
        await connection.conversation.item.truncate(item_id=first.item_id, content_index=0,
                                                    audio_end_ms=200)
        truncated = await events_until(connection, "conversation.item.truncated", seen)
        assert (truncated.item_id, truncated.audio_end_ms) == (first.item_id, 200)
    await client.close()
    heard = [e for e in seen if e.type == "conversation.item.input_audio_transcription.completed"]
    assert [(e.item_id, e.transcript) for e in heard] == [(committed.item_id, "hello there")]
    sent = sum(len(base64.b64decode(e.delta)) for e in seen
               if e.type == "response.output_audio.delta") / 2 / 24000
    assert 0.2 < sent < 1.2  # cut well before the ~2.5 s reply ended
