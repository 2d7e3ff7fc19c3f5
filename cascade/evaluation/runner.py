"""Run every scenario on every system, with the same caller bytes, and keep what happened.

Fairness, in the order it is applied:

* every system's models are loaded, and each system answers one warm-up call
  (the suite's first caller turn) before anything is measured;
* one caller track per scenario, built once: every system is fed the same array
  (its SHA-256 is kept with each call);
* the systems take turns scenario by scenario, in an order shuffled with the
  seed, so slow drift (a warming CPU, a filling cache) does not favour one;
* calls run one at a time, on a fresh clock of the same kind (real time, or the
  virtual clock with ``fast``), so no call competes with another for the CPU.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cascade.clock import Clock, RealClock, VirtualClock
from cascade.conversation import Pipeline
from cascade.evaluation.audio_build import CallerTrack
from cascade.evaluation.systems import System
from cascade.frames import PCM
from cascade.recording import CallRecorder
from cascade.tracing import MemoryTrace, Span, TraceSink, TraceWriter

DRAIN_SECONDS = 120.0
"""Pipeline time a call may take to finish after the caller track ends."""


@dataclass(slots=True)
class CallRecord:
    """One scenario on one system: spans on the pipeline clock and where the track began."""

    system: str
    scenario: str
    position: int
    """0 when this system heard the scenario first, 1 second, ..."""
    origin: float
    """Pipeline-clock time of the caller track's first sample."""
    spans: list[Span]
    caller_seconds: float
    agent_seconds: float
    wall_seconds: float
    input_sha256: str
    trace: str | None = None
    audio: str | None = None
    error: str | None = None


def run_order(systems: Sequence[str], scenario: str, seed: int) -> list[str]:
    """The order the systems hear ``scenario``: a seeded shuffle, the same on every run."""
    rng = np.random.default_rng([seed, zlib.crc32(scenario.encode()), 1])
    return [systems[i] for i in rng.permutation(len(systems))]


async def _converse(pipeline: Pipeline, pcm: PCM, clock: Clock, sinks: list[TraceSink],
                    conversation_id: str, recorder: CallRecorder) -> float:
    """Stream the track in; return the pipeline time of its first sample."""
    conversation = pipeline.conversation(clock, sink=recorder, traces=sinks,
                                         conversation_id=conversation_id)
    await conversation.start()
    try:
        frames = await conversation.play_recording(pcm)
        for frame in frames:
            recorder.add_user(frame.pcm, frame.time)
        try:
            await asyncio.wait_for(conversation.wait_finished(), DRAIN_SECONDS)
        except TimeoutError:
            raise TimeoutError(f"the call did not finish within {DRAIN_SECONDS:.0f} s "
                               "after the caller track ended") from None
    finally:
        await conversation.stop()
    return frames[0].time if frames else 0.0


def run_call(system: System, track: CallerTrack, *, fast: bool, position: int = 0,
             out: Path | None = None, save_audio: bool = False) -> CallRecord:
    """One scenario on one system; a failing call is recorded with its error, not raised."""
    name, scenario = system.name, track.scenario.id
    memory = MemoryTrace()
    sinks: list[TraceSink] = [memory]
    trace_path = audio_path = None
    if out is not None:
        trace_path = out / "traces" / name / f"{scenario}.jsonl"
        trace_path.parent.mkdir(parents=True, exist_ok=True)
        sinks.append(TraceWriter(trace_path))
    recorder = CallRecorder(track.rate)
    clock: Clock = VirtualClock() if fast else RealClock()
    error = None
    origin = 0.0
    started = time.perf_counter()
    try:
        origin = clock.run(_converse(system.pipeline, track.pcm, clock, sinks,
                                     f"{name}-{scenario}", recorder))
    except Exception as exc:  # one broken call must not end the evaluation
        error = f"{type(exc).__name__}: {exc}"
    finally:
        for sink in sinks:
            sink.close()
    wall = time.perf_counter() - started
    if out is not None and save_audio:
        audio_path = out / "audio" / name / f"{scenario}.wav"
        audio_path.parent.mkdir(parents=True, exist_ok=True)
        recorder.write(audio_path)
    agent = sum(s.end - s.start for s in memory.spans if s.name == "agent_speech")
    return CallRecord(
        system=name, scenario=scenario, position=position, origin=origin,
        spans=memory.spans, caller_seconds=track.seconds, agent_seconds=agent,
        wall_seconds=wall, input_sha256=track.sha256,
        trace=_relative(trace_path, out), audio=_relative(audio_path, out), error=error)


def _relative(path: Path | None, out: Path | None) -> str | None:
    return None if path is None or out is None else str(path.relative_to(out))


def warm_up_track(tracks: Sequence[CallerTrack]) -> CallerTrack | None:
    """The suite's first caller turn and 4 s after it: enough to run every stage once."""
    for track in tracks:
        turn = next((e for e in track.events if e.event.takes_turn), None)
        if turn is not None:
            end = min(len(track.pcm), round((turn.end + 4.0) * track.rate))
            return CallerTrack(track.scenario, track.rate, track.pcm[:end], [turn],
                               track.clean[:end])
    return None


def run_suite(systems: Sequence[System], tracks: Sequence[CallerTrack], *, fast: bool,
              seed: int, out: Path | None, save_audio: bool,
              console: Console) -> list[CallRecord]:
    """Every track on every system, warm-ups first; progress shown on ``console``."""
    by_name = {s.name: s for s in systems}
    for system in systems:
        with console.status(f"loading {system.name} ({system.source})…"):
            system.pipeline.preload()
    warm = warm_up_track(tracks)
    records: list[CallRecord] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        if warm is not None:
            task = progress.add_task("warm-up", total=len(systems))
            for system in systems:
                run_call(system, warm, fast=fast)
                progress.advance(task)
        task = progress.add_task("calls", total=len(systems) * len(tracks))
        for track in tracks:
            for position, name in enumerate(run_order(list(by_name), track.scenario.id, seed)):
                progress.update(task, description=f"{name} · {track.scenario.id}")
                record = run_call(by_name[name], track, fast=fast, position=position, out=out,
                                  save_audio=save_audio)
                if record.error:
                    progress.console.print(f"[red]✗[/] {name} · {track.scenario.id}: "
                                           f"{record.error}")
                records.append(record)
                progress.advance(task)
        progress.update(task, description="calls")
    return records
