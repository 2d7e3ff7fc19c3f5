"""Recording a conversation while it runs, so it can be replayed exactly later.

A ``Recorder`` is a graph observer and a trace sink: it keeps every frame each
stage emits (ordered and control) and every span it records, stamped with the
pipeline-clock time and a sequence number, plus the caller's input frames as
they enter the graph (whichever way the conversation feeds it: ``send``,
``offer`` or a recording played in). ``record_call`` runs a recorded caller
through a pipeline (like ``cascade.runner.run_call``) and writes the file.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from cascade.clock import Clock
from cascade.conversation import Conversation, Pipeline
from cascade.frames import PCM, Frame
from cascade.graph import Graph
from cascade.recording import CallRecorder
from cascade.replay.format import Entry, Recording, StageRecord, write_recording
from cascade.runner import CallResult
from cascade.tracing import MemoryTrace, Span, TraceSink

PLAYOUT = "playout"


def graph_edges(pipeline: Pipeline) -> list[tuple[str, str]]:
    """The edges of a conversation graph of ``pipeline``, ``playout`` included."""
    edges = pipeline.config.edge_pairs()
    if not any(dst == PLAYOUT for _, dst in edges):
        edges += [(name, PLAYOUT) for name in pipeline.output_stages()]
    return edges


def _snapshot(frame: Frame) -> Frame:
    """The frame as it is now: arrays and dicts copied, so later changes don't leak in."""
    changed: dict[str, Any] = {
        f.name: value.copy() for f in dataclasses.fields(frame)
        if isinstance(value := getattr(frame, f.name), (np.ndarray, dict))}
    return dataclasses.replace(frame, **changed) if changed else frame


class Recorder:
    """Captures one conversation: caller input, and each stage's frames and spans."""

    def __init__(self, conversation: Conversation, pipeline: Pipeline) -> None:
        from cascade import __version__

        self.ctx = conversation.ctx
        self.clock = conversation.clock
        self._stages = set(conversation.graph.stages)
        self._turn = self.ctx.turn
        self._lock = threading.Lock()
        config = pipeline.config
        self.recording = Recording(
            conversation=conversation.id,
            pipeline=config.model_dump(mode="json", exclude_none=True),
            stages={name: StageRecord(config.stages[name].adapter,
                                      options.model_dump(mode="json"))
                    for name, (_, options) in pipeline.adapters.items()},
            edges=graph_edges(pipeline),
            started=self.clock.now(),
            first_turn=self.ctx.turn,
            clock="virtual" if self.clock.virtual else "real",
            cascade_version=__version__,
        )
        conversation.graph.observers.append(self.observe)
        self.ctx.tracer.sinks.append(self)
        self._tap(conversation.graph)

    def _tap(self, graph: Graph) -> None:
        """Note every frame fed to ``graph`` from outside (the caller's input); what stages
        send, control frames and the graph's ErrorFrame for a failed stage included, comes
        through ``observe``."""
        send, offer = graph.send, graph.offer

        async def noted_send(frame: Frame) -> None:
            self.note_input(frame)
            await send(frame)

        def noted_offer(frame: Frame) -> bool:
            accepted = offer(frame)
            if accepted:
                self.note_input(frame)
            return accepted

        # The graph's own entry points, so no way of feeding a conversation escapes.
        setattr(graph, "send", noted_send)  # noqa: B010
        setattr(graph, "offer", noted_offer)  # noqa: B010

    def _add(self, stage: str | None, item: Frame | Span) -> None:
        with self._lock:
            turn_to = None
            if stage is not None and self.ctx.turn != self._turn:
                # A stage advanced the conversation's turn (the turn controller does,
                # just before it records and pushes the end of turn): replay does too.
                turn_to = self._turn = self.ctx.turn
            entries = self.recording.entries
            entries.append(Entry(len(entries), self.clock.now(), stage, item, turn_to))

    def note_input(self, frame: Frame) -> None:
        """A caller frame is entering the graph now."""
        self._add(None, _snapshot(frame))

    def observe(self, stage: str, frame: Frame) -> None:
        # "graph" is the caller's control frames, noted as input by ``send``.
        if stage in self._stages:
            self._add(stage, _snapshot(frame))

    def write(self, span: Span) -> None:
        self._add(span.stage, span)

    def close(self) -> None:
        pass


async def record_conversation(
    pipeline: Pipeline,
    audio: PCM,
    clock: Clock,
    path: str | Path,
    traces: Iterable[TraceSink] = (),
    conversation_id: str | None = None,
) -> CallResult:
    """Stream ``audio`` into a new conversation as ``converse`` does, recording it to
    ``path`` (written even when the call fails, so a crash can be replayed)."""
    memory = MemoryTrace()
    calls = CallRecorder(pipeline.config.sample_rate)
    conversation = pipeline.conversation(clock, sink=calls, traces=[memory, *traces],
                                         conversation_id=conversation_id)
    recorder = Recorder(conversation, pipeline)
    try:
        await conversation.start()
        try:
            for frame in await conversation.play_recording(audio):
                calls.add_user(frame.pcm, frame.time)
            await conversation.wait_finished()
        finally:
            await conversation.stop()
    finally:
        write_recording(recorder.recording, path)
    return CallResult(memory.spans, calls)


def record_call(
    pipeline: Pipeline,
    audio: PCM,
    clock: Clock,
    path: str | Path,
    traces: Iterable[TraceSink] = (),
    conversation_id: str | None = None,
) -> CallResult:
    """``run_call`` that also writes a replayable recording of the call to ``path``."""
    return clock.run(record_conversation(pipeline, audio, clock, path, traces,
                                         conversation_id))
