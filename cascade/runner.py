"""Run a recorded call through a pipeline, as a caller would, and keep what happened.

The recording is streamed in 20 ms frames at caller pace on the given clock
(real time, or the virtual clock for quick checks); the agent's audio is
placed on the same timeline by a ``CallRecorder`` and every span is kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cascade.clock import Clock
from cascade.conversation import Pipeline
from cascade.frames import PCM
from cascade.recording import CallRecorder
from cascade.tracing import MemoryTrace, Span, TraceSink


@dataclass(slots=True)
class CallResult:
    """Spans and both sides of the audio of one finished call."""

    spans: list[Span]
    recorder: CallRecorder


async def converse(
    pipeline: Pipeline,
    audio: PCM,
    clock: Clock,
    traces: Iterable[TraceSink] = (),
    conversation_id: str | None = None,
) -> CallResult:
    """Stream ``audio`` into a new conversation and wait until the agent is done."""
    memory = MemoryTrace()
    recorder = CallRecorder(pipeline.config.sample_rate)
    conversation = pipeline.conversation(
        clock, sink=recorder, traces=[memory, *traces], conversation_id=conversation_id)
    await conversation.start()
    try:
        for frame in await conversation.play_recording(audio):
            recorder.add_user(frame.pcm, frame.time)
        await conversation.wait_finished()
    finally:
        await conversation.stop()
    return CallResult(memory.spans, recorder)


def run_call(
    pipeline: Pipeline,
    audio: PCM,
    clock: Clock,
    traces: Iterable[TraceSink] = (),
    conversation_id: str | None = None,
) -> CallResult:
    """Synchronous wrapper of ``converse`` on the clock's own event loop."""
    return clock.run(converse(pipeline, audio, clock, traces, conversation_id))
