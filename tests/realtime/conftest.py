"""A Cascade pipeline behind a real OpenAI-Realtime websocket on 127.0.0.1, for these tests."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cascade import Pipeline, parse_pipeline
from cascade.servers.realtime import RealtimeServer, start_server

TOKEN = "test-token-not-a-secret"
KEY_ENV = "CASCADE_TEST_REALTIME_KEY"
SHORT_REPLY = "You said {text}."
LONG_REPLY = "You said {text}. That sounds interesting, please tell me a little more about it."


@functools.cache
def server_pipeline(template: str = SHORT_REPLY) -> Pipeline:
    """The scripted pipeline (energy VAD, scripted ASR, echo LLM, tone TTS), quick to answer."""
    return Pipeline(parse_pipeline({"name": "scripted-realtime", "stages": {
        "vad": {"adapter": "energy-vad"},
        "asr": {"adapter": "scripted-asr",
                "options": {"script": ["hello there", "tell me more", "goodbye"]}},
        "turn": {"adapter": "turn"},
        "llm": {"adapter": "echo-llm",
                "options": {"first_token_delay": 0.05, "template": template}},
        "tts": {"adapter": "tone-tts",
                "options": {"seconds_per_word": 0.15, "first_byte_delay": 0.03}},
    }}))


@pytest.fixture
async def server() -> AsyncIterator[RealtimeServer]:
    running = await start_server(server_pipeline(), "127.0.0.1", 0, TOKEN, reply_timeout=1.0)
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def chatty_server() -> AsyncIterator[RealtimeServer]:
    """Replies long enough (about 2 s) to be interrupted."""
    running = await start_server(server_pipeline(LONG_REPLY), "127.0.0.1", 0, TOKEN)
    try:
        yield running
    finally:
        await running.close()


def url(server: RealtimeServer, path: str = "/v1/realtime?model=cascade") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def next_event(ws: Any, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    """Read server events until one of type ``kind`` arrives."""
    async def find() -> dict[str, Any]:
        async for raw in ws:
            event: dict[str, Any] = json.loads(raw)
            if event["type"] == kind:
                return event
        raise AssertionError(f"the connection closed before a {kind} event")

    return await asyncio.wait_for(find(), timeout)
