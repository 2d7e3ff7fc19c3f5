"""A stage's bounded input queue, with the two operations an interruption needs.

``put`` waits while the inbox is full (backpressure reaches the producer instead
of memory growing); ``offer`` refuses instead of waiting, for live sources that
must never block. ``discard`` removes queued frames that an interruption made
stale. A put with room and a get with something queued allocate nothing; a
get on an empty inbox (the usual case at real-time pace) waits on one future.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from cascade.frames import Frame


class Inbox:
    """Bounded FIFO of frames feeding one stage."""

    __slots__ = ("_getter", "_items", "_putters", "dropped", "maxsize")

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"inbox size must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self._items: deque[Frame] = deque()
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def _wake_getter(self) -> None:
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    def _wake_putter(self) -> None:
        while self._putters:
            putter = self._putters.popleft()
            if not putter.done():
                putter.set_result(None)
                return

    async def put(self, frame: Frame) -> None:
        while len(self._items) >= self.maxsize:
            putter = asyncio.get_running_loop().create_future()
            self._putters.append(putter)
            try:
                await putter
            except asyncio.CancelledError:
                if not putter.cancelled() and len(self._items) < self.maxsize:
                    self._wake_putter()  # we were woken but won't put: pass it on
                raise
        self._items.append(frame)
        self._wake_getter()

    def offer(self, frame: Frame) -> bool:
        """Put without waiting; False (and counted in ``dropped``) when full."""
        if len(self._items) >= self.maxsize:
            self.dropped += 1
            return False
        self._items.append(frame)
        self._wake_getter()
        return True

    async def get(self) -> Frame:
        while not self._items:
            self._getter = asyncio.get_running_loop().create_future()
            try:
                await self._getter
            finally:
                self._getter = None
        frame = self._items.popleft()
        if self._putters:
            self._wake_putter()
        return frame

    def discard(self, stale: Callable[[Frame], bool]) -> int:
        """Remove every queued frame for which ``stale`` is true; return how many."""
        if not self._items:
            return 0
        kept = [f for f in self._items if not stale(f)]
        removed = len(self._items) - len(kept)
        if removed:
            self._items.clear()
            self._items.extend(kept)
            for _ in range(removed):
                self._wake_putter()
        return removed
