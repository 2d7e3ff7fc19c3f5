"""OpenAI-compatible chat completions, streamed over HTTP (OpenAI, llama.cpp server, vLLM...).

``OpenAILLM`` posts the conversation to ``{base_url}/chat/completions`` with
``stream: true`` and reads the server-sent events: each ``data:`` line is a
JSON chunk whose ``choices[0].delta.content`` is reply text, until
``data: [DONE]``. Tool/function calls arrive as ``delta.tool_calls`` fragments;
they are assembled, recorded as ``tool_call`` spans and pushed downstream as
``ToolCallRequested`` frames once the reply is complete (the voice reply itself is
the text). Connection failures, 429 and 5xx are retried with backoff before the
first token (``provider.Requester``); afterwards a failure is a ``ProviderError``
the graph turns into an ``error`` span. A barge-in cancels the stage's task,
which closes the HTTP response at once, so the server stops generating.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field

from cascade.adapters.provider import ProviderError, RemoteOptions, Requester, make_client
from cascade.adapters.secrets import Secret, require_secret
from cascade.frames import Frame, ToolCallRequested
from cascade.registry import Capabilities
from cascade.stages.llm import LLMOptions, LLMStage, Message

if TYPE_CHECKING:
    import httpx


class OpenAILLMOptions(LLMOptions, RemoteOptions):
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str | None = "OPENAI_API_KEY"
    model: str = Field("gpt-4o-mini", description="model name the server knows")
    tools: list[dict[str, Any]] | None = Field(None, description="OpenAI tool definitions")


@dataclass
class ToolCall:
    """One tool call assembled from its streamed fragments."""

    id: str = ""
    name: str = ""
    arguments: str = ""


async def sse_events(response: httpx.Response) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined by newlines)."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        # comments (":") and event/id/retry fields carry nothing we use
    if data:
        yield "\n".join(data)


class OpenAILLM(LLMStage):
    """Any OpenAI-compatible chat completions endpoint, streamed token by token."""

    Options = OpenAILLMOptions
    extra = "openai"
    requires = ("httpx",)
    capabilities = Capabilities(streaming=True, languages=("*",), sample_rates=())

    def __init__(self, options: OpenAILLMOptions) -> None:
        super().__init__(options)
        self.remote = options
        self._secret: Secret | None = None
        if options.api_key_env:
            self._secret = require_secret(options.api_key_env, "openai-llm")
        self._requester: Requester | None = None
        self.response: httpx.Response | None = None
        """The reply being streamed (kept so a cancelled turn can close it)."""

    async def start(self) -> None:
        headers = {"Authorization": f"Bearer {self._secret.reveal()}"} if self._secret else {}
        self._requester = Requester("openai-llm", self.remote, make_client(self.remote, headers),
                                    self.ctx.clock, self._secret,
                                    self.remote.api_key_env or "api_key_env")
        await super().start()

    async def stop(self) -> None:
        await self._close_response()
        if self._requester is not None and self._requester.client is not None:
            await self._requester.client.aclose()

    async def process(self, frame: Frame) -> None:
        try:
            await super().process(frame)
        finally:  # also on cancellation: stop the server generating a reply nobody hears
            await self._close_response()

    async def _close_response(self) -> None:
        response, self.response = self.response, None
        if response is not None:
            await response.aclose()

    def _body(self, messages: list[Message]) -> dict[str, Any]:
        opts = self.remote
        body: dict[str, Any] = {"model": opts.model, "messages": messages, "stream": True,
                                "max_tokens": opts.max_tokens, "temperature": opts.temperature}
        if opts.tools:
            body["tools"] = opts.tools
        return body

    async def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        import httpx

        assert self._requester is not None, "OpenAILLM.stream before start()"
        where = f"adapter 'openai-llm' ({self.remote.base_url}, model {self.remote.model})"
        self.response = response = await self._requester.open(
            "POST", "chat/completions", json=self._body(messages))
        calls: dict[int, ToolCall] = {}
        done = False
        try:
            async for data in sse_events(response):
                if data.strip() == "[DONE]":
                    done = True
                    break
                for delta in self._deltas(data, calls, where):
                    yield delta
        except httpx.TransportError as exc:
            raise ProviderError(f"{where}: the connection broke mid-reply ({exc}); the "
                                "reply so far was kept", retryable=True) from None
        finally:
            self._trace_tool_calls(calls)
            await self._close_response()
        if not done:
            raise ProviderError(f"{where}: the stream ended without 'data: [DONE]' (cut "
                                "mid-reply?); the reply so far was kept", retryable=True)
        for _, call in sorted(calls.items()):
            await self.push(ToolCallRequested(
                conversation=self.ctx.conversation, turn=self.turn, time=self.now(),
                call_id=call.id, name=call.name, arguments=call.arguments))

    def _deltas(self, data: str, calls: dict[int, ToolCall], where: str) -> list[str]:
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise ProviderError(f"{where}: malformed stream event (not JSON): {data[:120]!r}; "
                                "is base_url an OpenAI-compatible API?") from None
        if not isinstance(chunk, dict):
            raise ProviderError(f"{where}: stream event is not a JSON object: {data[:120]!r}")
        if "error" in chunk:
            raise ProviderError(f"{where}: the server reported an error mid-stream: "
                                f"{str(chunk['error'])[:200]}", retryable=True)
        texts: list[str] = []
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise ProviderError(f"{where}: malformed chunk (delta is not an object)")
            if delta.get("content"):
                texts.append(str(delta["content"]))
            for fragment in delta.get("tool_calls") or []:
                call = calls.setdefault(int(fragment.get("index", 0)), ToolCall())
                call.id = fragment.get("id") or call.id
                function = fragment.get("function") or {}
                call.name += function.get("name") or ""
                call.arguments += function.get("arguments") or ""
        return texts

    def _trace_tool_calls(self, calls: dict[int, ToolCall]) -> None:
        now = self.now()
        for index, call in sorted(calls.items()):
            self.ctx.tracer.record("tool_call", self.name, self.turn, now, now,
                                   index=index, id=call.id, tool=call.name,
                                   arguments=call.arguments[:2000])
