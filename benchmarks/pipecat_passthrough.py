"""Pipecat's side of graph_overhead.py: the same four pass-through stages, the same harness.

Runs only inside ``benchmarks/.venv-pipecat`` (``graph_overhead.py --with-pipecat``
creates it); prints one JSON object on stdout.

The pipeline is the plainest correct Pipecat one: four ``FrameProcessor``
subclasses that call ``super().process_frame`` and push every frame on, in a
``Pipeline`` run by a ``PipelineWorker`` under a ``WorkerRunner`` (RTVI, turn
tracking and the idle timeout switched off, so only the processors are
measured). Caller audio is ``InputAudioRawFrame``, as a transport produces it;
frames are queued straight into the first processor, so, as in Cascade, a
frame crosses four queues before the last stage sees it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from harness import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    SIZES,
    Arrival,
    LagLog,
    capacity_ladder,
    hop_latency,
    one_core,
    realtime_load,
)
from loguru import logger
from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

AUDIO = bytes(FRAME_SAMPLES * 2)


class Relay(FrameProcessor):
    """Passes every frame on untouched."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


class LatencyProbe(FrameProcessor):
    """Last processor of the latency chain: reports each caller frame, then relays."""

    def __init__(self, arrival: Arrival) -> None:
        super().__init__()
        self._arrival = arrival

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self._arrival.reached()
        await self.push_frame(frame, direction)


class LagProbe(FrameProcessor):
    """Last processor of a loaded conversation: logs how late the frame is.

    The due time rides in ``metadata`` rather than ``pts``: a frame with ``pts``
    set formats it as a clock string each time its processor logs a push.
    """

    def __init__(self, log: LagLog) -> None:
        super().__init__()
        self._log = log

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self._log.reached(frame.metadata["due"])
        await self.push_frame(frame, direction)


def audio_frame(due: float | None = None) -> InputAudioRawFrame:
    frame = InputAudioRawFrame(audio=AUDIO, sample_rate=SAMPLE_RATE, num_channels=1)
    if due is not None:
        frame.metadata["due"] = due
    return frame


async def run_pipelines(
    lasts: list[FrameProcessor], body: Callable[[list[FrameProcessor]], Any]
) -> Any:
    """Start one worker per ``last`` (three relays in front), await ``body(firsts)``, cancel."""
    runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
    started = asyncio.Event()
    pending = len(lasts)
    firsts = []
    for last in lasts:
        relays: list[FrameProcessor] = [Relay(), Relay(), Relay()]
        firsts.append(relays[0])
        worker = PipelineWorker(
            Pipeline([*relays, last]),
            enable_rtvi=False,
            enable_turn_tracking=False,
            idle_timeout_secs=None,
            check_dangling_tasks=False,
        )

        @worker.event_handler("on_pipeline_started")
        async def on_started(_worker: PipelineWorker, _frame: Frame) -> None:
            nonlocal pending
            pending -= 1
            if pending == 0:
                started.set()

        await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    await asyncio.wait_for(started.wait(), timeout=60)
    try:
        return await body(firsts)
    finally:
        await runner.cancel()
        await running


def sender(first: FrameProcessor) -> Callable[[Frame], Any]:
    def send(frame: Frame) -> Any:
        return first.queue_frame(frame, FrameDirection.DOWNSTREAM)

    return send


async def pipecat_latency(frames: int, warmup: int) -> dict[str, float]:
    arrival = Arrival()

    async def body(firsts: list[FrameProcessor]) -> dict[str, float]:
        return await hop_latency(
            sender(firsts[0]), lambda _i: audio_frame(), arrival, frames, warmup
        )

    result: dict[str, float] = await run_pipelines([LatencyProbe(arrival)], body)
    return result


async def pipecat_load(n: int, seconds: float) -> dict[str, Any]:
    log = LagLog(time.monotonic)

    async def body(firsts: list[FrameProcessor]) -> dict[str, Any]:
        senders = [sender(f) for f in firsts]
        return await realtime_load(senders, lambda _i, due: audio_frame(due), log, seconds)

    result: dict[str, Any] = await run_pipelines([LagProbe(log) for _ in range(n)], body)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=list(SIZES))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--core", type=int, default=0)
    args = parser.parse_args()

    logger.remove()
    logger.add(sys.stderr, level="WARNING")

    latency = asyncio.run(pipecat_latency(args.frames, args.warmup))

    def point(n: int) -> dict[str, Any]:
        gc.collect()
        return asyncio.run(pipecat_load(n, args.seconds))

    with one_core(args.core):
        capacity = capacity_ladder(args.sizes, point) if args.sizes else []
    print(json.dumps({
        "version": importlib.metadata.version("pipecat-ai"),
        "latency": latency,
        "capacity": capacity,
    }))


if __name__ == "__main__":
    main()
