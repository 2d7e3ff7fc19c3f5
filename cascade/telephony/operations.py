"""The operations endpoints of a phone server: ``/healthz``, ``/readyz``, ``/metrics``.

The Twilio endpoint mounts them next to its webhook; the SIP server, which speaks
UDP, serves them from a small HTTP app of its own (``operations_app``). Readiness
is 503 while the server drains or is full, so a load balancer stops sending calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cascade.errors import ConfigError
from cascade.telephony.calls import CallBook
from cascade.telephony.telemetry import CONTENT_TYPE, PhoneMetrics


def operations_routes(calls: CallBook, metrics: PhoneMetrics) -> list[Route]:
    """Liveness, readiness (with the active calls and drain state) and Prometheus."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        refused = calls.admit()
        body = {"ready": refused is None, "active_calls": len(calls.active),
                "draining": calls.draining}
        return JSONResponse(body, status_code=200 if refused is None else 503)

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return [Route("/healthz", healthz), Route("/readyz", readyz),
            Route("/metrics", prometheus)]


def operations_app(calls: CallBook, metrics: PhoneMetrics) -> Starlette:
    """The three endpoints as an ASGI app of their own."""
    return Starlette(routes=operations_routes(calls, metrics))


class OperationsServer:
    """``operations_app`` on uvicorn inside the running event loop (SIP's HTTP side)."""

    def __init__(self, calls: CallBook, metrics: PhoneMetrics, host: str, port: int) -> None:
        self.app = operations_app(calls, metrics)
        self.host = host
        self.port = port
        """The TCP port; 0 picks a free one, known once ``start`` returned."""
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        import uvicorn

        if not 0 <= self.port <= 65535:
            raise ConfigError(f"HTTP port {self.port} for /healthz /readyz /metrics is not a "
                              "port number (0-65535): pass --http-port")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot serve /healthz /readyz /metrics on "
                              f"{self.host}:{self.port} ({exc.strerror}): pick another "
                              "--http-port") from None
        self.port = sock.getsockname()[1]
        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Generator[None, None, None]:
                yield  # the SIP server owns SIGTERM (drain) and SIGINT

        self._server = server = Quiet(uvicorn.Config(self.app, lifespan="off",
                                                     log_level="warning"))
        self._task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 10)
