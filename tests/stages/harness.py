"""Drive one stage on the virtual clock with frames scheduled at given times."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from cascade.clock import VirtualClock
from cascade.frames import Frame, SystemFrame
from cascade.graph import Graph
from cascade.stage import Stage, StageContext
from cascade.tracing import MemoryTrace, Tracer


class Collector(Stage):
    """Records every ordered frame and control frame it receives, with the time."""

    accepts: ClassVar[tuple[type[Frame], ...]] = (Frame,)

    def __init__(self) -> None:
        self.frames: list[tuple[float, Frame]] = []

    async def process(self, frame: Frame) -> None:
        self.frames.append((self.now(), frame))

    async def on_system(self, frame: SystemFrame) -> None:
        self.frames.append((self.now(), frame))

    def of(self, kind: type[Frame]) -> list[Frame]:
        return [f for _, f in self.frames if isinstance(f, kind)]


@dataclass
class Run:
    trace: MemoryTrace
    collector: Collector
    ctx: StageContext
    stage: Stage
    notes: list[object] = field(default_factory=list)


Step = tuple[float, Callable[[StageContext], Frame]]


def drive(stage: Stage, steps: Sequence[Step], until: float) -> Run:
    """Send each step's frame at its time (control frames are broadcast), then run on."""
    clock = VirtualClock()
    trace = MemoryTrace()
    ctx = StageContext("call", clock, Tracer("call", clock, [trace]), 16000,
                       logging.getLogger("test"))
    collector = Collector()
    graph = Graph({"stage": stage, "out": collector}, [("stage", "out")], ctx)

    async def main() -> None:
        await graph.start()
        for when, make in sorted(steps, key=lambda s: s[0]):
            await clock.sleep_until(when)
            await graph.send(make(ctx))
        await clock.sleep_until(until)
        await graph.stop()

    clock.run(main())
    return Run(trace, collector, ctx, stage)
