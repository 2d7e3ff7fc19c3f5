"""A tiny OpenAI-compatible chat server whose ``model`` field picks a behaviour:
``ok``, ``status-401``, ``status-503``, ``flaky-N-<tag>`` (429 N times, then ok),
``malformed``, ``cut`` (connection dropped mid-reply), ``tools``, ``error-event``,
``slow`` (2 s before the first token)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

REPLY = "Hello there, my friend. It is a lovely day today, is it not?"


def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    body = {"id": "c1", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n"


def words(text: str) -> list[str]:
    parts = text.split(" ")
    return [parts[0], *(" " + p for p in parts[1:])]


class FaultLLM:
    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.headers: list[dict[str, str]] = []
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.chat,
                                           methods=["POST"])])

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.headers.append(dict(request.headers))
        model = str(body.get("model"))
        self.seen[model] += 1
        if model.startswith("status-"):
            code = int(model.split("-")[1])
            auth = request.headers.get("authorization", "")
            return JSONResponse({"error": {"message": f"Incorrect API key provided: {auth}"}},
                                status_code=code)
        if model.startswith("flaky-"):
            failures = int(model.split("-")[1])
            if self.seen[model] <= failures:
                return JSONResponse({"error": {"message": "slow down"}}, status_code=429,
                                    headers={"Retry-After": "0"})
            model = "ok"
        return StreamingResponse(self.events(model), media_type="text/event-stream")

    async def events(self, model: str) -> AsyncIterator[str]:
        yield ": keep-alive\n\n"
        if model == "slow":
            await asyncio.sleep(2.0)
        yield chunk({"role": "assistant"})
        if model == "tools":
            yield chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                         "function": {"name": "get_weather", "arguments": ""}}]})
            for part in ['{"city"', ': "Par', 'is"}']:
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
            yield chunk({}, "tool_calls")
            yield "data: [DONE]\n\n"
            return
        for index, word in enumerate(words(REPLY)):
            if model == "malformed" and index == 3:
                yield "data: {\"choices\": [ this is not json\n\n"
                return
            if model == "error-event" and index == 3:
                yield f"data: {json.dumps({'error': {'message': 'model overloaded'}})}\n\n"
                return
            if model == "cut" and index == 3:
                raise ConnectionAbortedError("cut mid-reply (test)")
            yield chunk({"content": word})
        yield chunk({}, "stop")
        yield "data: [DONE]\n\n"
