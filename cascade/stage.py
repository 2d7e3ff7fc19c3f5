"""The contract of a stage: one async processor in the graph.

A stage declares which ordered frames it ``accepts``, handles them one at a time
in ``process`` and sends what it produces with ``push``. Control frames reach
every stage through ``on_system``, ahead of whatever is queued. Stages marked
``interruptible`` (LLM, TTS, playout) have the frame they are working on
cancelled when an ``Interrupt`` for that turn arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar

from cascade.clock import Clock
from cascade.frames import Frame, SystemFrame
from cascade.playback import PlaybackHistory
from cascade.tracing import Tracer


@dataclass(slots=True)
class StageContext:
    """What a stage gets from the conversation it runs in."""

    conversation: str
    clock: Clock
    tracer: Tracer
    sample_rate: int
    log: logging.Logger
    turn: int = 1
    """The user turn now forming; the turn controller advances it at each end of turn."""
    playback: PlaybackHistory | None = None
    """What the agent actually played (written by playout; the echo reference)."""


Emit = Callable[[Frame], Awaitable[None]]


class Stage:
    """Base class of every stage; subclasses override ``process`` and friends."""

    accepts: tuple[type[Frame], ...] = ()
    """Ordered frame types this stage handles (a stage may narrow or widen it in __init__)."""
    interruptible: ClassVar[bool] = False

    name: str
    ctx: StageContext
    _emit: Emit

    def bind(self, name: str, ctx: StageContext, emit: Emit) -> None:
        """Called once by the graph before ``start``."""
        self.name = name
        self.ctx = ctx
        self._emit = emit

    async def start(self) -> None:
        """Prepare per-conversation state; models are loaded before, once per process."""

    async def process(self, frame: Frame) -> None:
        """Handle one ordered frame of an accepted type."""

    async def on_system(self, frame: SystemFrame) -> None:
        """React to a control frame (interrupt, agent speech, error, ...)."""

    async def finish(self) -> None:
        """End of input: emit whatever is still held (runs before EndOfStream moves on)."""

    async def stop(self) -> None:
        """Release per-conversation resources."""

    async def push(self, frame: Frame) -> None:
        """Send a frame on: ordered frames to successors, control frames to every stage."""
        await self._emit(frame)

    def now(self) -> float:
        return self.ctx.clock.now()
