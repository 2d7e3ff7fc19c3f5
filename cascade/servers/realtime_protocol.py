"""The subset of the OpenAI Realtime protocol (GA event names) that Cascade speaks.

Both ends use it: the server (``cascade.servers.realtime``) and the client
adapter (``cascade.adapters.openai_realtime``). Client events are checked by
pydantic models, so a malformed event becomes a ``RealtimeProtocolError`` that
names the field; server events are plain dicts built by the functions below,
shaped like the ``openai`` SDK's ``openai.types.realtime`` models. Audio on the
wire is base64 PCM16 little-endian mono at 24 kHz.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from typing import Any, Literal

import numpy as np
import soxr
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cascade.errors import CascadeError
from cascade.frames import PCM

WIRE_RATE = 24000
MIN_COMMIT_SECONDS = 0.1


class RealtimeProtocolError(CascadeError):
    """A client event the server cannot accept; sent back as an ``error`` event."""

    def __init__(self, message: str, *, code: str, param: str | None = None,
                 event_id: str | None = None, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.code = code
        self.param = param
        self.event_id = event_id
        self.kind = kind


def new_id(prefix: str) -> str:
    """A fresh identifier in the protocol's style: ``item_…``, ``resp_…``, ``event_…``."""
    return f"{prefix}_{secrets.token_hex(10)}"


# --- audio ---------------------------------------------------------------------


def encode_audio(pcm: PCM) -> str:
    return base64.b64encode(pcm.astype("<i2").tobytes()).decode("ascii")


def decode_audio(data: str) -> PCM:
    """Base64 PCM16 LE -> int16 samples; a ``RealtimeProtocolError`` when it is not."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RealtimeProtocolError("audio is not valid base64", code="invalid_base64",
                                    param="audio") from None
    if len(raw) % 2:
        raise RealtimeProtocolError(
            f"audio holds {len(raw)} bytes, not a whole number of 16-bit samples "
            "(the format is PCM16 little-endian mono at 24 kHz)",
            code="invalid_audio", param="audio")
    return np.frombuffer(raw, dtype="<i2").astype(np.int16)


class Resampler:
    """Streaming soxr resampler for PCM16 (chunk edges stay seamless)."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.rate_in = rate_in
        self.rate_out = rate_out
        self._stream: Any = (None if rate_in == rate_out
                             else soxr.ResampleStream(rate_in, rate_out, 1, dtype="int16"))

    def push(self, pcm: PCM) -> PCM:
        if self._stream is None or not len(pcm):
            return pcm
        out: PCM = self._stream.resample_chunk(pcm)
        return out

    def flush(self) -> PCM:
        """The samples still held; the stream starts afresh afterwards."""
        if self._stream is None:
            return np.zeros(0, np.int16)
        out: PCM = self._stream.resample_chunk(np.zeros(0, np.int16), last=True)
        self._stream = soxr.ResampleStream(self.rate_in, self.rate_out, 1, dtype="int16")
        return out


# --- client events ---------------------------------------------------------------


class _Loose(BaseModel):
    """Tolerates fields Cascade does not use (tools, tracing, ...): they are ignored."""

    model_config = ConfigDict(extra="ignore")


class AudioFormat(_Loose):
    type: Literal["audio/pcm"] = Field("audio/pcm", description="only PCM16 is spoken")
    rate: Literal[24000] = 24000


class TurnDetection(BaseModel):
    """``server_vad``/``semantic_vad``: the pipeline's own VAD and turn controller decide."""

    model_config = ConfigDict(extra="allow")

    type: Literal["server_vad", "semantic_vad"]
    create_response: bool = True
    interrupt_response: bool = True


class AudioInput(_Loose):
    format: AudioFormat | None = None
    turn_detection: TurnDetection | None = None
    transcription: dict[str, Any] | None = None
    noise_reduction: dict[str, Any] | None = None


class AudioOutput(_Loose):
    format: AudioFormat | None = None
    voice: str | dict[str, Any] | None = None
    speed: float | None = None


class AudioConfig(_Loose):
    input: AudioInput | None = None
    output: AudioOutput | None = None


class SessionPatch(_Loose):
    type: Literal["realtime"] = "realtime"
    model: str | None = None
    instructions: str | None = None
    output_modalities: list[Literal["audio"]] | None = None
    audio: AudioConfig | None = None


class ClientEvent(_Loose):
    event_id: str | None = None


class SessionUpdate(ClientEvent):
    type: Literal["session.update"]
    session: SessionPatch


class AudioAppend(ClientEvent):
    type: Literal["input_audio_buffer.append"]
    audio: str


class AudioCommit(ClientEvent):
    type: Literal["input_audio_buffer.commit"]


class AudioClear(ClientEvent):
    type: Literal["input_audio_buffer.clear"]


class ResponseCreate(ClientEvent):
    type: Literal["response.create"]
    response: dict[str, Any] | None = None


class ResponseCancel(ClientEvent):
    type: Literal["response.cancel"]
    response_id: str | None = None


class ItemTruncate(ClientEvent):
    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: int = Field(0, ge=0)
    audio_end_ms: int = Field(ge=0)


CLIENT_EVENTS: dict[str, type[ClientEvent]] = {
    "session.update": SessionUpdate,
    "input_audio_buffer.append": AudioAppend,
    "input_audio_buffer.commit": AudioCommit,
    "input_audio_buffer.clear": AudioClear,
    "response.create": ResponseCreate,
    "response.cancel": ResponseCancel,
    "conversation.item.truncate": ItemTruncate,
}
UNSUPPORTED_EVENTS = ("conversation.item.create", "conversation.item.delete",
                      "conversation.item.retrieve", "output_audio_buffer.clear")


def parse_client_event(raw: str | bytes) -> ClientEvent:
    """One websocket message -> a validated client event, or a ``RealtimeProtocolError``."""
    if isinstance(raw, bytes):
        raise RealtimeProtocolError("binary messages are not part of the protocol: send "
                                    "each event as a JSON text message", code="invalid_json")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise RealtimeProtocolError(f"the message is not valid JSON ({exc})",
                                    code="invalid_json") from None
    if not isinstance(data, dict):
        raise RealtimeProtocolError("an event must be a JSON object with a 'type'",
                                    code="invalid_event")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    kind = data.get("type")
    if not isinstance(kind, str):
        raise RealtimeProtocolError("the event has no 'type' string", code="invalid_event",
                                    param="type", event_id=event_id)
    model = CLIENT_EVENTS.get(kind)
    if model is None:
        if kind in UNSUPPORTED_EVENTS:
            message = f"'{kind}' is not supported by this Cascade server"
        else:
            message = (f"unknown event type '{kind}'; this server accepts: "
                       f"{', '.join(CLIENT_EVENTS)}")
        raise RealtimeProtocolError(message, code="unknown_event", param="type",
                                    event_id=event_id)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise RealtimeProtocolError(f"{kind}: {param}: {first['msg']}", code="invalid_value",
                                    param=param, event_id=event_id) from None


# --- the session ---------------------------------------------------------------------


class SessionState(BaseModel):
    """The effective session configuration, as echoed in ``session.created/updated``."""

    id: str = Field(default_factory=lambda: new_id("sess"))
    model: str = "cascade"
    instructions: str = ""
    voice: str | dict[str, Any] = "cascade"
    turn_detection: TurnDetection | None = Field(
        default_factory=lambda: TurnDetection(type="server_vad"))
    transcription: dict[str, Any] | None = None

    @property
    def manual(self) -> bool:
        """No server VAD: the client commits input and asks for responses."""
        return self.turn_detection is None

    def apply(self, patch: SessionPatch) -> None:
        """Update from a ``session.update``; fields left out keep their value."""
        audio_in = patch.audio.input if patch.audio else None
        audio_out = patch.audio.output if patch.audio else None
        if audio_in is not None and "turn_detection" in audio_in.model_fields_set:
            detection = audio_in.turn_detection
            if detection is not None and not (detection.create_response
                                              and detection.interrupt_response):
                raise RealtimeProtocolError(
                    "create_response and interrupt_response cannot be turned off: with "
                    "server_vad the pipeline's turn controller answers and handles barge-in; "
                    "set turn_detection to null to commit turns and ask for responses yourself",
                    code="unsupported_value", param="session.audio.input.turn_detection")
            self.turn_detection = detection
        if audio_in is not None and "transcription" in audio_in.model_fields_set:
            self.transcription = audio_in.transcription
        if audio_out is not None and audio_out.voice is not None:
            self.voice = audio_out.voice
        if patch.instructions is not None:
            self.instructions = patch.instructions

    def wire(self) -> dict[str, Any]:
        pcm = {"type": "audio/pcm", "rate": WIRE_RATE}
        detection = None if self.turn_detection is None else self.turn_detection.model_dump()
        return {
            "type": "realtime", "object": "realtime.session", "id": self.id,
            "model": self.model, "instructions": self.instructions,
            "output_modalities": ["audio"], "tools": [], "tool_choice": "auto",
            "max_output_tokens": "inf",
            "audio": {
                "input": {"format": pcm, "turn_detection": detection,
                          "transcription": self.transcription, "noise_reduction": None},
                "output": {"format": pcm, "voice": self.voice, "speed": 1.0},
            },
        }


# --- server events ----------------------------------------------------------------------


def server_event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": new_id("event"), **fields}


def error_event(error: RealtimeProtocolError) -> dict[str, Any]:
    return server_event("error", error={
        "type": error.kind, "code": error.code, "message": str(error),
        "param": error.param, "event_id": error.event_id})


def user_item(item_id: str, transcript: str | None) -> dict[str, Any]:
    return {"id": item_id, "object": "realtime.item", "type": "message", "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": transcript}]}


def assistant_item(item_id: str, transcript: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "object": "realtime.item", "type": "message",
            "role": "assistant", "status": status,
            "content": [{"type": "output_audio", "transcript": transcript}]}


def response_object(response_id: str, status: str, output: list[dict[str, Any]], *,
                    voice: str | dict[str, Any], reason: str | None = None,
                    error: str | None = None) -> dict[str, Any]:
    details: dict[str, Any] | None = None
    if status != "in_progress" and (reason or error):
        details = {"type": status, "reason": reason,
                   "error": None if error is None else {"type": "server_error",
                                                        "code": "no_reply",
                                                        "message": error}}
    return {"id": response_id, "object": "realtime.response", "status": status,
            "status_details": details, "output": output, "output_modalities": ["audio"],
            "conversation_id": None, "usage": None, "metadata": None,
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": WIRE_RATE},
                                 "voice": voice}}}
