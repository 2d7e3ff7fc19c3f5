"""The stage graph: interruption, control frames, routing, end of stream, backpressure, errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from cascade import GraphError, MemoryTrace, VirtualClock
from cascade.frames import (
    Cancel,
    EndOfStream,
    ErrorFrame,
    Event,
    Frame,
    Interrupt,
    SystemFrame,
)
from cascade.graph import Graph
from cascade.stage import Stage
from tests.core.harness import (
    CONVERSATION,
    LOG,
    Note,
    Recorder,
    Token,
    context,
    label,
    note,
    token,
    within,
)


def interrupt(turn: int, kind: type[Interrupt | Cancel] = Interrupt) -> Interrupt | Cancel:
    return kind(conversation=CONVERSATION, turn=turn, time=0.0, reason="test")


def end_of_stream(time: float = 0.0) -> EndOfStream:
    return EndOfStream(conversation=CONVERSATION, turn=1, time=time)


def event(name: str) -> Event:
    return Event(conversation=CONVERSATION, turn=1, time=0.0, name=name)


class Generator(Stage):
    """LLM-like: for each Note, ``count`` tokens of the note's turn, one every ``interval`` s."""

    accepts = (Note,)
    interruptible = True

    def __init__(self, count: int = 4, interval: float = 1.0) -> None:
        self.count = count
        self.interval = interval
        self.cancelled: list[tuple[str, float]] = []

    async def process(self, frame: Frame) -> None:
        assert isinstance(frame, Note)
        try:
            for index in range(self.count):
                await self.ctx.clock.sleep(self.interval)
                await self.push(token(f"{frame.label}.{index}", frame.turn, self.now()))
        except asyncio.CancelledError:
            self.cancelled.append((frame.label, self.now()))
            raise


class Relay(Recorder):
    """A Recorder that passes every frame it handled on to its successors."""

    async def process(self, frame: Frame) -> None:
        await super().process(frame)
        await self.push(frame)


class Splitter(Stage):
    """For each Note ``x``: a Note ``x.n`` and a Token ``x.t``, in that order."""

    accepts = (Note,)

    async def process(self, frame: Frame) -> None:
        assert isinstance(frame, Note)
        await self.push(note(f"{frame.label}.n", frame.turn))
        await self.push(token(f"{frame.label}.t", frame.turn))


Script = Callable[[Graph, VirtualClock], Awaitable[None]]


def run(stages: dict[str, Stage], edges: list[tuple[str, str]], script: Script,
        inbox_size: int = 64, trace: MemoryTrace | None = None, end_input: bool = True,
        ) -> Graph:
    """Start a graph on a fresh virtual clock, run ``script``, end the input, stop."""
    clock = VirtualClock()
    graph = Graph(stages, edges, context(clock, trace or MemoryTrace()), inbox_size)

    async def main() -> None:
        await graph.start()
        try:
            await script(graph, clock)
            if end_input:
                await graph.send(end_of_stream(clock.now()))
            await within(graph.wait_finished())
        finally:
            await graph.stop()

    clock.run(main())
    return graph


# --- interruption -----------------------------------------------------------


def test_interrupt_discards_queued_data_of_its_turn_everywhere_and_keeps_the_rest() -> None:
    first = Recorder(accepts=(Note, Token), delay=1.0)
    second = Recorder(accepts=(Note, Token), delay=1.0)
    queued: list[int] = []

    async def script(graph: Graph, clock: VirtualClock) -> None:
        for frame in (token("t1a"), token("t1b"), note("n1"), token("t2", turn=2),
                      token("t0", turn=0), token("t1c")):
            await graph.send(frame)
        await clock.sleep_until(0.5)
        await graph.send(interrupt(turn=1))
        queued.extend(len(graph.inbox(name)) for name in ("first", "second"))

    run({"first": first, "second": second}, [], script)
    for stage in (first, second):
        # t1a was already being handled (not interruptible): it completes.
        assert stage.seen == [("t1a", 0.0), ("n1", 1.0), ("t2", 2.0)]
        assert stage.done[0] == ("t1a", 1.0)
        assert stage.cancelled == []
        assert [(type(f), f.turn, t) for f, t in stage.system] == [(Interrupt, 1, 0.5)]
    assert queued == [2, 2]


@pytest.mark.parametrize("kind", [Interrupt, Cancel])
def test_interrupt_cancels_the_interruptible_stage_working_on_its_turn(
        kind: type[Interrupt | Cancel]) -> None:
    generator = Generator(count=4, interval=1.0)
    sink = Recorder(accepts=(Token,))

    async def script(graph: Graph, clock: VirtualClock) -> None:
        await graph.send(note("a", turn=1))
        await graph.send(note("b", turn=2))
        await clock.sleep_until(2.5)
        await graph.send(interrupt(1, kind))
        await clock.sleep_until(10.0)

    run({"llm": generator, "sink": sink}, [("llm", "sink")], script)
    assert generator.cancelled == [("a", 2.5)]
    # Turn 1 stopped after two tokens; turn 2 started at once and ran to the end.
    assert sink.seen == [("a.0", 1.0), ("a.1", 2.0),
                         ("b.0", 3.5), ("b.1", 4.5), ("b.2", 5.5), ("b.3", 6.5)]


def test_interrupt_of_an_earlier_turn_leaves_later_work_alone() -> None:
    generator = Generator(count=3, interval=1.0)
    sink = Recorder(accepts=(Token,))

    async def script(graph: Graph, clock: VirtualClock) -> None:
        await graph.send(note("c", turn=3))
        await clock.sleep_until(1.5)
        await graph.send(interrupt(turn=2))
        await clock.sleep_until(10.0)

    run({"llm": generator, "sink": sink}, [("llm", "sink")], script)
    assert generator.cancelled == []
    assert sink.seen == [("c.0", 1.0), ("c.1", 2.0), ("c.2", 3.0)]


class Straggler(Stage):
    """Not interruptible: for each Note, after ``delay`` s, a token of its turn and the next."""

    accepts = (Note,)

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def process(self, frame: Frame) -> None:
        await self.ctx.clock.sleep(self.delay)
        await self.push(token("late", frame.turn))
        await self.push(token("next", frame.turn + 1))


def test_a_late_data_frame_of_an_interrupted_turn_never_reaches_downstream() -> None:
    sink = Recorder(accepts=(Token, Note))

    async def script(graph: Graph, clock: VirtualClock) -> None:
        await graph.send(note("go", turn=1))
        await clock.sleep_until(1.0)
        await graph.send(interrupt(turn=1))
        await clock.sleep_until(5.0)

    run({"slow": Straggler(delay=3.0), "sink": sink}, [("slow", "sink")], script)
    assert sink.seen == [("next", 3.0)]


def test_a_data_frame_sent_after_the_interrupt_is_dropped_but_later_turns_pass() -> None:
    sink = Recorder(accepts=(Token,))

    async def script(graph: Graph, clock: VirtualClock) -> None:
        await graph.send(interrupt(turn=2))
        for frame in (token("old", turn=1), token("cut", turn=2), token("new", turn=3)):
            await graph.send(frame)

    run({"sink": sink}, [], script)
    assert sink.labels() == ["new"]


def test_interrupt_frees_a_producer_waiting_on_a_full_inbox() -> None:
    generator = Generator(count=6, interval=0.0)
    sink = Recorder(accepts=(Token,), delay=10.0)

    async def script(graph: Graph, clock: VirtualClock) -> None:
        await graph.send(note("a", turn=1))
        await graph.send(note("b", turn=2))
        await clock.sleep_until(1.0)
        await graph.send(interrupt(turn=1))
        await clock.sleep_until(100.0)

    run({"llm": generator, "sink": sink}, [("llm", "sink")], script, inbox_size=2)
    assert generator.cancelled == [("a", 1.0)]
    # a.0 was being handled; a.1 and a.2 were queued and dropped; all of turn 2 arrived.
    assert sink.labels() == ["a.0", "b.0", "b.1", "b.2", "b.3", "b.4", "b.5"]


# --- control frames -----------------------------------------------------------


class Announcer(Stage):
    """Pushes a control frame while handling each Note, then passes the Note on."""

    accepts = (Note,)

    async def process(self, frame: Frame) -> None:
        await self.push(event(f"from-{label(frame)}"))
        await self.push(frame)


def test_control_frames_reach_every_stage_ahead_of_queued_frames() -> None:
    busy = Recorder(accepts=(Note,), delay=1.0)
    idle = Recorder(accepts=(Token,))

    async def script(graph: Graph, clock: VirtualClock) -> None:
        for name in ("n1", "n2", "n3"):
            await graph.send(note(name))
        await clock.sleep_until(0.5)
        await graph.send(event("hangup"))

    run({"busy": busy, "idle": idle}, [], script)
    for stage in (busy, idle):
        assert [(f.name, t) for f, t in stage.system if isinstance(f, Event)] == [
            ("hangup", 0.5)]
    # on_system ran while n1 was in hand, before the queued n2 and n3 were processed.
    assert busy.seen == [("n1", 0.0), ("n2", 1.0), ("n3", 2.0)]
    assert "Event" not in busy.labels()


def test_a_stage_control_frame_skips_the_edges_and_its_sender() -> None:
    announcer = Announcer()
    downstream = Recorder(accepts=(Frame,))
    bystander = Recorder(accepts=(Token,))

    async def script(graph: Graph, clock: VirtualClock) -> None:
        await graph.send(note("x"))

    run({"announcer": announcer, "down": downstream, "other": bystander},
        [("announcer", "down")], script)
    for stage in (downstream, bystander):
        assert [f.name for f, _ in stage.system if isinstance(f, Event)] == ["from-x"]
    # The control frame went around the edge, not along it; the Note went along it.
    assert downstream.labels() == ["x"]
    assert bystander.labels() == []


# --- routing and end of stream --------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Memo(Note):
    """A subtype of Note: routed wherever Note is accepted."""


def test_frames_go_only_to_successors_that_accept_their_type() -> None:
    notes = Relay(accepts=(Note,))
    tokens = Relay(accepts=(Token,))
    everything = Recorder(accepts=(Frame,))
    nothing = Recorder(accepts=())

    async def script(graph: Graph, clock: VirtualClock) -> None:
        await graph.send(note("a"))
        await graph.send(Memo(conversation=CONVERSATION, turn=1, time=0.0, label="m"))

    graph = run(
        {"split": Splitter(), "notes": notes, "tokens": tokens, "all": everything,
         "none": nothing},
        [("split", "notes"), ("split", "tokens"), ("split", "all"), ("split", "none")],
        script,
    )
    assert notes.labels() == ["a.n", "m.n"]
    assert tokens.labels() == ["a.t", "m.t"]
    assert everything.labels() == ["a.n", "a.t", "m.n", "m.t"]
    assert nothing.labels() == []
    # Every stage still saw the end of stream.
    for stage in (notes, tokens, everything, nothing):
        assert len(stage.finished_at) == 1
    assert [r.name for r in graph.entries] == ["split"]


def test_input_goes_to_the_entry_stages_that_accept_it() -> None:
    notes = Recorder(accepts=(Note,))
    tokens = Recorder(accepts=(Token,))

    async def script(graph: Graph, clock: VirtualClock) -> None:
        await graph.send(note("n"))
        await graph.send(Memo(conversation=CONVERSATION, turn=1, time=0.0, label="m"))
        await graph.send(token("t"))

    run({"notes": notes, "tokens": tokens}, [], script)
    assert notes.labels() == ["n", "m"]
    assert tokens.labels() == ["t"]


def test_end_of_stream_waits_for_every_predecessor_at_a_fan_in() -> None:
    fast = Relay(accepts=(Note,), delay=0.5)
    slow = Relay(accepts=(Token,), delay=2.0)
    join = Recorder(accepts=(Note, Token))
    finished: list[float] = []

    async def script(graph: Graph, clock: VirtualClock) -> None:
        await graph.send(note("a"))
        await graph.send(note("b"))
        await graph.send(end_of_stream())
        await within(graph.wait_finished())
        finished.append(clock.now())

    run({"split": Splitter(), "fast": fast, "slow": slow, "join": join},
        [("split", "fast"), ("split", "slow"), ("fast", "join"), ("slow", "join")], script,
        end_input=False)
    assert fast.finished_at == [1.0]
    assert slow.finished_at == [4.0]
    # The join finished once, after the slower branch's last frame, not at the first EOS.
    assert join.finished_at == [4.0]
    assert join.seen == [("a.n", 0.5), ("b.n", 1.0), ("a.t", 2.0), ("b.t", 4.0)]
    assert finished == [4.0]


# --- backpressure -------------------------------------------------------------


def test_a_slow_sink_makes_put_wait_and_its_inbox_never_overflows() -> None:
    sink = Recorder(accepts=(Note,), delay=1.0)
    sent_at: list[float] = []
    depth: list[int] = []
    dropped: list[int] = []

    async def script(graph: Graph, clock: VirtualClock) -> None:
        inbox = graph.inbox("sink")
        for index in range(10):
            await graph.send(note(f"n{index}"))
            sent_at.append(clock.now())
            depth.append(len(inbox))
        dropped.append(inbox.dropped)

    run({"sink": sink}, [], script, inbox_size=4)
    # Four wait in the inbox and one is in hand; each later send waits one frame's time.
    assert sent_at == [0, 0, 0, 0, 0, 1, 2, 3, 4, 5]
    assert max(depth) == 4
    assert sink.labels() == [f"n{i}" for i in range(10)]
    assert dropped == [0]


def test_offer_refuses_and_counts_drops_when_the_inbox_is_full() -> None:
    sink = Recorder(accepts=(Note,), delay=1.0)
    answers: list[bool] = []
    dropped: list[int] = []

    async def script(graph: Graph, clock: VirtualClock) -> None:
        for index in range(7):
            answers.append(graph.offer(note(f"n{index}")))
        await asyncio.sleep(0)  # the sink takes n0 off its inbox
        answers.append(graph.offer(note("n7")))
        answers.append(graph.offer(note("n8")))
        dropped.append(graph.inbox("sink").dropped)

    run({"sink": sink}, [], script, inbox_size=4)
    assert answers == [True] * 4 + [False] * 3 + [True, False]
    assert dropped == [4]
    assert sink.labels() == ["n0", "n1", "n2", "n3", "n7"]


# --- errors -------------------------------------------------------------------


class Flaky(Recorder):
    """Raises on the Note labelled ``bad``; handles every other frame."""

    async def process(self, frame: Frame) -> None:
        await super().process(frame)
        if label(frame) == "bad":
            raise ValueError("cannot handle 'bad'")


def test_a_failing_frame_is_reported_and_the_next_frames_still_run(
        caplog: pytest.LogCaptureFixture) -> None:
    flaky = Flaky(accepts=(Note,), delay=1.0)
    watcher = Recorder(accepts=(Token,))
    trace = MemoryTrace()

    async def script(graph: Graph, clock: VirtualClock) -> None:
        for name, turn in (("ok", 1), ("bad", 2), ("after", 2)):
            await graph.send(note(name, turn=turn))

    with caplog.at_level(logging.ERROR, logger=LOG):
        run({"flaky": flaky, "watch": watcher}, [], script, trace=trace)

    assert flaky.labels() == ["ok", "bad", "after"]
    [span] = trace.named("error")
    assert (span.conversation, span.stage, span.turn, span.start, span.end) == (
        CONVERSATION, "flaky", 2, 2.0, 2.0)
    assert span.attrs == {"error": "ValueError: cannot handle 'bad'", "frame": "Note"}
    errors = [(f, t) for f, t in watcher.system if isinstance(f, ErrorFrame)]
    assert [(f.stage, f.turn, f.message, t) for f, t in errors] == [
        ("flaky", 2, "ValueError: cannot handle 'bad'", 2.0)]
    assert not any(isinstance(f, ErrorFrame) for f, _ in flaky.system), "sent to its sender"
    [record] = [r for r in caplog.records if r.name == LOG]
    assert record.levelno == logging.ERROR
    assert "'flaky'" in record.getMessage()
    assert "cannot handle 'bad'" in record.getMessage()


class FailsToListen(Recorder):
    async def on_system(self, frame: SystemFrame) -> None:
        raise RuntimeError(f"deaf to {type(frame).__name__}")

    async def finish(self) -> None:
        raise RuntimeError("cannot finish")


def test_failures_in_on_system_and_finish_are_reported_and_the_graph_finishes() -> None:
    deaf = FailsToListen(accepts=(Note,))
    watcher = Recorder(accepts=(Token,))
    trace = MemoryTrace()

    async def script(graph: Graph, clock: VirtualClock) -> None:
        await graph.send(event("ping"))
        await graph.send(note("n"))

    run({"deaf": deaf, "watch": watcher}, [], script, trace=trace)
    assert deaf.labels() == ["n"]
    assert [(s.stage, s.attrs["frame"]) for s in trace.named("error")] == [
        ("deaf", "Event"), ("deaf", "EndOfStream")]
    messages = [f.message for f, _ in watcher.system if isinstance(f, ErrorFrame)]
    assert messages == ["RuntimeError: deaf to Event", "RuntimeError: cannot finish"]
    assert watcher.finished_at == [0.0]


class Stubborn(Stage):
    async def stop(self) -> None:
        raise RuntimeError("will not stop")


def test_stop_reports_a_failing_stage_and_stops_the_others(
        caplog: pytest.LogCaptureFixture) -> None:
    stopped: list[str] = []

    class Polite(Stage):
        async def stop(self) -> None:
            stopped.append(self.name)

    clock = VirtualClock()
    graph = Graph({"stubborn": Stubborn(), "polite": Polite()}, [], context(clock))

    async def main() -> None:
        await graph.start()
        await graph.stop()

    with caplog.at_level(logging.ERROR, logger=LOG):
        clock.run(main())
    assert stopped == ["polite"]
    assert any("'stubborn'" in r.getMessage() and "will not stop" in r.getMessage()
               for r in caplog.records)


# --- construction ---------------------------------------------------------------


def test_an_edge_naming_an_unknown_stage_is_a_graph_error() -> None:
    clock = VirtualClock()
    with pytest.raises(GraphError, match=r"vad -> ghost.*'ghost'.*stages: vad, asr"):
        Graph({"vad": Recorder(), "asr": Recorder()}, [("vad", "ghost")], context(clock))
    with pytest.raises(GraphError, match="'phantom'"):
        Graph({"vad": Recorder()}, [("phantom", "vad")], context(clock))


def test_a_graph_needs_a_stage() -> None:
    with pytest.raises(GraphError, match="at least one stage"):
        Graph({}, [], context(VirtualClock()))


def test_stages_are_bound_to_their_names_and_the_context() -> None:
    clock = VirtualClock()
    ctx = context(clock)
    first, second = Recorder(), Recorder()
    graph = Graph({"first": first, "second": second}, [("first", "second")], ctx)
    assert (first.name, second.name) == ("first", "second")
    assert first.ctx is ctx and second.ctx is ctx
    assert graph.stages == {"first": first, "second": second}
    assert [r.name for r in graph.entries] == ["first"]


def test_a_graph_without_an_entry_stage_is_a_graph_error() -> None:
    with pytest.raises(GraphError, match="entry"):
        Graph({"a": Recorder(), "b": Recorder()}, [("a", "b"), ("b", "a")],
              context(VirtualClock()))
