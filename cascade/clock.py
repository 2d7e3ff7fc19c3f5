"""The pipeline clock: the only place Cascade reads time.

``RealClock`` follows the monotonic clock. ``VirtualClock`` runs an event loop
whose time jumps straight to the next timer whenever nothing is runnable, so a
60 s conversation of fake stages finishes in milliseconds with identical traces
on every run. Blocking work (model inference) goes through ``run_blocking``: on
the virtual clock it takes no virtual time and the loop waits for it for real,
which keeps runs deterministic even with real models.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import selectors
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    """What stages and metrics use for time: ``now`` in seconds, sleeping, blocking work."""

    virtual: bool

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    async def sleep_until(self, when: float) -> None: ...

    async def run_blocking(self, fn: Callable[..., T], *args: Any,
                           executor: Executor | None = None) -> T: ...

    def run(self, main: Coroutine[Any, Any, T]) -> T: ...


class _LoopClock:
    """Shared behaviour: time is the running loop's time minus an origin."""

    virtual = False

    def __init__(self) -> None:
        self._origin = 0.0

    def now(self) -> float:
        return asyncio.get_running_loop().time() - self._origin

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, when: float) -> None:
        await asyncio.sleep(max(0.0, when - self.now()))

    async def run_blocking(self, fn: Callable[..., T], *args: Any,
                           executor: Executor | None = None) -> T:
        """``fn(*args)`` in a worker thread: the loop's default pool, or ``executor`` for
        work that mostly waits (a network reply) and must not hold a pool thread that
        model inference needs."""
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        return await loop.run_in_executor(executor, functools.partial(ctx.run, fn, *args))


class RealClock(_LoopClock):
    """Wall time: seconds since this clock started, from the monotonic clock."""

    def __init__(self) -> None:
        super().__init__()
        self._origin = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._origin

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(main)


class _VirtualSelector(selectors.DefaultSelector):
    """A selector that, instead of sleeping until the next timer, moves time there."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        ready: list[tuple[Any, int]] = super().select(0)
        if ready or timeout == 0:
            return ready
        if self._clock.blocking_jobs or timeout is None:
            # Real work in a thread (or real I/O) is pending: wait for it for real.
            return list(super().select(None if self._clock.blocking_jobs else timeout))
        self._clock.advance(timeout)
        return []


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(selector=_VirtualSelector(clock))
        self._virtual_clock = clock

    def time(self) -> float:
        return self._virtual_clock.loop_time


class VirtualClock(_LoopClock):
    """Simulated time: sleeps cost nothing, blocking work takes zero virtual seconds."""

    virtual = True

    def __init__(self, start: float = 0.0) -> None:
        super().__init__()
        self.loop_time = start
        self.blocking_jobs = 0

    def now(self) -> float:
        return self.loop_time

    def advance(self, seconds: float) -> None:
        self.loop_time += seconds

    async def run_blocking(self, fn: Callable[..., T], *args: Any,
                           executor: Executor | None = None) -> T:
        self.blocking_jobs += 1
        try:
            return await super().run_blocking(fn, *args, executor=executor)
        finally:
            self.blocking_jobs -= 1

    def new_loop(self) -> asyncio.AbstractEventLoop:
        return _VirtualLoop(self)

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=self.new_loop) as runner:
            return runner.run(main)
