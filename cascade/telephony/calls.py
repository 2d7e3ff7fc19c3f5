"""Calls on a phone server: admission, draining on shutdown, and each call's conversation.

Both servers admit a call through ``CallBook.admit`` (a reason is returned
when it must be refused: full, or draining) and hold it with ``begin``/``end``.
``drain`` stops new calls and waits for the active ones to hang up, which is
what SIGTERM does: a rolling restart loses no call in progress. ``CallSession``
is the conversation side of one call, the same for every transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from cascade.clock import RealClock
from cascade.conversation import Conversation, Pipeline
from cascade.frames import Event
from cascade.playout import AudioSink, Playout
from cascade.telephony.telemetry import PhoneMetrics
from cascade.tracing import TraceSink

log = logging.getLogger("cascade.telephony")
T = TypeVar("T")

TraceFactory = Callable[[str], Iterable[TraceSink]]
"""Trace sinks for a new call, given its id (e.g. one JSON Lines file per call)."""
CallHook = Callable[[Conversation, dict[str, str]], None]
"""Called with each new conversation and its call parameters once it started."""


def run_server(main: Coroutine[Any, Any, T]) -> T:
    """Run a phone server's main coroutine on uvloop when it is installed, as uvicorn does
    for ``serve --phone``, else on asyncio's own loop (the phone benchmark measured SIP the
    same on both; uvloop mostly speeds up stream sockets such as websockets)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


class CallBook:
    """Active calls, reservations for calls being set up, the limit, and drain state."""

    def __init__(self, metrics: PhoneMetrics, max_calls: int = 200) -> None:
        self.metrics = metrics
        self.max_calls = max_calls
        self.active: dict[str, float] = {}
        self.reserved = 0
        self.draining = False
        self._changed: asyncio.Event | None = None
        self.sweepers: list[Callable[[], None]] = []
        """Called while draining, to let go of reservations that expired."""

    def admit(self) -> str | None:
        """None when a new call may start; otherwise why not ("draining", "busy")."""
        if self.draining:
            return "draining"
        if len(self.active) + self.reserved >= self.max_calls:
            return "busy"
        return None

    @property
    def ready(self) -> bool:
        return self.admit() is None

    def reserve(self) -> None:
        self.reserved += 1

    def release(self) -> None:
        self.reserved = max(0, self.reserved - 1)
        self._notify()

    def begin(self, call_id: str) -> None:
        self.active[call_id] = time.monotonic()
        self.metrics.active_calls.set(len(self.active))

    def end(self, call_id: str) -> None:
        started = self.active.pop(call_id, None)
        if started is not None:
            self.metrics.call_seconds.observe(time.monotonic() - started)
        self.metrics.active_calls.set(len(self.active))
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def drain(self, timeout: float | None = None) -> bool:
        """Refuse new calls, wait for the active ones to end; False if ``timeout`` passed."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            for sweep in self.sweepers:
                sweep()
            if not (self.active or self.reserved):
                return True
            self._changed = asyncio.Event()
            remaining = 0.5 if deadline is None else min(0.5, deadline - loop.time())
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


class CallSession:
    """One call's conversation on its own clock, with its traces: started once, stopped once.

    Both transports run a call through this: the per-call metrics trace plus any
    sinks from ``traces``, Playout's lead, the ``on_call`` hook, and the
    ``call_start`` event that carries the call's parameters into the graph.
    """

    def __init__(self, call_id: str, pipeline: Pipeline, metrics: PhoneMetrics,
                 traces: TraceFactory | None = None, on_call: CallHook | None = None) -> None:
        self.id = call_id
        self.pipeline = pipeline
        self.clock = RealClock()
        self.traces = traces
        self.on_call = on_call
        self.conversation: Conversation | None = None
        self._sinks: list[TraceSink] = [metrics.call_trace()]
        self._ended = False

    async def start(self, sink: AudioSink, lead: float, parameters: dict[str, str]
                    ) -> Conversation:
        if self.traces is not None:
            self._sinks += list(self.traces(self.id))
        conversation = self.pipeline.conversation(
            self.clock, sink=sink, traces=self._sinks, conversation_id=self.id)
        playout = conversation.graph.stages.get("playout")
        if isinstance(playout, Playout):
            playout.lead = lead
        await conversation.start()
        if self._ended:  # the call ended while its stages started: no hooks, no start
            await self._stop(conversation)
            return conversation
        self.conversation = conversation
        if self.on_call is not None:
            self.on_call(conversation, parameters)
        await conversation.send(self.event("call_start", parameters))
        return conversation

    def event(self, name: str, data: dict[str, str]) -> Event:
        """An application event (DTMF, call start) stamped for this conversation."""
        turn = self.conversation.ctx.turn if self.conversation is not None else 1
        return Event(conversation=self.id, turn=turn, time=self.clock.now(), name=name,
                     data=data)

    async def stop(self) -> None:
        """End the call; if it is still starting, ``start`` stops the conversation."""
        self._ended = True
        conversation, self.conversation = self.conversation, None
        if conversation is not None:
            await self._stop(conversation)
        for sink in self._sinks:
            sink.close()
        self._sinks = []

    async def _stop(self, conversation: Conversation) -> None:
        try:
            await conversation.stop()
        except Exception:  # a stage failing to stop must not leak the call
            log.exception("%s: stopping the conversation failed", self.id)
