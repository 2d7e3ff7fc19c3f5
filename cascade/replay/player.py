"""Re-executing a recorded conversation, optionally through a changed pipeline.

``plan_replay`` decides stage by stage: a stage replays its recorded output
when its adapter and validated options are the recorded ones, the stages that
feed it are the recorded ones, and none of them runs for real; every other
stage runs for real. So changing one stage re-runs it and everything
downstream, while everything upstream replays (no model needed for those).
``replay_call`` builds that graph, feeds the recorded caller frames at their
recorded times and returns the new trace.

Replayed stages reproduce what they did, not what they would do now: the
caller's audio is the recorded audio (the caller does not answer a changed
reply), a replayed stage does not react to a changed reply
(``ReplayResult.divergences`` says when the control frames it handles
changed), and a replayed VAD keeps the turn numbers it stamped even when a
re-run turn controller now counts turns differently. Stages that run for real
take their own time: on the virtual clock (the default) compute costs no time,
so re-run stages of a call recorded in real time report model latencies of zero.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from cascade.clock import Clock, VirtualClock
from cascade.config import parse_pipeline
from cascade.conversation import Conversation, Pipeline, remote_stage
from cascade.errors import CascadeError, ConfigError
from cascade.frames import EndOfStream, Frame, SystemFrame, UserAudio
from cascade.graph import Graph, Observer
from cascade.playback import PlaybackHistory
from cascade.playout import AudioSink, Playout
from cascade.registry import load_adapter
from cascade.replay.format import Entry, Recording
from cascade.replay.recorder import PLAYOUT, graph_edges
from cascade.replay.substitute import ReplayedStage, Turnstile
from cascade.stage import Stage, StageContext
from cascade.trace_report import shorten
from cascade.tracing import MemoryTrace, Span, Tracer, TraceSink

log = logging.getLogger("cascade")
PLAYBACK_SECONDS = 4.0  # as Pipeline.conversation keeps it


@dataclass(slots=True, frozen=True)
class StagePlan:
    """Whether one stage replays its recording or runs for real, and why."""

    stage: str
    adapter: str
    replayed: bool
    why: str


@dataclass(slots=True)
class ReplayResult:
    """The trace of a replay, what replayed and what ran, and where replay was not exact."""

    spans: list[Span]
    plan: dict[str, StagePlan]
    divergences: dict[str, str]
    """Replayed stage -> how the control frames it got first differed from the recording."""

    @property
    def replayed(self) -> list[str]:
        return [name for name, step in self.plan.items() if step.replayed]

    @property
    def rerun(self) -> list[str]:
        return [name for name, step in self.plan.items() if not step.replayed]


def _options_change(old: dict[str, object], new: dict[str, object]) -> str:
    changed = [key for key in [*old, *(k for k in new if k not in old)]
               if old.get(key) != new.get(key)]
    return ", ".join(f"{key} {shorten(repr(old.get(key)), 24)} -> "
                     f"{shorten(repr(new.get(key)), 24)}" for key in changed)


def _predecessors(edges: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for src, dst in edges:
        found.setdefault(dst, []).append(src)
    return {name: sorted(sources) for name, sources in found.items()}


def plan_replay(recording: Recording, pipeline: Pipeline | None = None,
                rerun: Iterable[str] = ()) -> dict[str, StagePlan]:
    """Stage -> replay or run, for ``pipeline`` (None: the recorded pipeline unchanged).
    Stages in ``rerun`` run for real even when unchanged (a code change, a check)."""
    if pipeline is None:
        names, edges = recording.stage_names(), recording.edges
        adapters = {n: s.adapter for n, s in recording.stages.items()}
    else:
        if pipeline.config.sample_rate != recording.sample_rate:
            raise ConfigError(
                f"the recording's audio runs at {recording.sample_rate} Hz but the pipeline "
                f"'{pipeline.config.name}' at {pipeline.config.sample_rate} Hz: set its "
                f"sample_rate to {recording.sample_rate} to replay this recording")
        names, edges = [*pipeline.adapters, PLAYOUT], graph_edges(pipeline)
        adapters = {n: pipeline.config.stages[n].adapter for n in pipeline.adapters}
    forced = set(rerun)
    unknown = sorted(forced - set(names))
    if unknown:
        raise ConfigError(f"cannot re-run {', '.join(unknown)}: no such stage "
                          f"(stages: {', '.join(names)})")
    inputs, recorded_inputs = _predecessors(edges), _predecessors(recording.edges)

    def own_change(name: str) -> str | None:
        if name in forced:
            return "re-run on request"
        if name not in recording.stage_names():
            return "not in the recording"
        if inputs.get(name, []) != recorded_inputs.get(name, []):
            return (f"fed by {', '.join(inputs.get(name, [])) or 'the caller'} (recorded: "
                    f"{', '.join(recorded_inputs.get(name, [])) or 'the caller'})")
        if pipeline is None or name == PLAYOUT:
            return None
        recorded = recording.stages[name]
        if adapters[name] != recorded.adapter:
            return f"adapter {recorded.adapter} -> {adapters[name]}"
        options = pipeline.adapters[name][1].model_dump(mode="json")
        if options != recorded.options:
            return f"options: {_options_change(recorded.options, options)}"
        return None

    plan: dict[str, StagePlan] = {}

    def decide(name: str, visiting: frozenset[str]) -> StagePlan:
        if name in plan:
            return plan[name]
        why = own_change(name)
        if why is None:
            for source in inputs.get(name, []):
                if source not in visiting and not decide(source, visiting | {name}).replayed:
                    why = f"downstream of {source}"
                    break
        step = StagePlan(name, adapters.get(name, PLAYOUT), why is None, why or "unchanged")
        plan[name] = step
        return step

    for name in names:
        decide(name, frozenset())
    return {name: plan[name] for name in _upstream_first(names, inputs)}


def _upstream_first(names: list[str], inputs: dict[str, list[str]]) -> list[str]:
    """``names`` with every stage after the stages feeding it (else in the given order)."""
    ordered: list[str] = []
    placed: set[str] = set()

    def place(name: str, visiting: frozenset[str]) -> None:
        if name in placed or name in visiting or name not in names:
            return
        for source in inputs.get(name, []):
            place(source, visiting | {name})
        placed.add(name)
        ordered.append(name)

    for name in names:
        place(name, frozenset())
    return ordered


def _reacts_to_control(recording: Recording, name: str) -> bool:
    """Whether the recorded stage handles control frames (unknown adapters: assume so)."""
    if name == PLAYOUT:
        return True
    try:
        cls: type[Stage] = load_adapter(recording.stages[name].adapter)
    except (CascadeError, KeyError):
        return True
    return cls.on_system is not Stage.on_system


def _real_stage(pipeline: Pipeline, name: str) -> Stage:
    adapter, options = pipeline.adapters[name]
    adapter.ensure_available(pipeline.config.stages[name].adapter, options)
    remote = pipeline.config.stages[name].remote
    return remote_stage(name, adapter, pipeline.config, remote) if remote \
        else adapter.create(options)


async def _feed(conversation: Conversation, inputs: list[Entry], turnstile: Turnstile) -> None:
    """The caller's recorded frames, each at its recorded time and place. Audio and the
    end of input carry the conversation's turn as ``Conversation`` stamps it: a re-run
    turn controller may have moved it elsewhere than in the recording."""
    ended = False
    for entry in inputs:
        frame = entry.item
        assert isinstance(frame, Frame)
        await conversation.clock.sleep_until(entry.at)
        await turnstile.wait(entry.seq)
        try:
            turn = conversation.ctx.turn
            if isinstance(frame, (UserAudio, EndOfStream)) and frame.turn != turn:
                frame = dataclasses.replace(frame, turn=turn)
            await conversation.send(frame)
        finally:
            turnstile.done(entry.seq)
        ended = ended or isinstance(frame, EndOfStream)
    if not ended:  # the recorded call stopped without ending its input (it crashed)
        await conversation.end_input()


async def replay_conversation(
    recording: Recording,
    pipeline: Pipeline | None,
    clock: Clock,
    *,
    rerun: Iterable[str] = (),
    traces: Iterable[TraceSink] = (),
    sink: AudioSink | None = None,
    observers: Iterable[Observer] = (),
) -> ReplayResult:
    """Re-execute ``recording`` through ``pipeline`` (None: the recorded one) on ``clock``;
    ``observers`` see every frame of the replay, as graph observers do."""
    plan = plan_replay(recording, pipeline, rerun)
    if pipeline is None and not all(step.replayed for step in plan.values()):
        pipeline = Pipeline(parse_pipeline(recording.pipeline, "the recorded pipeline"))
    memory = MemoryTrace()
    cid, rate = recording.conversation, recording.sample_rate
    tracer = Tracer(cid, clock, [memory, *traces])
    ctx = StageContext(cid, clock, tracer, rate, log, turn=recording.first_turn,
                       playback=PlaybackHistory(rate, PLAYBACK_SECONDS))
    replayed = {name for name, step in plan.items() if step.replayed}
    entries = [e for e in recording.entries if e.stage is None or e.stage in replayed]
    turnstile = Turnstile(e.seq for e in entries)
    stages: dict[str, Stage] = {}
    order = recording.stage_names() if pipeline is None else [*pipeline.adapters, PLAYOUT]
    for name in order:  # as Pipeline.conversation orders them: that is the start order
        step = plan[name]
        if step.replayed:
            control = [e.item for e in recording.entries
                       if isinstance(e.item, SystemFrame) and e.stage != name
                       ] if _reacts_to_control(recording, name) else None
            stages[name] = ReplayedStage((e for e in entries if e.stage == name), turnstile,
                                         control)
        elif name == PLAYOUT:
            stages[name] = Playout(sink)
        else:
            assert pipeline is not None
            stages[name] = _real_stage(pipeline, name)
    edges = recording.edges if pipeline is None else graph_edges(pipeline)
    inbox = pipeline.config.inbox_size if pipeline is not None \
        else int(recording.pipeline.get("inbox_size", 64))
    graph = Graph(stages, edges, ctx, inbox)
    graph.observers.extend(observers)
    conversation = Conversation(graph, ctx)
    await conversation.start()
    feeder = asyncio.create_task(_feed(conversation, recording.inputs(), turnstile))
    try:
        await feeder
        await conversation.wait_finished()
    finally:
        feeder.cancel()
        await conversation.stop()
    divergences = {name: stage.divergence for name, stage in stages.items()
                   if isinstance(stage, ReplayedStage) and stage.divergence}
    return ReplayResult(memory.spans, plan, divergences)


def replay_call(
    recording: Recording,
    pipeline: Pipeline | None = None,
    *,
    clock: Clock | None = None,
    rerun: Iterable[str] = (),
    traces: Iterable[TraceSink] = (),
    sink: AudioSink | None = None,
    observers: Iterable[Observer] = (),
) -> ReplayResult:
    """Synchronous ``replay_conversation``; by default on a virtual clock that starts
    where the recorded conversation started, so recorded times are reproduced."""
    clock = clock or VirtualClock(recording.started)
    return clock.run(replay_conversation(recording, pipeline, clock, rerun=rerun,
                                         traces=traces, sink=sink, observers=observers))
