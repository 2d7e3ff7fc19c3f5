"""The stage graph: stages joined by bounded inboxes into a directed graph.

Ordered frames travel along edges to the successors that accept their type.
Control frames (``SystemFrame``) skip the edges: they reach every stage at once,
ahead of queued frames. An ``Interrupt`` for turn T discards queued data frames
of turns <= T everywhere, cancels interruptible stages working on such a turn,
and makes every inbox drop late data frames of those turns, so audio from a
cancelled reply cannot play later. A stage that raises ends its turn with an
``error`` span and an ``ErrorFrame``; the graph keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from cascade.errors import GraphError
from cascade.frames import (
    Cancel,
    DataFrame,
    EndOfStream,
    ErrorFrame,
    Frame,
    Interrupt,
    SystemFrame,
)
from cascade.inbox import Inbox
from cascade.stage import Stage, StageContext

Observer = Callable[[str, Frame], None]


class _Runner:
    """Drives one stage: its inbox, its worker task and its routing table."""

    def __init__(self, graph: Graph, name: str, stage: Stage, inbox_size: int) -> None:
        self.graph = graph
        self.name = name
        self.stage = stage
        self.inbox = Inbox(inbox_size)
        self.successors: list[_Runner] = []
        self.predecessors = 0
        self.eos_seen = 0
        self.cut_turn = -1
        self.current: Frame | None = None
        self.task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()
        self._routes: dict[type[Frame], list[_Runner]] = {}
        self.inputs: tuple[type[Frame], ...] = (EndOfStream, *stage.accepts)
        """What this stage takes from outside the graph: what it accepts, and EndOfStream."""

    def routes(self, kind: type[Frame]) -> list[_Runner]:
        found = self._routes.get(kind)
        if found is None:
            found = [
                r for r in self.successors
                if kind is EndOfStream or issubclass(kind, r.stage.accepts)
            ]
            self._routes[kind] = found
        return found

    async def emit(self, frame: Frame) -> None:
        graph = self.graph
        for observer in graph.observers:
            observer(self.name, frame)
        if isinstance(frame, SystemFrame):
            await graph.broadcast(frame, origin=self)
            return
        for runner in self.routes(type(frame)):
            await runner.inbox.put(frame)

    def start(self) -> None:
        self.task = asyncio.create_task(self._work(None), name=f"stage:{self.name}")

    def cut(self, turn: int) -> None:
        """Apply an interruption of ``turn``: drop stale data, cancel stale work."""
        if turn <= self.cut_turn:
            return
        self.cut_turn = turn
        self.inbox.discard(lambda f: isinstance(f, DataFrame) and f.turn <= turn)
        current = self.current
        if (
            self.stage.interruptible
            and current is not None
            and current.turn <= turn
            and self.task is not None
        ):
            old = self.task
            old.cancel()
            self.current = None
            self.task = asyncio.create_task(self._work(old), name=f"stage:{self.name}")

    async def _work(self, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await previous
        inbox = self.inbox
        stage = self.stage
        while True:
            frame = await inbox.get()
            if isinstance(frame, EndOfStream):
                self.eos_seen += 1
                if self.eos_seen >= max(1, self.predecessors):
                    await self._finish(frame)
                continue
            if frame.turn <= self.cut_turn and (
                    stage.interruptible or isinstance(frame, DataFrame)):
                continue  # work for a reply that was cut: never start it
            self.current = frame
            try:
                await stage.process(frame)
            except Exception as exc:
                await self.graph.report_error(self, frame, exc)
            finally:
                self.current = None

    async def _finish(self, frame: EndOfStream) -> None:
        try:
            await self.stage.finish()
        except Exception as exc:
            await self.graph.report_error(self, frame, exc)
        for runner in self.successors:
            await runner.inbox.put(frame)
        self.done.set()


def _check_acyclic(runners: dict[str, _Runner]) -> None:
    """Ordered frames may not loop (feedback travels as control frames)."""
    indegree = {name: r.predecessors for name, r in runners.items()}
    ready = [name for name, degree in indegree.items() if degree == 0]
    seen = 0
    while ready:
        runner = runners[ready.pop()]
        seen += 1
        for succ in runner.successors:
            indegree[succ.name] -= 1
            if indegree[succ.name] == 0:
                ready.append(succ.name)
    if seen != len(runners):
        looped = ", ".join(sorted(n for n, d in indegree.items() if d > 0))
        raise GraphError(f"the edges form a cycle through: {looped}; ordered frames must "
                         "flow one way (feedback such as agent speech travels as control "
                         "frames to every stage)")


class Graph:
    """A directed graph of stages for one conversation."""

    def __init__(
        self,
        stages: dict[str, Stage],
        edges: Iterable[tuple[str, str]],
        ctx: StageContext,
        inbox_size: int = 64,
    ) -> None:
        if not stages:
            raise GraphError("a graph needs at least one stage")
        self.ctx = ctx
        self.observers: list[Observer] = []
        self._runners = {name: _Runner(self, name, st, inbox_size) for name, st in stages.items()}
        edges = list(edges)
        if len(set(edges)) != len(edges):
            twice = sorted({e for e in edges if edges.count(e) > 1})
            raise GraphError(f"edges listed twice: {', '.join(f'{a} -> {b}' for a, b in twice)}")
        for src, dst in edges:
            for end in (src, dst):
                if end not in self._runners:
                    known = ", ".join(self._runners)
                    raise GraphError(
                        f"edge {src} -> {dst}: no stage named '{end}' (stages: {known})"
                    )
            self._runners[src].successors.append(self._runners[dst])
            self._runners[dst].predecessors += 1
        self.entries = [r for r in self._runners.values() if r.predecessors == 0]
        if not self.entries:
            raise GraphError("the graph has no entry stage: every stage has a predecessor, "
                             "so input has nowhere to go (check the edges for a loop)")
        _check_acyclic(self._runners)
        for name, runner in self._runners.items():
            runner.stage.bind(name, ctx, runner.emit)

    @property
    def stages(self) -> dict[str, Stage]:
        return {name: r.stage for name, r in self._runners.items()}

    def inbox(self, stage: str) -> Inbox:
        return self._runners[stage].inbox

    async def start(self) -> None:
        for runner in self._runners.values():
            await runner.stage.start()
        for runner in self._runners.values():
            runner.start()

    async def send(self, frame: Frame) -> None:
        """Feed an input frame to every entry stage that accepts it (waits when full)."""
        if isinstance(frame, SystemFrame):
            await self.broadcast(frame)
            return
        for runner in self.entries:
            if isinstance(frame, runner.inputs):
                await runner.inbox.put(frame)

    def offer(self, frame: Frame) -> bool:
        """Feed an ordered frame without waiting (live sources); False when an entry inbox
        is full. Control frames go through ``send``/``broadcast``, which reach every stage."""
        accepted = True
        for runner in self.entries:
            if isinstance(frame, runner.inputs):
                accepted = runner.inbox.offer(frame) and accepted
        return accepted

    async def broadcast(self, frame: SystemFrame, origin: _Runner | None = None) -> None:
        """Deliver a control frame to every stage but its sender, ahead of queued frames."""
        if origin is None:
            for observer in self.observers:
                observer("graph", frame)
        runners = [r for r in self._runners.values() if r is not origin]
        if isinstance(frame, (Interrupt, Cancel)):
            for runner in runners:
                runner.cut(frame.turn)
        for runner in runners:
            try:
                await runner.stage.on_system(frame)
            except Exception as exc:
                await self.report_error(runner, frame, exc)

    async def report_error(self, runner: _Runner, frame: Frame, exc: BaseException) -> None:
        ctx = self.ctx
        now = ctx.clock.now()
        message = f"{type(exc).__name__}: {exc}"
        ctx.log.error(
            "stage '%s' failed on turn %d of conversation %s while handling %s: %s",
            runner.name, frame.turn, ctx.conversation, type(frame).__name__, message,
        )
        ctx.tracer.record(
            "error", runner.name, frame.turn, now, now, error=message, frame=type(frame).__name__
        )
        if not isinstance(frame, ErrorFrame):
            error = ErrorFrame(conversation=ctx.conversation, turn=frame.turn, time=now,
                               stage=runner.name, message=message)
            for observer in self.observers:  # as if the failed stage had pushed it
                observer(runner.name, error)
            await self.broadcast(error, origin=runner)

    async def wait_finished(self) -> None:
        """Wait until EndOfStream has passed through every stage."""
        await asyncio.gather(*(r.done.wait() for r in self._runners.values()))

    async def stop(self) -> None:
        tasks = [r.task for r in self._runners.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for runner in self._runners.values():
            try:
                await runner.stage.stop()
            except Exception as exc:
                self.ctx.log.error("stage '%s' failed to stop: %s", runner.name, exc)
