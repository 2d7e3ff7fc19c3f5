"""ElevenLabs streaming text-to-speech over HTTP.

Per ElevenLabs' public API docs: ``POST {base_url}/text-to-speech/{voice_id}/stream
?output_format=pcm_16000`` with the key in the ``xi-api-key`` header and a JSON
body ``{text, model_id, voice_settings}``; the answer is the audio as it is
generated, chunked. ``pcm_<rate>`` formats are raw 16-bit little-endian mono,
so chunks go straight to the TTS stage (cut on sample boundaries).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import Field

from cascade.adapters.provider import RemoteOptions, Requester, make_client, stream_pcm16
from cascade.adapters.secrets import Secret, require_secret
from cascade.frames import PCM
from cascade.registry import Capabilities
from cascade.stages.tts import TTSOptions, TTSStage

PCM_RATES = (8000, 16000, 22050, 24000, 44100)


class ElevenLabsOptions(TTSOptions, RemoteOptions):
    base_url: str = "https://api.elevenlabs.io/v1"
    api_key_env: str | None = "ELEVENLABS_API_KEY"
    voice_id: str = Field("21m00Tcm4TlvDq8ikWAM", description="voice to speak with")
    model_id: str = "eleven_flash_v2_5"
    sample_rate: Literal[8000, 16000, 22050, 24000, 44100] = Field(
        16000, description="rate of the pcm_<rate> output format")
    stability: float = Field(0.5, ge=0.0, le=1.0)
    similarity_boost: float = Field(0.75, ge=0.0, le=1.0)
    optimize_streaming_latency: int | None = Field(None, ge=0, le=4)


class ElevenLabsTTS(TTSStage):
    """An ElevenLabs voice, streamed as raw PCM while it is generated."""

    Options = ElevenLabsOptions
    extra = "elevenlabs"
    requires = ("httpx",)
    capabilities = Capabilities(streaming=True, languages=("*",), sample_rates=PCM_RATES)

    def __init__(self, options: ElevenLabsOptions) -> None:
        super().__init__(options)
        self.remote = options
        self._secret: Secret | None = (require_secret(options.api_key_env, "elevenlabs-tts")
                                       if options.api_key_env else None)

    async def start(self) -> None:
        headers = {"xi-api-key": self._secret.reveal()} if self._secret else {}
        self._requester = Requester(
            "elevenlabs-tts", self.remote, make_client(self.remote, headers), self.ctx.clock,
            self._secret, self.remote.api_key_env or "api_key_env")

    async def stop(self) -> None:
        if self._requester.client is not None:
            await self._requester.client.aclose()

    def _body(self, text: str) -> dict[str, Any]:
        opts = self.remote
        return {"text": text, "model_id": opts.model_id, "voice_settings": {
            "stability": opts.stability, "similarity_boost": opts.similarity_boost,
            "speed": opts.speed}}

    async def synthesize(self, text: str) -> AsyncIterator[tuple[PCM, int]]:

        opts = self.remote
        params: dict[str, Any] = {"output_format": f"pcm_{opts.sample_rate}"}
        if opts.optimize_streaming_latency is not None:
            params["optimize_streaming_latency"] = opts.optimize_streaming_latency
        response = await self._requester.open(
            "POST", f"text-to-speech/{opts.voice_id}/stream", params=params,
            json=self._body(text))
        async for chunk in stream_pcm16(response, opts.sample_rate, "elevenlabs-tts",
                                        opts.base_url):
            yield chunk
