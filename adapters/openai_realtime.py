"""A speech-to-speech model behind the OpenAI Realtime protocol, as a fused stage.

Talks to OpenAI's Realtime API, or to any server speaking it - including
``cascade serve --protocol openai-realtime``, which puts a whole Cascade
pipeline there, so a cascade and a fused model can be compared head to head::

    stages:
      vad:   {adapter: silero}
      turn:  {adapter: turn, options: {require_transcript: false}}
      fused: {adapter: openai-realtime, options: {base_url: "http://127.0.0.1:8765/v1"}}

It uses ``websockets`` directly (the ``[realtime]`` extra), not the ``openai``
SDK, and connects only to the configured ``base_url``: nothing is sent anywhere
by default. The API key is read from the environment variable named by
``api_key_env`` and is never logged.

Turn-taking (``turn_taking``):

* ``controller``: the session runs with ``turn_detection: null``; at each
  ``EndOfTurn`` of our controller the stage commits the audio and asks for a
  response.
* ``model``: ``server_vad``; the server's speech start/stop decide (a commit by
  the server ends the turn, at the time its speech stop reported).

A cut reply sends ``response.cancel`` (while the server is still generating)
and ``conversation.item.truncate`` at the audio the caller actually heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from cascade.errors import CascadeError, ConfigError
from cascade.frames import PCM
from cascade.registry import Capabilities
from cascade.servers.realtime_protocol import (
    WIRE_RATE,
    RealtimeProtocolError,
    Resampler,
    decode_audio,
    encode_audio,
)
from cascade.stages.fused import (
    AgentAudioChunk,
    AgentText,
    FusedEvent,
    FusedOptions,
    FusedSession,
    FusedStage,
    ReplyDone,
    UserStarted,
    UserStopped,
    UserText,
)

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

log = logging.getLogger("cascade.openai_realtime")
NO_BASE_URL = ("openai-realtime: options.base_url is not set; set it to the Realtime API root "
               "(https://api.openai.com/v1) or to a Cascade server (http://127.0.0.1:8765/v1 "
               "from `cascade serve --protocol openai-realtime`)")
_AUDIO_DELTAS = ("response.output_audio.delta", "response.audio.delta")
_TEXT_DELTAS = ("response.output_audio_transcript.delta", "response.audio_transcript.delta",
                "response.output_text.delta", "response.text.delta")


class OpenAIRealtimeOptions(FusedOptions):
    base_url: str | None = Field(None, description="API root, e.g. https://api.openai.com/v1 "
                                 "or http://127.0.0.1:8765/v1 (cascade serve); /realtime is "
                                 "appended, http becomes ws")
    model: str = Field("gpt-realtime", description="sent as ?model=")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding "
                             "the key (no key: no Authorization header)")
    voice: str | None = None
    instructions: str | None = None
    transcription_model: str | None = Field(
        "gpt-4o-mini-transcribe", description="transcribe the caller (for the asr span); "
        "None: off")
    sample_rate: Literal[24000] = Field(24000, description="PCM rate on the wire (the "
                                        "protocol's only PCM rate)")
    connect_timeout: float = Field(10.0, gt=0.0)


def realtime_url(base_url: str, model: str) -> str:
    """``http(s)://host/v1`` -> ``ws(s)://host/v1/realtime?model=…``."""
    from urllib.parse import quote

    scheme, sep, rest = base_url.partition("://")
    if not sep:
        raise ConfigError(f'openai-realtime: base_url "{base_url}" needs a scheme, e.g. '
                          "http://127.0.0.1:8765/v1")
    scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
    path = rest.rstrip("/")
    if not path.endswith("/realtime"):
        path += "/realtime"
    return f"{scheme}://{path}?model={quote(model)}"


class RealtimeSocketSession:
    """A ``FusedSession`` over one Realtime websocket."""

    def __init__(self, ws: ClientConnection, options: OpenAIRealtimeOptions,
                 pipeline_rate: int) -> None:
        self.ws = ws
        self.options = options
        self._up = Resampler(pipeline_rate, WIRE_RATE)
        self._down = Resampler(WIRE_RATE, pipeline_rate)
        self._rate = pipeline_rate
        self._events: asyncio.Queue[FusedEvent | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._response: str | None = None  # generating now
        self._stale: set[str] = set()
        self._item: str | None = None  # assistant item last heard
        self._item_samples = 0
        self._truncated: str | None = None
        self._speech_end = 0.0
        self.errors: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, options: OpenAIRealtimeOptions, pipeline_rate: int
                   ) -> RealtimeSocketSession:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus, WebSocketException

        if not options.base_url:
            raise ConfigError(NO_BASE_URL)
        url = realtime_url(options.base_url, options.model)
        key = os.environ.get(options.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            ws = await connect(url, additional_headers=headers, max_size=None,
                               compression=None, open_timeout=options.connect_timeout)
        except InvalidStatus as exc:
            status = exc.response.status_code
            hint = (f" (check the key in ${options.api_key_env})" if status in (401, 403)
                    else "")
            raise CascadeError(f"openai-realtime: {url} refused the connection with HTTP "
                               f"{status}{hint}") from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise CascadeError(f"openai-realtime: cannot connect to {url}: {exc}") from None
        session = cls(ws, options, pipeline_rate)
        try:
            await asyncio.wait_for(session._configure(), options.connect_timeout)
        except TimeoutError:
            await ws.close()
            raise CascadeError(f"openai-realtime: {url} did not confirm the session within "
                               f"{options.connect_timeout:g} s") from None
        except BaseException:
            await ws.close()
            raise
        session._reader = asyncio.create_task(session._read())
        return session

    async def _send(self, kind: str, **fields: Any) -> None:
        await self.ws.send(json.dumps({"type": kind, **fields}))

    async def _configure(self) -> None:
        """Wait for ``session.created``, send our settings, wait for ``session.updated``."""
        opts = self.options
        pcm = {"type": "audio/pcm", "rate": WIRE_RATE}
        detection = None if opts.turn_taking == "controller" else {
            "type": "server_vad", "create_response": True, "interrupt_response": True}
        audio_in: dict[str, Any] = {"format": pcm, "turn_detection": detection}
        if opts.transcription_model:
            audio_in["transcription"] = {"model": opts.transcription_model}
        audio_out: dict[str, Any] = {"format": pcm}
        if opts.voice:
            audio_out["voice"] = opts.voice
        session: dict[str, Any] = {"type": "realtime", "output_modalities": ["audio"],
                                   "audio": {"input": audio_in, "output": audio_out}}
        if opts.instructions is not None:
            session["instructions"] = opts.instructions
        sent = False
        async for raw in self.ws:
            event = json.loads(raw)
            kind = event.get("type")
            if kind == "error":
                raise CascadeError(f"openai-realtime: the server rejected the session: "
                                   f"{event.get('error', {}).get('message')}")
            if kind == "session.created" and not sent:
                await self._send("session.update", session=session)
                sent = True
            elif kind == "session.updated":
                return
        raise CascadeError("openai-realtime: the server closed the connection while the "
                           "session was being set up")

    # --- FusedSession ---------------------------------------------------------------

    async def send_audio(self, pcm: PCM, sample_rate: int) -> None:
        if sample_rate != self._up.rate_in:
            self._up = Resampler(sample_rate, WIRE_RATE)
        wire = self._up.push(pcm)
        if len(wire):
            await self._send("input_audio_buffer.append", audio=encode_audio(wire))

    async def commit(self) -> None:
        if self._response is not None:  # a new turn supersedes a reply still generating
            self._stale.add(self._response)
            await self._send("response.cancel", response_id=self._response)
            self._response = None
        tail = self._up.flush()
        if len(tail):
            await self._send("input_audio_buffer.append", audio=encode_audio(tail))
        await self._send("input_audio_buffer.commit")
        await self._send("response.create")

    async def cancel(self, played_seconds: float) -> None:
        generating = self._response is not None
        if self._response is not None:
            await self._send("response.cancel", response_id=self._response)
        item = self._item
        if item is not None and item != self._truncated and (generating or played_seconds > 0):
            heard = min(int(played_seconds * 1000), self._item_samples * 1000 // WIRE_RATE)
            await self._send("conversation.item.truncate", item_id=item, content_index=0,
                             audio_end_ms=max(0, heard))
            self._truncated = item

    async def events(self) -> AsyncIterator[FusedEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.ws.close()
        self._events.put_nowait(None)

    # --- server events -----------------------------------------------------------------

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in self.ws:
                try:
                    self._on_event(json.loads(raw))
                except (ValueError, KeyError, TypeError, RealtimeProtocolError) as exc:
                    self.errors.append({"message": f"unreadable server event: {exc}"})
        except ConnectionClosed:
            pass
        finally:
            self._events.put_nowait(None)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        put = self._events.put_nowait
        response_id = event.get("response_id") or (event.get("response") or {}).get("id")
        if response_id is not None and response_id in self._stale:
            if kind == "response.done":
                self._stale.discard(response_id)
            return
        if kind == "input_audio_buffer.speech_started":
            put(UserStarted(event["audio_start_ms"] / 1000))
        elif kind == "input_audio_buffer.speech_stopped":
            self._speech_end = event["audio_end_ms"] / 1000
        elif kind == "input_audio_buffer.committed" and self.options.turn_taking == "model":
            put(UserStopped(self._speech_end))
        elif kind == "conversation.item.input_audio_transcription.completed":
            put(UserText(event["transcript"]))
        elif kind == "response.created":
            self._response = response_id
        elif kind == "response.output_item.added":
            self._item, self._item_samples = event["item"]["id"], 0
        elif kind in _TEXT_DELTAS:
            put(AgentText(event["delta"]))
        elif kind in _AUDIO_DELTAS:
            wire = decode_audio(event["delta"])
            if event.get("item_id") != self._item:
                self._item, self._item_samples = event.get("item_id"), 0
            self._item_samples += len(wire)
            self._agent_audio(self._down.push(wire))
        elif kind == "response.done":
            status = event["response"].get("status")
            tail = self._down.flush()
            if status == "completed":
                self._agent_audio(tail)
            if self._response == response_id:
                self._response = None
            put(ReplyDone(cancelled=status != "completed"))
        elif kind == "error":
            error = event.get("error") or {}
            self.errors.append(error)
            if error.get("code") != "response_cancel_not_active":  # a cancel that raced its end
                log.warning("openai-realtime: the server reported %s: %s", error.get("code"),
                            error.get("message"))

    def _agent_audio(self, pcm: PCM) -> None:
        if len(pcm):
            self._events.put_nowait(AgentAudioChunk(np.asarray(pcm, np.int16), self._rate))


class OpenAIRealtime(FusedStage):
    """OpenAI Realtime, or any server speaking its protocol, as a fused stage."""

    Options = OpenAIRealtimeOptions
    extra = "realtime"
    requires = ("websockets",)
    capabilities = Capabilities(streaming=True, sample_rates=(24000,))

    def __init__(self, options: OpenAIRealtimeOptions) -> None:
        super().__init__(options)
        self.realtime = options
        if not options.base_url:
            raise ConfigError(NO_BASE_URL)

    async def open_session(self) -> FusedSession:
        return await RealtimeSocketSession.open(self.realtime, self.ctx.sample_rate)
