"""A local OpenAI-compatible speech server backed by our own models: faster-whisper
answers ``POST /v1/audio/transcriptions`` (multipart, json/verbose_json) and Piper
streams ``POST /v1/audio/speech`` as raw 24 kHz PCM16, sentence by sentence."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from email.parser import BytesParser
from email.policy import default
from typing import Any

import numpy as np
import soundfile as sf
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cascade.audio import resample

PCM_RATE = 24000


def form_fields(content_type: str, body: bytes) -> dict[str, bytes]:
    """The parts of a multipart/form-data body by field name (stdlib parser)."""
    message = BytesParser(policy=default).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = payload
    return fields


class SpeechServer:
    def __init__(self) -> None:
        from cascade.adapters.faster_whisper import FasterWhisperASR, FasterWhisperOptions
        from cascade.adapters.piper import PiperOptions, PiperTTS

        self.whisper = FasterWhisperASR(FasterWhisperOptions())
        self.voice = PiperTTS._load(PiperOptions()).voice
        self.forms: list[dict[str, bytes]] = []
        self.app = Starlette(routes=[
            Route("/v1/audio/transcriptions", self.transcriptions, methods=["POST"]),
            Route("/v1/audio/speech", self.speech, methods=["POST"]),
        ])

    async def transcriptions(self, request: Request) -> Response:
        fields = form_fields(request.headers["content-type"], await request.body())
        self.forms.append(fields)
        audio, rate = sf.read(io.BytesIO(fields["file"]), dtype="float32")
        if rate != 16000:
            return JSONResponse({"error": {"message": "send 16 kHz"}}, status_code=400)
        result = await run_in_threadpool(self.whisper.recognize, audio)
        answer: dict[str, Any] = {"text": result.text}
        if fields.get("response_format") == b"verbose_json":
            answer["segments"] = [{"text": result.text, "avg_logprob": result.avg_logprob,
                                   "no_speech_prob": result.no_speech_prob}]
            answer["words"] = [{"word": w.text, "start": w.start, "end": w.end}
                               for w in result.words]
        return JSONResponse(answer)

    async def speech(self, request: Request) -> Response:
        body = await request.json()
        if body.get("response_format") != "pcm":
            return JSONResponse({"error": {"message": "only pcm here"}}, status_code=400)
        return StreamingResponse(self.pcm(str(body["input"])), media_type="audio/pcm")

    async def pcm(self, text: str) -> AsyncIterator[bytes]:
        sentences = iter(self.voice.synthesize(text))
        while (chunk := await run_in_threadpool(next, sentences, None)) is not None:
            audio = resample(chunk.audio_int16_array, chunk.sample_rate, PCM_RATE)
            data = audio.astype("<i2").tobytes()
            for start in range(0, len(data), 4801):  # odd sizes: split samples on purpose
                yield data[start : start + 4801]


def pcm_of(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
