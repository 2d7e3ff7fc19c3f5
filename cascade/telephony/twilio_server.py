"""Twilio Media Streams phone backend: an ASGI app a backend can mount, and ``serve``.

Routes (paths configurable in ``TwilioSettings``):

* ``POST /twilio/voice`` - the voice webhook. The ``X-Twilio-Signature`` is
  checked with the auth token (403 when missing or wrong); a call is admitted
  (503 while draining or full) and answered with TwiML
  ``<Connect><Stream url="wss://.../twilio/media/TOKEN">`` plus ``<Parameter>``s
  (caller, callee, call id, and whatever ``TwilioSettings.parameters`` adds).
* ``WS /twilio/media/{token}`` - the media stream. Only a stream the webhook
  started is accepted: the token is random, single-use and expires; the
  parameters the conversation sees are the ones from the signed webhook.
* ``/healthz`` (process alive), ``/readyz`` (503 while draining or full),
  ``/metrics`` (Prometheus).

One ``Pipeline`` serves every call, so models load once per process. On
SIGTERM ``serve`` drains: new calls get 503, calls in progress finish, then the
process exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from twilio import request_validator  # type: ignore[import-untyped]
from twilio.twiml.voice_response import (  # type: ignore[import-untyped]
    Connect,
    VoiceResponse,
)

from cascade.config import PipelineConfig
from cascade.conversation import Pipeline
from cascade.errors import ConfigError
from cascade.telephony import is_number
from cascade.telephony.calls import CallBook, CallHook, TraceFactory
from cascade.telephony.operations import operations_routes
from cascade.telephony.telemetry import PhoneMetrics
from cascade.telephony.twilio_call import CallLimits, Ticket, TwilioCall

log = logging.getLogger("cascade.telephony")
ParameterHook = Callable[[Mapping[str, str]], Mapping[str, str]]
MAX_WEBHOOK_BYTES = 64 * 1024


@dataclass(slots=True)
class TwilioSettings:
    """How the Twilio endpoint is reached, secured and limited."""

    auth_token: str
    """The account's auth token: webhooks whose signature it does not verify get 403."""
    public_url: str | None = None
    """Base URL Twilio calls (https://bot.example.com), when behind a proxy or tunnel;
    by default it is rebuilt from the request's Host and X-Forwarded-Proto headers.
    Where a backend mounts the app (``Mount("/phone", ...)``), that path is added."""
    webhook_path: str = "/twilio/voice"
    media_path: str = "/twilio/media"
    max_calls: int = 200
    ticket_seconds: float = 30.0
    """How long a stream token from the webhook stays valid."""
    parameters: ParameterHook | None = None
    """Extra stream parameters from the webhook's form fields (e.g. a CRM lookup)."""
    traces: TraceFactory | None = None
    """Trace sinks for a call id (e.g. one JSON Lines file per call)."""
    on_call: CallHook | None = None
    """Called with each new conversation and its stream parameters, once it started
    (before the ``call_start`` event reaches its stages)."""
    limits: CallLimits = field(default_factory=CallLimits)


class TicketBook:
    """Stream tokens the webhook handed out, each good for one websocket, for a while."""

    def __init__(self, book: CallBook, seconds: float, limit: int = 10_000) -> None:
        self.book = book
        self.seconds = seconds
        self.limit = limit
        self._tickets: dict[str, Ticket] = {}
        self._by_call: dict[str, Ticket] = {}
        """Unused tickets by CallSid."""

    def issue(self, call_sid: str, parameters: dict[str, str]) -> Ticket | None:
        """A ticket for the call; the same one again while the call's ticket is unused (a
        webhook Twilio retried, or one replayed: either way one reserved place per call)."""
        self.sweep()
        waiting = self._by_call.get(call_sid) if call_sid else None
        if waiting is not None:
            waiting.parameters = parameters
            waiting.expires = time.monotonic() + self.seconds  # a retry starts afresh
            return waiting
        if len(self._tickets) >= self.limit:
            return None
        ticket = Ticket(secrets.token_urlsafe(24), call_sid, parameters,
                        time.monotonic() + self.seconds)
        self._tickets[ticket.token] = ticket
        if call_sid:
            self._by_call[call_sid] = ticket
        self.book.reserve()
        return ticket

    def redeem(self, token: str) -> Ticket | None:
        self.sweep()
        ticket = self._tickets.pop(token, None)
        if ticket is not None:
            self._by_call.pop(ticket.call_sid, None)
            self.book.release()
        return ticket

    def sweep(self) -> None:
        now = time.monotonic()
        for token in [t for t, ticket in self._tickets.items() if ticket.expires < now]:
            self._by_call.pop(self._tickets.pop(token).call_sid, None)
            self.book.release()


class TwilioEndpoint:
    """The Twilio phone endpoint of one process: ``app`` is the ASGI application."""

    def __init__(self, pipeline: Pipeline, settings: TwilioSettings) -> None:
        if not settings.auth_token:
            raise ConfigError("the Twilio endpoint needs the account's auth token to verify "
                              "webhook signatures: set TWILIO_AUTH_TOKEN or pass --token")
        self.pipeline = pipeline
        self.settings = settings
        self.metrics = PhoneMetrics("twilio")
        self.calls = CallBook(self.metrics, settings.max_calls)
        self.tickets = TicketBook(self.calls, settings.ticket_seconds)
        self.calls.sweepers.append(self.tickets.sweep)
        self.validator = request_validator.RequestValidator(settings.auth_token)
        self.app = Starlette(routes=[
            Route(settings.webhook_path, self.voice, methods=["POST"]),
            WebSocketRoute(settings.media_path + "/{token}", self.media, name="media"),
            *operations_routes(self.calls, self.metrics),
        ])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    # --- webhook -----------------------------------------------------------

    def base_url(self, request: Request) -> str:
        """Where this app's routes hang from, as Twilio sees it (public URL or Host)."""
        root: str = request.scope.get("root_path", "")  # where a backend mounted this app
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/") + root
        url = request.url
        scheme = request.headers.get("x-forwarded-proto", url.scheme).split(",")[0].strip()
        host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
        return f"{scheme}://{host}{root}"

    def requested_url(self, request: Request) -> str:
        """The URL Twilio signed: the base URL plus the path inside this app and the query."""
        url = request.url
        root = request.scope.get("root_path", "")
        path = url.path[len(root):] if root and url.path.startswith(root) else url.path
        return self.base_url(request) + path + (f"?{url.query}" if url.query else "")

    def signed(self, request: Request, form: ImmutableMultiDict[str, str]) -> bool:
        signature = request.headers.get("x-twilio-signature")
        if not signature:
            return False
        url = self.requested_url(request)
        settings_header = request.headers.get("x-twilio-webhooks-signature-settings")
        algorithm_of = getattr(request_validator, "get_signature_algorithm", None)
        if settings_header and algorithm_of is not None:
            valid: bool = self.validator.validate(url, form, signature,
                                                  algorithm_of(settings_header))
            return valid
        valid = self.validator.validate(url, form, signature)
        return valid

    async def voice(self, request: Request) -> Response:
        body = await _bounded_body(request, MAX_WEBHOOK_BYTES)
        if body is None:
            self.metrics.error("webhook_too_large")
            return PlainTextResponse(f"request body too large (a voice webhook is a small "
                                     f"form; at most {MAX_WEBHOOK_BYTES} bytes)\n",
                                     status_code=413)
        try:
            form = ImmutableMultiDict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            form = ImmutableMultiDict()
        if not self.signed(request, form):
            self.metrics.call("bad_signature")
            log.warning("refused a webhook whose X-Twilio-Signature does not verify "
                        "(check the auth token and the public URL: %s)",
                        self.requested_url(request))
            return PlainTextResponse("invalid or missing X-Twilio-Signature\n",
                                     status_code=403)
        self.tickets.sweep()  # streams that never connected free their place
        refused = self.calls.admit()
        if refused is not None:
            self.metrics.call(refused)
            return PlainTextResponse(f"not taking calls ({refused})\n", status_code=503,
                                     headers={"Retry-After": "5"})
        call_sid = form.get("CallSid", "")
        if self.streaming(call_sid):
            self.metrics.call("duplicate_call")
            return PlainTextResponse(f"call {call_sid} already has a media stream\n",
                                     status_code=409)
        parameters = {"from": form.get("From", ""), "to": form.get("To", ""),
                      "call_sid": call_sid}
        if self.settings.parameters is not None:
            extra = self.settings.parameters(dict(form.items()))
            parameters.update({str(k): str(v) for k, v in extra.items()})
        ticket = self.tickets.issue(call_sid, parameters)
        if ticket is None:
            self.metrics.call("busy")
            return PlainTextResponse("not taking calls (busy)\n", status_code=503)
        return Response(self.twiml(request, ticket), media_type="application/xml")

    def stream_url(self, request: Request, token: str) -> str:
        scheme, _, rest = self.base_url(request).partition("://")
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{self.settings.media_path}/{token}"

    def twiml(self, request: Request, ticket: Ticket) -> str:
        response = VoiceResponse()
        connect = Connect()
        stream = connect.stream(url=self.stream_url(request, ticket.token))
        for name, value in ticket.parameters.items():
            stream.parameter(name=name, value=value)
        response.append(connect)
        return str(response)

    # --- media -------------------------------------------------------------

    async def media(self, ws: WebSocket) -> None:
        ticket = self.tickets.redeem(ws.path_params.get("token", ""))
        if ticket is None:
            self.metrics.call("bad_stream_token")
            await ws.close(code=1008)  # before accept: the handshake is refused (403)
            return
        if self.streaming(ticket.call_sid):  # a replayed webhook's stream for a live call
            self.metrics.call("duplicate_call")
            await ws.close(code=1008)
            return
        call = TwilioCall(ws, ticket, self.pipeline, self.metrics, self.settings.limits,
                          self.settings.traces, self.settings.on_call)
        self.calls.begin(call.id)  # before the first await: a second stream sees it
        try:
            await ws.accept()
            await call.run()
        except Exception:  # the server outlives any one call
            self.metrics.error("internal")
            log.exception("%s: call failed", call.id)
        finally:
            self.calls.end(call.id)

    def streaming(self, call_sid: str) -> bool:
        """Whether Twilio call ``call_sid`` has a media stream here already."""
        return bool(call_sid) and TwilioCall.id_for(call_sid) in self.calls.active

    # --- operations --------------------------------------------------------

    async def drain(self, timeout: float | None = None) -> bool:
        """Stop taking calls and wait for those in progress; False if ``timeout`` passed."""
        return await self.calls.drain(timeout)


async def _bounded_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it declares or sends more than ``limit`` bytes
    (a chunked body declares nothing: it is counted as it arrives, never buffered whole)."""
    declared = request.headers.get("content-length")
    if declared is not None and not (is_number(declared) and int(declared) <= limit):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(pipeline: Pipeline, settings: TwilioSettings) -> TwilioEndpoint:
    """The endpoint for ``pipeline``; mount ``.app`` (or the endpoint itself) in a backend."""
    return TwilioEndpoint(pipeline, settings)


def _uvicorn_server(endpoint: TwilioEndpoint, host: str, port: int,
                    drain_seconds: float) -> Any:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """The first SIGTERM drains calls before shutting down; a second one (or ^C) quits."""

        draining: asyncio.Task[None] | None = None

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if sig == signal.SIGTERM and self.draining is None and not self.should_exit:
                loop = asyncio.get_event_loop()
                self.draining = loop.create_task(self._drain())
                return
            super().handle_exit(sig, frame)

        async def _drain(self) -> None:
            log.warning("SIGTERM: draining %d call(s), refusing new ones",
                        len(endpoint.calls.active))
            await endpoint.drain(drain_seconds)
            self.should_exit = True

    config = uvicorn.Config(endpoint.app, host=host, port=port, lifespan="off",
                            log_level="warning", ws_max_size=endpoint.settings.limits
                            .max_message_bytes, ws_ping_interval=10.0, ws_ping_timeout=20.0,
                            ws_per_message_deflate=False)  # μ-law does not compress
    return DrainingServer(config)


def serve(config: PipelineConfig, *, host: str = "127.0.0.1", port: int = 8765,
          token: str | None = None, console: Any = None, drain_seconds: float = 3600.0,
          ) -> None:
    """Run the Twilio endpoint until SIGTERM (drains calls, then exits) or ^C.

    ``token`` is the Twilio account's auth token (default: TWILIO_AUTH_TOKEN), which
    webhook signatures are checked with; set CASCADE_PUBLIC_URL to the https base URL
    Twilio calls when the server sits behind a proxy or tunnel.
    """
    from cascade.run_command import load_for_serving

    auth_token = token or os.environ.get("TWILIO_AUTH_TOKEN", "")
    pipeline = Pipeline(config)
    settings = TwilioSettings(auth_token=auth_token,
                              public_url=os.environ.get("CASCADE_PUBLIC_URL") or None)
    endpoint = TwilioEndpoint(pipeline, settings)
    load_for_serving(pipeline, console)
    if console is not None:
        console.print(f"Twilio endpoint on http://{host}:{port}: voice webhook "
                      f"{settings.webhook_path}, media {settings.media_path}/…, "
                      "/healthz /readyz /metrics")
    server = _uvicorn_server(endpoint, host, port, drain_seconds)
    server.run()
