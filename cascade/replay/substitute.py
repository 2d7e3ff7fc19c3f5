"""A recorded stage standing in for the real one: it emits, it does not compute.

``ReplayedStage`` ignores its input and, on the pipeline clock, emits exactly
the frames and records exactly the spans its stage produced in the recording,
each at its recorded time. All replayed stages and the caller input share one
``Turnstile``, so entries that happened at the same instant are replayed in
their recorded order too; on the virtual clock a replay is exact.

A replayed stage cannot react to a change downstream (a reply spoken later
changes the control frames the turn controller sees). When asked to, it checks
the control frames it receives against the recording and reports the first
difference: from there on, its recorded output may not be what it would do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from cascade.frames import Frame, SystemFrame
from cascade.replay.codec import equal
from cascade.replay.format import Entry
from cascade.stage import Stage
from cascade.tracing import Span


class Turnstile:
    """Lets recorded entries through one at a time, in recorded order."""

    def __init__(self, seqs: Iterable[int]) -> None:
        self._order = sorted(set(seqs))
        self._index = 0
        self._done: set[int] = set()
        self._gates: dict[int, asyncio.Event] = {}

    def _current(self) -> int | None:
        return self._order[self._index] if self._index < len(self._order) else None

    async def wait(self, seq: int) -> None:
        """Return once every earlier entry has been replayed."""
        if self._current() != seq:
            await self._gates.setdefault(seq, asyncio.Event()).wait()

    def done(self, *seqs: int) -> None:
        """These entries are replayed (or will never be): let the next one through."""
        self._done.update(seqs)
        while self._index < len(self._order) and self._order[self._index] in self._done:
            self._index += 1
        current = self._current()
        if current is not None and current in self._gates:
            self._gates.pop(current).set()


def describe_frame(frame: Frame | None) -> str:
    if frame is None:
        return "nothing more"
    return f"{type(frame).__name__} of turn {frame.turn} at {frame.time:.3f} s"


class ReplayedStage(Stage):
    """Emits a stage's recorded frames and spans at their recorded times."""

    def __init__(self, entries: Iterable[Entry], turnstile: Turnstile,
                 expected_control: Iterable[SystemFrame] | None = None) -> None:
        self.entries = list(entries)
        self.turnstile = turnstile
        self._expected = None if expected_control is None else list(expected_control)
        self._received = 0
        self.divergence: str | None = None
        """How the control frames received first differed from the recording (checked
        only when ``expected_control`` is given)."""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._play(), name=f"replay:{self.name}")

    async def _play(self) -> None:
        clock = self.ctx.clock
        try:
            for entry in self.entries:
                await clock.sleep_until(entry.at)
                await self.turnstile.wait(entry.seq)
                try:
                    await self._replay(entry)
                finally:
                    self.turnstile.done(entry.seq)
        finally:
            self.turnstile.done(*(e.seq for e in self.entries))  # never block the others

    async def _replay(self, entry: Entry) -> None:
        if entry.turn_to is not None:
            self.ctx.turn = entry.turn_to
        item = entry.item
        if isinstance(item, Span):
            self.ctx.tracer.record(item.name, item.stage, item.turn, item.start, item.end,
                                   **item.attrs)
        else:
            await self.push(item)

    async def on_system(self, frame: SystemFrame) -> None:
        expected = self._expected
        if expected is None or self.divergence is not None:
            return
        want = expected[self._received] if self._received < len(expected) else None
        if want is not None and equal(want, frame):
            self._received += 1
            return
        self.divergence = (f"it received {describe_frame(frame)} where the recording has "
                           f"{describe_frame(want)}")

    async def finish(self) -> None:
        """End of input: the recorded output goes on to its end, then EndOfStream moves on."""
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        expected = self._expected
        if expected is not None and self.divergence is None and self._received < len(expected):
            missed = describe_frame(expected[self._received])
            self.divergence = f"the recording has {missed}, which never came"
