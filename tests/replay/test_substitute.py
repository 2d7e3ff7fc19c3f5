"""ReplayedStage: recorded frames and spans out at their recorded times, in recorded order."""

from __future__ import annotations

import asyncio

from cascade import MemoryTrace, VirtualClock
from cascade.frames import EndOfStream, Frame, Interrupt, SystemFrame
from cascade.graph import Graph
from cascade.replay.format import Entry
from cascade.replay.substitute import ReplayedStage, Turnstile
from cascade.stage import Stage
from cascade.tracing import Span
from tests.core.harness import CONVERSATION, context, note, within
from tests.core.harness import Recorder as Collector


def test_the_turnstile_lets_entries_through_in_recorded_order() -> None:
    clock = VirtualClock()
    passed: list[int] = []
    gate = Turnstile([0, 2, 5, 7])

    async def entry(seq: int) -> None:
        await gate.wait(seq)
        passed.append(seq)
        await asyncio.sleep(0)
        gate.done(seq)

    async def main() -> None:
        await asyncio.gather(entry(7), entry(5), entry(2), entry(0))

    clock.run(within(main()))
    assert passed == [0, 2, 5, 7]


def interrupt(at: float, turn: int = 1) -> Interrupt:
    return Interrupt(conversation=CONVERSATION, turn=turn, time=at, reason="speech")


def run(stages: dict[str, Stage], edges: list[tuple[str, str]]) -> tuple[MemoryTrace, int]:
    """Run a graph with no input; the spans it recorded and the turn it ended on."""
    clock = VirtualClock()
    trace = MemoryTrace()
    ctx = context(clock, trace)

    async def main() -> None:
        graph = Graph(stages, edges, ctx)
        await graph.start()
        await graph.send(EndOfStream(conversation=CONVERSATION, turn=1, time=0.0))
        await within(graph.wait_finished())
        await graph.stop()

    clock.run(main())
    return trace, ctx.turn


def test_recorded_frames_and_spans_come_out_at_their_times() -> None:
    span = Span(CONVERSATION, 1, "src", "asr", 0.25, 0.5, {"text": "hi", "p": None})
    entries = [Entry(0, 0.5, "src", note("a", time=0.4)), Entry(1, 0.5, "src", span),
               Entry(2, 1.0, "src", interrupt(1.0)),
               Entry(3, 2.0, "src", note("b", turn=2, time=2.0), turn_to=2)]
    sink = Collector()
    trace, turn = run({"src": ReplayedStage(entries, Turnstile(range(4))), "sink": sink},
                      [("src", "sink")])
    assert sink.seen == [("a", 0.5), ("b", 2.0)]
    assert [(type(f).__name__, at) for f, at in sink.system] == [("Interrupt", 1.0)]
    assert trace.spans == [span]
    assert sink.finished_at == [2.0]  # end of input waited for the recorded output
    assert turn == 2  # as the recorded stage advanced it


def test_a_replayed_stage_reports_control_input_that_differs() -> None:
    late, missing = (ReplayedStage([], Turnstile([]), expected_control=[interrupt(1.0)])
                     for _ in range(2))

    class Interrupter(Stage):
        accepts = (Frame,)

        async def start(self) -> None:
            async def later() -> None:
                await self.ctx.clock.sleep(1.5)
                await self.push(interrupt(self.now()))
            self.task = asyncio.create_task(later())

        async def finish(self) -> None:
            await self.task

        async def on_system(self, frame: SystemFrame) -> None:
            pass

    run({"late": late, "other": Interrupter(), "sink": Collector()}, [("other", "sink")])
    assert late.divergence == ("it received Interrupt of turn 1 at 1.500 s where the "
                               "recording has Interrupt of turn 1 at 1.000 s")
    run({"missing": missing, "sink": Collector()}, [])
    assert missing.divergence == ("the recording has Interrupt of turn 1 at 1.000 s, "
                                  "which never came")
