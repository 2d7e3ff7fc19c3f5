"""OpenAI-compatible speech endpoints: ``/audio/transcriptions`` (ASR) and ``/audio/speech`` (TTS).

``OpenAIASR`` sends each VAD speech segment as a 16 kHz WAV upload
(multipart: ``file``, ``model``, ``language``, ``response_format``). With
``verbose_json`` the answer's segments give the average log-probability and
no-speech probability the hallucination guard needs, and word timings when the
server returns ``words``. It runs in the ASR worker thread, so it uses a
blocking client. The batch API has no partials, so ``partial_interval`` is 0.

``OpenAITTS`` posts ``{model, input, voice, response_format: "pcm", speed}``
and streams the body as it arrives: raw 16-bit little-endian mono at
``sample_rate`` (24 kHz for OpenAI). Chunks are cut on sample boundaries.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pydantic import Field

from cascade.adapters.provider import (
    ProviderError,
    RemoteOptions,
    Requester,
    auth_headers,
    make_blocking_client,
    make_client,
    stream_pcm16,
)
from cascade.adapters.secrets import Secret, require_secret
from cascade.audio import to_pcm16
from cascade.frames import PCM, Word
from cascade.registry import Capabilities
from cascade.stages.asr import ASROptions, ASRStage, Recognition
from cascade.stages.tts import TTSOptions, TTSStage

if TYPE_CHECKING:
    import httpx


def _secret(options: RemoteOptions, adapter: str) -> Secret | None:
    return require_secret(options.api_key_env, adapter) if options.api_key_env else None


def wav_bytes(audio: npt.NDArray[np.float32], rate: int) -> bytes:
    """A PCM16 mono WAV file holding ``audio``."""
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(to_pcm16(audio).astype("<i2").tobytes())
    return buffer.getvalue()


class OpenAIASROptions(ASROptions, RemoteOptions):
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str | None = "OPENAI_API_KEY"
    model: str = "whisper-1"
    response_format: str = Field("verbose_json", pattern="^(json|verbose_json)$")
    partial_interval: float = Field(0.0, ge=0.0, description="the batch API has no partials")


class OpenAIASR(ASRStage):
    """Any OpenAI-compatible transcription endpoint, one request per speech segment."""

    Options = OpenAIASROptions
    extra = "openai"
    requires = ("httpx",)
    capabilities = Capabilities(streaming=False, word_timings=True, languages=("*",))

    def __init__(self, options: OpenAIASROptions) -> None:
        super().__init__(options)
        self.remote = options
        self._secret = _secret(options, "openai-asr")
        self._client = make_blocking_client(options, auth_headers(self._secret))

    async def start(self) -> None:
        self._requester = Requester("openai-asr", self.remote, None, self.ctx.clock, self._secret,
                                    self.remote.api_key_env or "api_key_env")

    async def stop(self) -> None:
        await super().stop()
        self._client.close()

    def recognize(self, audio: npt.NDArray[np.float32]) -> Recognition:
        opts = self.remote
        data: dict[str, Any] = {"model": opts.model, "response_format": opts.response_format}
        if opts.language not in ("", "auto"):
            data["language"] = opts.language
        if opts.response_format == "verbose_json":
            data["timestamp_granularities[]"] = ["word", "segment"]
        response = self._requester.send_blocking(
            self._client, "POST", "audio/transcriptions", data=data,
            files={"file": ("speech.wav", wav_bytes(audio, self.rate), "audio/wav")})
        return self._parse(response)

    def _parse(self, response: httpx.Response) -> Recognition:
        where = f"adapter 'openai-asr' ({self.remote.base_url})"
        try:
            body = response.json()
            text = str(body["text"])
        except (ValueError, KeyError, TypeError):
            raise ProviderError(f"{where}: the transcription answer is not JSON with a "
                                f"'text' field: {response.text[:120]!r}") from None
        segments = body.get("segments") or []
        logprob = float(np.mean([s.get("avg_logprob", 0.0) for s in segments])) if segments \
            else 0.0
        no_speech = min((float(s.get("no_speech_prob", 0.0)) for s in segments), default=0.0)
        words = [Word(str(w["word"]).strip(), float(w["start"]), float(w["end"]),
                      float(w.get("probability", 1.0))) for w in body.get("words") or []]
        return Recognition(text.strip(), avg_logprob=logprob, no_speech_prob=no_speech,
                           words=words)


class OpenAITTSOptions(TTSOptions, RemoteOptions):
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str | None = "OPENAI_API_KEY"
    model: str = "gpt-4o-mini-tts"
    voice: str = "alloy"
    sample_rate: int = Field(24000, gt=0, description="rate of the server's raw PCM")
    instructions: str | None = Field(None, description="speaking style (models that take it)")


class OpenAITTS(TTSStage):
    """Any OpenAI-compatible speech endpoint, streamed as raw PCM while it is generated."""

    Options = OpenAITTSOptions
    extra = "openai"
    requires = ("httpx",)
    capabilities = Capabilities(streaming=True, languages=("*",), sample_rates=(24000,))

    def __init__(self, options: OpenAITTSOptions) -> None:
        super().__init__(options)
        self.remote = options
        self._secret = _secret(options, "openai-tts")

    async def start(self) -> None:
        self._requester = Requester(
            "openai-tts", self.remote, make_client(self.remote, auth_headers(self._secret)),
            self.ctx.clock, self._secret, self.remote.api_key_env or "api_key_env")

    async def stop(self) -> None:
        if self._requester.client is not None:
            await self._requester.client.aclose()

    async def synthesize(self, text: str) -> AsyncIterator[tuple[PCM, int]]:

        opts = self.remote
        body: dict[str, Any] = {"model": opts.model, "input": text, "voice": opts.voice,
                                "response_format": "pcm", "speed": opts.speed}
        if opts.instructions:
            body["instructions"] = opts.instructions
        response = await self._requester.open("POST", "audio/speech", json=body)
        async for chunk in stream_pcm16(response, opts.sample_rate, "openai-tts",
                                        opts.base_url):
            yield chunk
