"""Answer Twilio calls from your own web backend: mount Cascade's endpoint in your app.

    TWILIO_AUTH_TOKEN=... CASCADE_PUBLIC_URL=https://bot.example.com \\
        uvicorn examples.phone_backend:app --host 0.0.0.0 --port 8000

Point the Twilio number's voice webhook at ``https://bot.example.com/phone/twilio/voice``.
Your own routes stay yours (``/`` here); the phone endpoint lives under ``/phone``
(webhook, media websocket, ``/phone/healthz``, ``/phone/readyz``, ``/phone/metrics``).
Every call gets its own conversation on the same loaded models, its own trace file,
and your ``on_call`` hook sees the caller's number before the agent says anything.
On shutdown the endpoint drains: calls in progress finish, new ones get 503.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from cascade import Conversation, Pipeline, TraceWriter, load_pipeline
from cascade.pipelines import builtin_pipeline
from cascade.run_command import freeze_heap
from cascade.telephony.twilio_server import TwilioEndpoint, TwilioSettings

log = logging.getLogger("phone_backend")
TRACES = Path(os.environ.get("CALL_TRACES", "call-traces"))


def build_app(pipeline: Pipeline, auth_token: str, public_url: str | None = None
              ) -> tuple[Starlette, TwilioEndpoint]:
    """Your backend with the phone endpoint mounted under /phone."""

    def traces(call_id: str) -> list[TraceWriter]:
        TRACES.mkdir(parents=True, exist_ok=True)
        return [TraceWriter(TRACES / f"{call_id}.jsonl")]  # `cascade trace` reads these

    def on_call(conversation: Conversation, parameters: dict[str, str]) -> None:
        log.info("call %s from %s", conversation.id, parameters.get("from", "?"))

    phone = TwilioEndpoint(pipeline, TwilioSettings(
        auth_token=auth_token, public_url=public_url, traces=traces, on_call=on_call,
        parameters=lambda form: {"caller_city": form.get("FromCity", "")}))

    async def home(request: Request) -> Response:
        return JSONResponse({"service": "my backend", "active_calls":
                             len(phone.calls.active)})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pipeline.preload()  # models load once per process, before the first call
        freeze_heap()  # keep the collector off the loaded models (no audio stalls)
        yield
        await phone.drain(timeout=600)  # calls in progress finish; new ones get 503

    app = Starlette(routes=[Route("/", home), Mount("/phone", app=phone.app)],
                    lifespan=lifespan)
    return app, phone


def _app_from_environment() -> Starlette:
    pipeline = Pipeline(load_pipeline(os.environ.get("CASCADE_PIPELINE")
                                      or builtin_pipeline("local")))
    app, _ = build_app(pipeline, os.environ.get("TWILIO_AUTH_TOKEN", ""),
                       os.environ.get("CASCADE_PUBLIC_URL") or None)
    return app


def __getattr__(name: str) -> Starlette:  # `uvicorn examples.phone_backend:app`
    if name == "app":
        return _app_from_environment()
    raise AttributeError(name)
