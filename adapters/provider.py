"""Talking to a remote provider over HTTP: options, errors, and retries with backoff.

Every network adapter (OpenAI-compatible, ElevenLabs, ...) shares the same
behaviour here: an ``httpx.AsyncClient`` with separate connect and read
timeouts, the API key in a header and nowhere else, and retries with
exponential backoff (honouring ``Retry-After``) on connection failures, 429 and
5xx - only before any of the answer has been used. Failures become
``ProviderError`` with a message that names the adapter, the request, the
status and the fix; the API key is scrubbed from anything the server echoed.
``httpx`` is imported only when a client is built (it is an optional extra).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cascade.adapters.secrets import MASK, Secret
from cascade.clock import Clock
from cascade.errors import CascadeError
from cascade.frames import PCM

if TYPE_CHECKING:
    import httpx

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 30.0


class ProviderError(CascadeError):
    """A remote provider failed or answered something unusable."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False
                 ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class RemoteOptions(BaseModel):
    """Where a provider is and how patiently to talk to it."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="API root, e.g. https://api.openai.com/v1")
    api_key_env: str | None = Field(None, description="variable (environment or "
                                    "CASCADE_SECRETS_FILE) holding the API key; none: no key")
    connect_timeout: float = Field(5.0, gt=0.0, description="seconds to open a connection")
    read_timeout: float = Field(30.0, gt=0.0, description="seconds to wait for more bytes")
    retries: int = Field(2, ge=0, description="extra attempts on 429/5xx/connection errors")
    backoff: float = Field(0.5, ge=0.0, description="first retry delay; doubles each time")
    max_backoff: float = Field(8.0, ge=0.0)


def scrub(text: str, secret: Secret | None) -> str:
    """``text`` with the secret's value (if it appears) replaced by the mask."""
    if secret is not None and secret.reveal():
        return text.replace(secret.reveal(), MASK)
    return text


def make_client(options: RemoteOptions, headers: dict[str, str] | None = None
                ) -> httpx.AsyncClient:
    import httpx

    timeout = httpx.Timeout(options.read_timeout, connect=options.connect_timeout)
    return httpx.AsyncClient(base_url=options.base_url.rstrip("/") + "/", timeout=timeout,
                             headers=headers or {})


def make_blocking_client(options: RemoteOptions, headers: dict[str, str] | None = None
                         ) -> httpx.Client:
    import httpx

    timeout = httpx.Timeout(options.read_timeout, connect=options.connect_timeout)
    return httpx.Client(base_url=options.base_url.rstrip("/") + "/", timeout=timeout,
                        headers=headers or {})


def auth_headers(secret: Secret | None) -> dict[str, str]:
    """``Authorization: Bearer`` when there is a key (the only place its value goes)."""
    return {"Authorization": f"Bearer {secret.reveal()}"} if secret else {}


def retry_delay(options: RemoteOptions, attempt: int, retry_after: str | None = None) -> float:
    """Seconds before retry number ``attempt`` (0-based): Retry-After if given, else backoff."""
    if retry_after:
        try:
            return min(max(0.0, float(retry_after)), MAX_RETRY_AFTER)
        except ValueError:
            pass
    return float(min(options.backoff * 2.0 ** attempt, options.max_backoff))


class Requester:
    """Sends one request with retries; used by an adapter for every call it makes."""

    def __init__(self, adapter: str, options: RemoteOptions, client: httpx.AsyncClient | None,
                 clock: Clock, secret: Secret | None, key_hint: str) -> None:
        self.adapter = adapter
        self.options = options
        self.client = client
        self.clock = clock
        self.secret = secret
        self.key_hint = key_hint
        self.attempts = 0
        """Requests sent for the newest call (1 when the first one succeeded)."""

    def _where(self, method: str, path: str) -> str:
        return f"adapter '{self.adapter}': {method} {self.options.base_url.rstrip('/')}/{path}"

    def _transport_failure(self, where: str, exc: Exception, attempt: int) -> ProviderError:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return ProviderError(f"{where} timed out ({type(exc).__name__}) after "
                                 f"{attempt + 1} attempt(s); check the server is up, "
                                 "or raise connect_timeout/read_timeout", retryable=True)
        reason = scrub(str(exc), self.secret) or type(exc).__name__
        return ProviderError(f"{where} failed to connect ({reason}) after {attempt + 1} "
                             "attempt(s); check base_url and that the server is up",
                             retryable=True)

    def _give_up(self, failure: ProviderError, attempt: int) -> bool:
        return not failure.retryable or attempt >= self.options.retries

    async def open(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An open, streaming, successful response (the caller closes it)."""
        import httpx

        assert self.client is not None, f"{self.adapter}: Requester.open needs an async client"
        where = self._where(method, path)
        attempt = 0
        while True:
            self.attempts = attempt + 1
            retry_after: str | None = None
            try:
                request = self.client.build_request(method, path, **kwargs)
                response = await self.client.send(request, stream=True)
            except httpx.TransportError as exc:
                failure = self._transport_failure(where, exc, attempt)
            else:
                if response.status_code < 400:
                    return response
                body = (await response.aread())[:300].decode("utf-8", "replace")
                await response.aclose()
                failure = self._status_error(where, response.status_code,
                                             scrub(body, self.secret).strip())
                retry_after = response.headers.get("retry-after")
            if self._give_up(failure, attempt):
                raise failure
            await self.clock.sleep(retry_delay(self.options, attempt, retry_after))
            attempt += 1

    def send_blocking(self, client: httpx.Client, method: str, path: str, **kwargs: Any
                      ) -> httpx.Response:
        """``open`` for worker threads: a whole (read) successful response, with retries."""
        import httpx

        where = self._where(method, path)
        attempt = 0
        while True:
            self.attempts = attempt + 1
            retry_after: str | None = None
            try:
                response = client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                failure = self._transport_failure(where, exc, attempt)
            else:
                if response.status_code < 400:
                    return response
                failure = self._status_error(where, response.status_code, scrub(
                    response.text[:300], self.secret).strip())
                retry_after = response.headers.get("retry-after")
            if self._give_up(failure, attempt):
                raise failure
            time.sleep(retry_delay(self.options, attempt, retry_after))  # a worker thread
            attempt += 1

    def _status_error(self, where: str, status: int, body: str) -> ProviderError:
        fix = {
            401: f"check the API key in {self.key_hint}",
            403: f"the key in {self.key_hint} may not have access to this model",
            404: "check base_url and the model name",
            429: "rate limited: slow down or raise the quota (retries were exhausted)",
        }.get(status, "the provider is failing; retry later or add a fallback provider"
              if status >= 500 else "check the request options")
        return ProviderError(f"{where} answered HTTP {status} ({body or 'no body'}); {fix}",
                             status=status, retryable=status in RETRY_STATUSES)


async def stream_pcm16(response: httpx.Response, rate: int, adapter: str,
                       base_url: str) -> AsyncIterator[tuple[PCM, int]]:
    """Raw little-endian PCM16 from a streamed HTTP response, in whole samples
    (chunks may split a sample); a broken stream is a retryable ``ProviderError``."""
    import httpx as http

    odd = b""
    try:
        async for data in response.aiter_bytes():
            data = odd + data
            whole = len(data) - len(data) % 2
            odd = data[whole:]
            if whole:
                yield np.frombuffer(data[:whole], "<i2").astype(np.int16), rate
    except http.TransportError as exc:
        raise ProviderError(f"adapter '{adapter}' ({base_url}): the audio stream broke "
                            f"mid-clause ({exc})", retryable=True) from None
    finally:
        await response.aclose()

