"""What every server connection has: an ordered outbox to its client, 20 ms framing of
the caller's audio, and the line said when it closes.

Both servers (``browser`` and ``realtime``) use these, so a slow socket never blocks
the pipeline and both report a conversation the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Generic, TypeVar

from cascade.metrics import turn_metrics
from cascade.tracing import Span

if TYPE_CHECKING:
    from rich.console import Console

M = TypeVar("M")


class Outbox(Generic[M]):
    """Messages for one client, sent in order by one writer task.

    ``put`` never waits, so the pipeline's callbacks can queue; when a send fails (the
    client went away) the writer stops and later messages are dropped.
    """

    def __init__(self, send: Callable[[M], Awaitable[None]], log: logging.Logger,
                 name: str) -> None:
        self._send = send
        self._log = log
        self._name = name
        self._queue: asyncio.Queue[M | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write())

    def put(self, message: M) -> None:
        self._queue.put_nowait(message)

    async def close(self) -> None:
        """Send what is queued, then stop the writer."""
        self._queue.put_nowait(None)
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer

    async def _write(self) -> None:
        while (message := await self._queue.get()) is not None:
            try:
                await self._send(message)
            except Exception as exc:  # the client went away: nothing more to say
                self._log.info("%s: stopped sending (%s)", self._name, exc)
                return


def closing_line(what: str, spans: Iterable[Span], dropped: int = 0) -> str:
    """``<what> closed after N turn(s), median voice-to-voice X ms``, for the server's log."""
    turns = turn_metrics(spans)
    v2v = sorted(m.voice_to_voice for m in turns if m.voice_to_voice is not None)
    median = f", median voice-to-voice {v2v[len(v2v) // 2] * 1000:.0f} ms" if v2v else ""
    lost = f", {dropped} input frames dropped" if dropped else ""
    return f"{what} closed after {len(turns)} turn(s){median}{lost}"


def announce(log: logging.Logger, console: Console | None, line: str) -> None:
    """Log a server event, and show it on the console when there is one."""
    log.info(line)
    if console is not None:
        console.print(line, highlight=False, soft_wrap=True)
