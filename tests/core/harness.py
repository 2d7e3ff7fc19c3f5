"""A harness for core tests: stage contexts on the virtual clock and stages that record.

``Recorder`` is a stage that notes when it handles each frame and each control
frame, so tests can assert what reached a stage and at which (virtual) time.
``Note`` and ``Token`` are the two test frames: an ordered frame an interruption
must keep, and a data frame it must discard.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from cascade.clock import Clock
from cascade.frames import DataFrame, Frame, SystemFrame
from cascade.stage import Stage, StageContext
from cascade.tracing import Tracer, TraceSink

T = TypeVar("T")
CONVERSATION = "call"
LOG = "cascade.test"


@dataclass(slots=True, kw_only=True)
class Note(Frame):
    """An ordered test frame: interruptions keep it."""

    label: str


@dataclass(slots=True, kw_only=True)
class Token(DataFrame):
    """A test data frame (agent output): interruptions of its turn discard it."""

    label: str


def note(label: str, turn: int = 1, time: float = 0.0) -> Note:
    return Note(conversation=CONVERSATION, turn=turn, time=time, label=label)


def token(label: str, turn: int = 1, time: float = 0.0) -> Token:
    return Token(conversation=CONVERSATION, turn=turn, time=time, label=label)


def label(frame: Frame) -> str:
    """A test frame's label, or the class name of any other frame."""
    return str(getattr(frame, "label", type(frame).__name__))


def context(clock: Clock, *sinks: TraceSink) -> StageContext:
    """A stage context for conversation ``call`` whose spans go to ``sinks``."""
    tracer = Tracer(CONVERSATION, clock, sinks)
    return StageContext(CONVERSATION, clock, tracer, 16000, logging.getLogger(LOG))


async def within(awaitable: Awaitable[T], seconds: float = 1000.0) -> T:
    """Await with a (virtual) deadline, so a stuck graph fails instead of hanging."""
    return await asyncio.wait_for(awaitable, seconds)


class Recorder(Stage):
    """Handles each accepted frame in ``delay`` seconds and records what it saw, when."""

    def __init__(
        self,
        accepts: tuple[type[Frame], ...] = (Frame,),
        delay: float = 0.0,
        interruptible: bool = False,
    ) -> None:
        self.accepts = accepts  # type: ignore[misc]
        self.interruptible = interruptible  # type: ignore[misc]
        self.delay = delay
        self.seen: list[tuple[str, float]] = []
        """(label, time processing began) of every processed frame."""
        self.done: list[tuple[str, float]] = []
        """(label, time processing ended) of every frame handled to the end."""
        self.cancelled: list[tuple[str, float]] = []
        self.system: list[tuple[SystemFrame, float]] = []
        self.finished_at: list[float] = []

    def labels(self) -> list[str]:
        return [name for name, _ in self.seen]

    async def process(self, frame: Frame) -> None:
        name = label(frame)
        self.seen.append((name, self.now()))
        try:
            if self.delay:
                await self.ctx.clock.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled.append((name, self.now()))
            raise
        self.done.append((name, self.now()))

    async def on_system(self, frame: SystemFrame) -> None:
        self.system.append((frame, self.now()))

    async def finish(self) -> None:
        self.finished_at.append(self.now())
