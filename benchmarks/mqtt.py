"""What a remote hop over MQTT costs: latency, throughput, conversations per worker, scaling.

A two-stage graph per conversation, ``vad -> sink``, fed 20 ms ``UserAudio``
frames of silence: ``vad`` is the model-free ``energy-vad`` (it passes the audio
on), either in-process or as a ``RemoteStage`` served by worker processes
behind a Mosquitto started on 127.0.0.1 for the run. The sink notes when each
frame arrives.

* added latency per remote hop - one frame in flight at a time; send-to-sink
  time remote minus the same in-process (p50, p99).
* audio frames per second through one worker - one conversation, up to 256
  frames in flight.
* conversations per worker - N conversations each sending a frame every 20 ms
  of wall time (own phase); N keeps up when the p99 lateness at the sink is
  under 20 ms. The ladder stops at the first N that does not.
* CPU per frame - process CPU (user + system) of the caller, the broker and the
  worker during the one-conversation run, divided by the frames; robust to other
  load on the machine, unlike the rates. 20 ms divided by the worker's share is
  how many real-time conversations one worker core could carry, CPU-bound.
* scaling - 8 conversations pushing as fast as they can (256 frames in flight
  each) through 1 and then 2 worker processes.

Everything (caller, broker, workers) shares this machine's cores, so the numbers
are a floor for a real deployment, where they run on different machines.

    python benchmarks/mqtt.py            # one to two minutes
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import yaml

from cascade.adapters.scripted import EnergyVAD, EnergyVADOptions
from cascade.clock import RealClock
from cascade.config import parse_pipeline
from cascade.distributed.remote import RemoteStage
from cascade.frames import Frame, UserAudio
from cascade.graph import Graph
from cascade.stage import Stage, StageContext
from cascade.tracing import Tracer

FRAME = 0.020
SAMPLES = 320
ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))]


class Sink(Stage):
    """The last stage: calls back with each frame's index (its ``time``) on arrival."""

    accepts = (UserAudio,)

    def __init__(self, arrived: Callable[[int], None]) -> None:
        self.arrived = arrived

    async def process(self, frame: Frame) -> None:
        self.arrived(int(frame.time))


class Setup:
    """The broker, the worker processes and a way to build conversations."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"mqtt://127.0.0.1:{self.port}"
        conf = folder / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                        "persistence false\nset_tcp_nodelay true\nlog_dest none\n"
                        "max_queued_messages 100000\n")
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.broker = subprocess.Popen([mosquitto, "-c", str(conf)])
        data = {"name": "bench", "stages": {"vad": {"adapter": "energy-vad"}}}
        self.pipeline = folder / "bench.yaml"
        self.pipeline.write_text(yaml.safe_dump(data))
        self.config = parse_pipeline(data)
        self.workers: list[subprocess.Popen[str]] = []
        self.clock = RealClock()
        self.log = logging.getLogger("bench")
        time.sleep(0.2)

    def add_worker(self) -> subprocess.Popen[str]:
        worker = subprocess.Popen(
            [sys.executable, "-m", "cascade.distributed.worker", "--stage", "vad",
             "--pipeline", str(self.pipeline), "--broker", self.url,
             "--id", f"bench{len(self.workers) + 1}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        assert worker.stdout is not None
        self.workers.append(worker)
        for line in worker.stdout:
            if line.startswith("ready:"):
                break
        else:
            raise RuntimeError("the worker exited before it was ready")
        # keep draining its output so it never blocks on a full pipe
        threading.Thread(target=worker.stdout.read, daemon=True).start()
        return worker

    def close(self) -> None:
        for process in [*self.workers, self.broker]:
            process.terminate()
            process.wait(5)

    async def conversation(self, cid: str, remote: bool,
                           arrived: Callable[[int], None]) -> Graph:
        ctx = StageContext(cid, self.clock, Tracer(cid, self.clock), 16000, self.log)
        vad: Stage = (RemoteStage("vad", EnergyVAD, self.config, self.url) if remote
                      else EnergyVAD(EnergyVADOptions()))
        graph = Graph({"vad": vad, "sink": Sink(arrived)}, [("vad", "sink")], ctx, 256)
        await graph.start()
        return graph


def audio(cid: str, index: int) -> UserAudio:
    return UserAudio(conversation=cid, turn=1, time=float(index),
                     pcm=np.zeros(SAMPLES, np.int16), sample_rate=16000)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def hop_latency(setup: Setup, remote: bool, frames: int) -> list[float]:
    """Send-to-sink seconds, one frame in flight at a time."""
    waiting: asyncio.Future[None] | None = None

    def arrived(_: int) -> None:
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    graph = await setup.conversation(f"lat-{remote}", remote, arrived)
    times = []
    for index in range(frames + 200):
        waiting = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        await graph.send(audio("lat", index))
        await waiting
        if index >= 200:
            times.append(time.perf_counter() - started)
    await graph.stop()
    return times


class Cpu:
    """CPU seconds used meanwhile by this process, the broker and the workers."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.start = self._now()

    def _now(self) -> tuple[float, float, float]:
        workers = sum(cpu_seconds(w.pid) for w in self.setup.workers)
        return time.process_time(), cpu_seconds(self.setup.broker.pid), workers

    def used(self) -> tuple[float, float, float]:
        end = self._now()
        return (end[0] - self.start[0], end[1] - self.start[1], end[2] - self.start[2])


async def flood(setup: Setup, conversations: int, frames: int,
                window: int = 256) -> tuple[float, tuple[float, float, float]]:
    """Frames per second through the remote stage, each conversation with ``window`` in
    flight; and the CPU seconds per frame of the caller, the broker and the workers."""

    async def one(n: int) -> None:
        room = asyncio.Semaphore(window)
        done = asyncio.Event()
        count = 0

        def arrived(_: int) -> None:
            nonlocal count
            count += 1
            room.release()
            if count == frames:
                done.set()

        graph = await setup.conversation(f"flood-{conversations}-{n}", True, arrived)
        ready.append(None)
        await go.wait()
        for index in range(frames):
            await room.acquire()
            await graph.send(audio("flood", index))
        await done.wait()
        await graph.stop()

    ready: list[None] = []
    go = asyncio.Event()
    tasks = [asyncio.create_task(one(n)) for n in range(conversations)]
    while len(ready) < conversations:
        await asyncio.sleep(0.01)
    started = time.perf_counter()
    cpu = Cpu(setup)
    go.set()
    await asyncio.gather(*tasks)
    total = conversations * frames
    caller, broker, workers = cpu.used()
    return total / (time.perf_counter() - started), (caller / total, broker / total,
                                                     workers / total)


async def realtime(setup: Setup, conversations: int, seconds: float) -> tuple[float, float]:
    """p99 lateness (s) at the sink of N real-time conversations (a frame that never
    arrived counts as infinitely late), and the worker's CPU share."""
    lateness: list[float] = []
    expected = conversations * (int(seconds / FRAME) - 25)

    async def one(n: int) -> None:
        due: dict[int, float] = {}

        def arrived(index: int) -> None:
            if index >= 25:  # half a second of warm-up
                lateness.append(time.perf_counter() - due[index])

        graph = await setup.conversation(f"rt-{conversations}-{n}", True, arrived)
        await asyncio.sleep(0.2)
        start = time.perf_counter() + random.uniform(0, FRAME)
        for index in range(int(seconds / FRAME)):
            due[index] = start + index * FRAME
            await asyncio.sleep(max(0.0, due[index] - time.perf_counter()))
            await graph.send(audio("rt", index))
        await asyncio.sleep(0.3)
        await graph.stop()

    worker = setup.workers[0].pid
    cpu = cpu_seconds(worker)
    wall = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(conversations)))
    share = (cpu_seconds(worker) - cpu) / (time.perf_counter() - wall)
    lateness += [float("inf")] * max(0, expected - len(lateness))
    return percentile(lateness, 99), share


def step(what: str) -> None:
    print(f"... {what}", file=sys.stderr, flush=True)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        setup = Setup(Path(folder))
        try:
            setup.add_worker()
            rows: list[tuple[str, str]] = []
            step("hop latency")
            local = await hop_latency(setup, False, args.frames)
            remote = await hop_latency(setup, True, args.frames)
            for q in (50, 99):
                added = (percentile(remote, q) - percentile(local, q)) * 1e3
                rows.append((f"added latency per remote hop, p{q}",
                             f"{added:.2f} ms (remote {percentile(remote, q) * 1e3:.2f} ms, "
                             f"in-process {percentile(local, q) * 1e6:.0f} us)"))
            step("one conversation flooding")
            rate, (caller, broker, worker) = await flood(setup, 1, args.frames * 2)
            rows.append(("audio frames/s through one worker, 1 conversation",
                         f"{rate:,.0f} ({rate * FRAME:.0f}x real time)"))
            rows.append(("CPU per frame: caller / broker / worker",
                         f"{caller * 1e6:.0f} / {broker * 1e6:.0f} / {worker * 1e6:.0f} us"))
            rows.append(("conversations per worker core, CPU-bound",
                         f"{FRAME / worker:.0f} (20 ms / worker CPU per frame)"))
            kept = 0
            for n in args.ladder:
                step(f"{n} real-time conversations")
                late, share = await realtime(setup, n, args.seconds)
                shown = ("fell behind (frames still queued at the end)" if late == float("inf")
                         else f"{late * 1e3:.1f} ms late")
                rows.append((f"{n} real-time conversations on one worker",
                             f"p99 {shown}, worker CPU {share:.0%}"))
                if late > FRAME:
                    break
                kept = n
            rows.append(("conversations per worker (p99 < 20 ms late)",
                         f"{kept}{'+' if kept == args.ladder[-1] else ''}"))
            step("scaling")
            one, _ = await flood(setup, 8, args.frames // 8)
            setup.add_worker()
            two, _ = await flood(setup, 8, args.frames // 8)
            rows.append(("8 conversations, frames/s: 1 worker -> 2 workers",
                         f"{one:,.0f} -> {two:,.0f} ({two / one:.2f}x)"))
        finally:
            setup.close()
    width = max(len(name) for name, _ in rows)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nRemote stage over MQTT (Mosquitto on 127.0.0.1, {os.cpu_count()} cores shared by "
          f"caller, broker and workers; load average {load})\n")
    print(f"| {'measure'.ljust(width)} | result |")
    print(f"| {'-' * width} | --- |")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2000, help="frames per latency run")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per ladder step")
    parser.add_argument("--ladder", type=int, nargs="+", default=[10, 25, 50, 100])
    return parser.parse_args()


def run(coroutine: Awaitable[None]) -> None:
    asyncio.run(coroutine)  # type: ignore[arg-type]


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    # an overloaded ladder step makes every conversation report its trouble: keep it quiet
    logging.getLogger("cascade.distributed").setLevel(logging.CRITICAL)
    logging.getLogger("bench").setLevel(logging.CRITICAL)
    run(main(arguments()))
