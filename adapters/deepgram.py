"""Deepgram live transcription over its websocket API (``/v1/listen``).

``DeepgramASR`` streams: one socket per conversation, opened at the caller's
first speech, so a conversation where nobody speaks (or the adapter serving
``fallback-asr``) holds no connection against the account's limit, and the
handshake overlaps the first utterance because audio queues behind it. Each
segment's pre-roll and audio go out as they arrive and Finalize at its end;
``deepgram_socket.ListenSocket`` carries them, matches the service's results to
segments and reopens a dropped socket (each drop is an ``error`` span here). A
segment whose results never come (a refused key, too many drops, a timeout)
fails in ``ASRStage``: an ``error`` span and an empty final transcript.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode

import numpy as np
import numpy.typing as npt
from pydantic import Field

from cascade.adapters.deepgram_socket import Fault, ListenSocket, Utterance
from cascade.adapters.provider import RemoteOptions
from cascade.adapters.secrets import Secret, require_secret
from cascade.audio import to_pcm16
from cascade.frames import PCM, Frame, SpeechStopped, Transcript
from cascade.registry import Capabilities
from cascade.stages.asr import ASROptions, ASRStage, Recognition

WAITS = ThreadPoolExecutor(max_workers=256, thread_name_prefix="deepgram-wait")
"""Threads that only wait for Deepgram's answers (and closes), apart from the shared pool
that model inference uses, so many calls waiting on the network starve nobody."""
CHUNK_SECONDS = 0.02


class DeepgramOptions(ASROptions, RemoteOptions):
    base_url: str = "wss://api.deepgram.com/v1"
    api_key_env: str | None = "DEEPGRAM_API_KEY"
    model: str = "nova-3"
    smart_format: bool = True
    endpointing: int | None = Field(None, ge=0, description="ms of silence after which "
                                    "Deepgram finalizes on its own (0: never; none: the "
                                    "service's default)")
    partial_interval: float = Field(0.0, ge=0.0, description="above 0: ask for Deepgram's "
                                    "interim results, each one a partial transcript")
    keepalive_interval: float = Field(5.0, gt=0.0, description="seconds without audio "
                                      "before a KeepAlive (Deepgram closes a socket idle "
                                      "for 10 s)")
    finalize_timeout: float = Field(10.0, gt=0.0, description="seconds to wait for the "
                                    "results of a Finalize")
    close_timeout: float = Field(2.0, gt=0.0, description="seconds to wait for Deepgram's "
                                 "closing Metadata when the conversation ends")


class DeepgramASR(ASRStage):
    """Deepgram's live recogniser: one websocket per conversation, audio as it comes."""

    Options = DeepgramOptions
    extra = "deepgram"
    requires = ("websockets",)
    capabilities = Capabilities(streaming=True, word_timings=True, languages=("*",))

    def __init__(self, options: DeepgramOptions) -> None:
        super().__init__(options)
        self.remote = options
        self._secret: Secret | None = (require_secret(options.api_key_env, "deepgram-asr")
                                       if options.api_key_env else None)
        self._live: ListenSocket | None = None
        self._utterance: Utterance | None = None  # the open segment

    def url(self) -> str:
        opts = self.remote
        query: dict[str, Any] = {"model": opts.model, "encoding": "linear16",
                                 "sample_rate": self.rate, "channels": 1,
                                 "smart_format": str(opts.smart_format).lower()}
        if opts.language not in ("", "auto"):
            query["language"] = opts.language
        if opts.partial_interval > 0:
            query["interim_results"] = "true"
        if opts.endpointing is not None:
            query["endpointing"] = opts.endpointing or "false"
        return f"{opts.base_url.rstrip('/')}/listen?{urlencode(query)}"

    def _socket(self) -> ListenSocket:
        where = f"adapter 'deepgram-asr' ({self.remote.base_url}/listen)"
        return ListenSocket(self.url(), self.rate, self._secret, self.remote, where)

    def recognize(self, audio: npt.NDArray[np.float32]) -> Recognition:
        """One whole segment on a socket of its own (``fallback-asr`` hands its
        providers whole segments). Returns with the final; the socket closes cleanly
        (CloseStream, Metadata, close) behind it, in its sender thread."""
        live = self._socket()
        try:
            utterance = live.begin(0, 0.0)
            pcm = to_pcm16(audio)
            step = int(self.rate * CHUNK_SECONDS)
            for start in range(0, len(pcm), step):
                live.send(utterance, pcm[start : start + step])
            live.finalize(utterance)
            return live.result(utterance, self.remote.finalize_timeout)
        finally:
            live.close(wait=False)

    # --- streaming: the ASRStage hooks, called in frame order ---

    def segment_started(self, start: float, pre_roll: Sequence[PCM], turn: int) -> None:
        if self._live is None:
            self._live = self._socket()
        if self._utterance is not None:  # a start without a stop: close the open one
            self._live.finalize(self._utterance)
        self._utterance = self._live.begin(turn, start)
        for pcm in pre_roll:
            self._live.send(self._utterance, pcm)

    def segment_audio(self, pcm: PCM, turn: int) -> None:
        if self._live is not None and self._utterance is not None:
            self._live.send(self._utterance, pcm)

    def segment_stopped(self, stop: SpeechStopped, audio: npt.NDArray[np.float32]
                        ) -> Callable[[], Awaitable[Recognition]]:
        live, utterance, self._utterance = self._live, self._utterance, None
        if live is None or utterance is None:  # a stop without a start: nothing was sent
            return _heard_nothing
        live.finalize(utterance)
        # A ProviderError from ``result`` fails the segment in ASRStage: traced, heard as
        # nothing, so the turn controller still gets its final and the conversation goes on.
        return functools.partial(self.ctx.clock.run_blocking, live.result, utterance,
                                 self.remote.finalize_timeout, executor=WAITS)

    async def process(self, frame: Frame) -> None:
        await super().process(frame)
        if self._live is not None and self._live.news:
            await self._pass_news()

    async def _pass_news(self) -> None:
        """Interim results of the open segment as partials; drops as traced errors."""
        assert self._live is not None
        news = self._live.news
        while news:
            item = news.popleft()
            if isinstance(item, Fault):
                turn = item.turn if item.turn is not None else self.ctx.turn
                await self._trace_error(turn, f"ProviderError: {item.message}")
            elif item.utterance is self._utterance and item.text.strip():
                start = item.utterance.start
                await self.push(Transcript(
                    conversation=self.ctx.conversation, turn=item.utterance.turn,
                    time=self.now(), text=item.text.strip(), final=False,
                    avg_logprob=math.log(max(item.confidence, 1e-6)),
                    speech_start=start, speech_end=start + item.seconds))

    async def finish(self) -> None:
        await super().finish()
        if self._live is not None and self._live.news:
            await self._pass_news()

    async def stop(self) -> None:
        await super().stop()
        live, self._live = self._live, None
        if live is not None:
            await self.ctx.clock.run_blocking(live.close, executor=WAITS)


async def _heard_nothing() -> Recognition:
    return Recognition("", no_speech_prob=1.0)
