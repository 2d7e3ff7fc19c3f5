"""Deepgram live transcription over its websocket API (``/v1/listen``).

Per Deepgram's public streaming docs: the client opens
``wss://api.deepgram.com/v1/listen?model=...&encoding=linear16&sample_rate=16000
&channels=1&...`` with ``Authorization: Token <key>``, sends raw audio as binary
messages, ``{"type": "Finalize"}`` to flush what it holds and
``{"type": "CloseStream"}`` to end. The server answers JSON messages;
``type: "Results"`` carry ``channel.alternatives[0]`` (``transcript``,
``confidence``, ``words`` with ``start``/``end``/``punctuated_word``) and
``is_final``; the flush's last result has ``from_finalize: true``.

``DeepgramASR`` fits the ``ASRStage`` contract: each speech segment (and each
partial) is streamed on its own connection in 20 ms messages, finalized, and
the final results joined. It runs in the ASR worker thread (``websockets``'
blocking client), so the event loop is never held.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any
from urllib.parse import urlencode

import numpy as np
import numpy.typing as npt
from pydantic import Field

from cascade.adapters.provider import ProviderError, RemoteOptions, retry_delay, scrub
from cascade.adapters.secrets import Secret, require_secret
from cascade.audio import to_pcm16
from cascade.frames import Word
from cascade.registry import Capabilities
from cascade.stages.asr import ASROptions, ASRStage, Recognition

CHUNK_SECONDS = 0.02


class DeepgramOptions(ASROptions, RemoteOptions):
    base_url: str = "wss://api.deepgram.com/v1"
    api_key_env: str | None = "DEEPGRAM_API_KEY"
    model: str = "nova-3"
    smart_format: bool = True
    partial_interval: float = Field(0.0, ge=0.0, description="seconds between partials "
                                    "(each is a request; 0: finals only)")
    finalize_timeout: float = Field(10.0, gt=0.0, description="seconds to wait for the "
                                    "results of a Finalize")


class DeepgramASR(ASRStage):
    """Deepgram's live (websocket) recogniser, one connection per speech segment."""

    Options = DeepgramOptions
    extra = "deepgram"
    requires = ("websockets",)
    capabilities = Capabilities(streaming=True, word_timings=True, languages=("*",))

    def __init__(self, options: DeepgramOptions) -> None:
        super().__init__(options)
        self.remote = options
        self._secret: Secret | None = (require_secret(options.api_key_env, "deepgram-asr")
                                       if options.api_key_env else None)

    def url(self) -> str:
        opts = self.remote
        query: dict[str, Any] = {"model": opts.model, "encoding": "linear16",
                                 "sample_rate": self.rate, "channels": 1,
                                 "smart_format": str(opts.smart_format).lower()}
        if opts.language not in ("", "auto"):
            query["language"] = opts.language
        return f"{opts.base_url.rstrip('/')}/listen?{urlencode(query)}"

    def _where(self) -> str:
        return f"adapter 'deepgram-asr' ({self.remote.base_url}/listen)"

    def _connect(self) -> Any:
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        opts = self.remote
        headers = {"Authorization": f"Token {self._secret.reveal()}"} if self._secret else {}
        attempt = 0
        while True:
            try:
                return connect(self.url(), additional_headers=headers,
                               open_timeout=opts.connect_timeout, max_size=2**22)
            except InvalidStatus as exc:
                status = exc.response.status_code
                fix = (f"check the API key in {opts.api_key_env}" if status in (401, 403)
                       else "check base_url and the options")
                failure = ProviderError(f"{self._where()} refused the connection: HTTP "
                                        f"{status}; {fix}", status=status,
                                        retryable=status == 429 or status >= 500)
            except (OSError, TimeoutError, WebSocketException) as exc:
                reason = scrub(str(exc), self._secret) or type(exc).__name__
                failure = ProviderError(f"{self._where()} failed to connect ({reason}) after "
                                        f"{attempt + 1} attempt(s); check base_url and that "
                                        "the server is up", retryable=True)
            if not failure.retryable or attempt >= opts.retries:
                raise failure
            time.sleep(retry_delay(opts, attempt))  # the ASR worker thread
            attempt += 1

    def recognize(self, audio: npt.NDArray[np.float32]) -> Recognition:
        from websockets.exceptions import ConnectionClosed

        pcm = to_pcm16(audio).astype("<i2").tobytes()
        step = int(self.rate * CHUNK_SECONDS) * 2
        results: list[dict[str, Any]] = []
        with self._connect() as socket:
            try:
                for start in range(0, len(pcm), step):
                    socket.send(pcm[start : start + step])
                socket.send(json.dumps({"type": "Finalize"}))
                deadline = time.monotonic() + self.remote.finalize_timeout
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise ProviderError(f"{self._where()}: no result of Finalize within "
                                            f"{self.remote.finalize_timeout} s; raise "
                                            "finalize_timeout or check the service")
                    message = self._message(socket.recv(timeout=left))
                    if message.get("type") == "Results" and message.get("is_final"):
                        results.append(message)
                        if message.get("from_finalize"):
                            break
                    elif message.get("type") == "Error" or "err_code" in message:
                        raise ProviderError(f"{self._where()}: the service reported "
                                            f"{str(message)[:200]}")
                socket.send(json.dumps({"type": "CloseStream"}))
            except ConnectionClosed as exc:
                raise ProviderError(f"{self._where()}: the connection closed before the "
                                    f"final result ({exc})", retryable=True) from None
        return self._recognition(results)

    def _message(self, raw: str | bytes) -> dict[str, Any]:
        try:
            message = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ProviderError(f"{self._where()}: a message is not JSON: "
                                f"{str(raw)[:120]!r}") from None
        if not isinstance(message, dict):
            raise ProviderError(f"{self._where()}: a message is not a JSON object")
        return message

    @staticmethod
    def _recognition(results: list[dict[str, Any]]) -> Recognition:
        texts: list[str] = []
        words: list[Word] = []
        confidences: list[float] = []
        for result in results:
            alternatives = (result.get("channel") or {}).get("alternatives") or [{}]
            best = alternatives[0]
            if best.get("transcript"):
                texts.append(str(best["transcript"]))
                confidences.append(float(best.get("confidence", 1.0)))
            words.extend(Word(str(w.get("punctuated_word") or w["word"]), float(w["start"]),
                              float(w["end"]), float(w.get("confidence", 1.0)))
                         for w in best.get("words") or [])
        confidence = sum(confidences) / len(confidences) if confidences else 0.0
        return Recognition(" ".join(texts).strip(),
                           avg_logprob=math.log(max(confidence, 1e-6)),
                           no_speech_prob=0.0 if texts else 1.0, words=words)
