"""The timing harness both pass-through benchmarks share, so both sides are measured alike.

Standard library only: ``graph_overhead.py`` drives it against Cascade in the
project's environment, ``pipecat_passthrough.py`` against Pipecat inside its
own virtualenv. A framework supplies a way to send a frame into its first
stage and calls back from its last stage; the harness does the timing.

* ``hop_latency``  - one frame in flight at a time; time from send to the last
                     stage, divided by the number of hops.
* ``realtime_load`` - N conversations, each fed one 20 ms frame every 20 ms of
                     wall time (own phase, absolute deadlines); how late each
                     frame reaches the last stage, the CPU it all costs, and
                     how busy other processes kept the same core meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

FRAME_SECONDS = 0.020
SAMPLE_RATE = 16_000
FRAME_SAMPLES = 320
HOPS = 4
SIZES = (25, 50, 100, 150, 200, 300, 400, 500, 600)
"""Conversation counts tried by default, smallest first; a hopeless one ends the ladder."""
LAG_LIMIT_MS = FRAME_SECONDS * 1000
"""A conversation keeps up when its p99 frame is less than one frame period late."""

Send = Callable[[Any], Awaitable[Any]]


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))
    return ordered[rank]


@contextlib.contextmanager
def one_core(core: int = 0) -> Iterator[None]:
    """Pin this process to ``core`` for the duration, then restore its affinity."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _core_ticks(cores: set[int]) -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies of each core from /proc/stat; empty where unreadable."""
    ticks = {}
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            for line in stat:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
                    values = [int(v) for v in fields[:8]]
                    idle = values[3] + values[4]
                    ticks[int(name[3:])] = (sum(values) - idle, sum(values))
    except OSError:
        return {}
    return ticks


def _cores_busy(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> float:
    """Cores' worth of busy time between two ``_core_ticks`` readings (all processes)."""
    busy = 0.0
    for core, (busy0, total0) in before.items():
        busy1, total1 = after.get(core, (busy0, total0))
        busy += (busy1 - busy0) / max(1, total1 - total0)
    return busy


class Arrival:
    """Where the last stage of a latency chain reports the frame it just received."""

    __slots__ = ("stamp", "waiter")

    def __init__(self) -> None:
        self.stamp = 0
        self.waiter: asyncio.Future[None] | None = None

    def reached(self) -> None:
        self.stamp = time.perf_counter_ns()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


async def hop_latency(
    send: Send,
    make_frame: Callable[[int], Any],
    arrival: Arrival,
    frames: int,
    warmup: int,
    hops: int = HOPS,
) -> dict[str, float]:
    """Send frames one at a time, each after the previous arrived; per-hop latency in us."""
    loop = asyncio.get_running_loop()
    samples: list[float] = []
    for index in range(warmup + frames):
        frame = make_frame(index)
        waiter = arrival.waiter = loop.create_future()
        start = time.perf_counter_ns()
        await send(frame)
        await waiter
        if index >= warmup:
            samples.append((arrival.stamp - start) / hops / 1000)
    samples.sort()
    return {
        "frames": frames,
        "p50_us": percentile(samples, 50),
        "p99_us": percentile(samples, 99),
        "mean_us": sum(samples) / len(samples),
    }


class LagLog:
    """How late each frame reached the last stage: arrival minus the time it was due."""

    __slots__ = ("arrived", "lags", "now", "since")

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self.since = float("inf")
        self.lags: list[float] = []
        self.arrived = 0

    def reached(self, due: float) -> None:
        self.arrived += 1
        if due >= self.since:
            self.lags.append(self.now() - due)


async def realtime_load(
    senders: Sequence[Send],
    make_frame: Callable[[int, float], Any],
    log: LagLog,
    seconds: float,
    warmup: float = 0.5,
) -> dict[str, Any]:
    """Feed every conversation a frame per period for ``warmup + seconds``; lag and CPU."""
    now = log.now
    n = len(senders)
    phases = [random.Random(n * 7919 + i).random() * FRAME_SECONDS for i in range(n)]
    start = now() + 0.05
    count = round((warmup + seconds) / FRAME_SECONDS)
    log.since = start + warmup

    async def feed(index: int, send: Send) -> None:
        origin = start + phases[index]
        for k in range(count):
            due = origin + k * FRAME_SECONDS
            delay = due - now()
            if delay > 0:
                await asyncio.sleep(delay)
            await send(make_frame(index, due))

    tasks = [asyncio.create_task(feed(i, s)) for i, s in enumerate(senders)]
    await asyncio.sleep(max(0.0, log.since - now()))
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    ticks0 = _core_ticks(cores)
    cpu0, wall0, arrived0 = time.process_time(), time.perf_counter(), log.arrived
    await asyncio.gather(*tasks)
    expected = sum(
        1 for p in phases for k in range(count) if start + p + k * FRAME_SECONDS >= log.since
    )
    give_up = now() + 2.0
    while len(log.lags) < expected and now() < give_up:
        await asyncio.sleep(0.005)
    cpu_seconds = time.process_time() - cpu0
    cpu = cpu_seconds / (time.perf_counter() - wall0)
    arrived = log.arrived - arrived0
    others = max(0.0, _cores_busy(ticks0, _core_ticks(cores)) - cpu) if ticks0 else None
    lags = sorted(lag * 1000 for lag in log.lags)
    missing = expected - len(lags)
    late = sum(1 for lag in lags if lag > LAG_LIMIT_MS) + missing
    p99 = percentile(lags, 99) if missing * 100 <= expected else float("inf")
    return {
        "n": n,
        "frames": expected,
        "cpu": cpu,
        "others": others,
        "cpu_per_frame_us": cpu_seconds * 1e6 / max(1, arrived),
        "p50_lag_ms": percentile(lags, 50),
        "p99_lag_ms": p99,
        "max_lag_ms": lags[-1] if lags else 0.0,
        "late_pct": 100 * late / max(1, expected),
        "ok": p99 < LAG_LIMIT_MS and cpu < 1.0,
    }


CONTENDED = 0.2
"""Other processes' share of the core above which a failed size is tried again."""
RETRIES = 2


def _better(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return a if (a["ok"], -a["p99_lag_ms"]) >= (b["ok"], -b["p99_lag_ms"]) else b


def capacity_ladder(
    sizes: Sequence[int], run_point: Callable[[int], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Run ``run_point`` for each size, stopping once a size is hopelessly saturated.

    A size that failed while other processes kept the core busy is tried again,
    up to ``RETRIES`` times, and its best run is kept (``runs`` says how many).
    """
    points = []
    for n in sizes:
        point = run_point(n)
        runs = 1
        while not point["ok"] and (point["others"] or 0) > CONTENDED and runs <= RETRIES:
            point = _better(point, run_point(n))
            runs += 1
        point["runs"] = runs
        points.append(point)
        if not point["ok"] and point["p99_lag_ms"] > 5 * LAG_LIMIT_MS:
            break
    return points


def cpu_bound(
    points: Sequence[dict[str, Any]], at_most: float = float("inf")
) -> dict[str, Any] | None:
    """The largest N (up to ``at_most``) whose frames were on time (at most 1% late).

    Its CPU cost per frame gives a limit that other processes on the core do not
    distort. Late runs are left out: once behind, feeders stop sleeping and work
    is batched, which makes a frame look cheaper than it is in real time.
    """
    on_time = [p for p in points if p["late_pct"] <= 1.0 and p["n"] <= at_most]
    return max(on_time, key=lambda p: p["n"]) if on_time else None


def sustained(points: Sequence[dict[str, Any]]) -> int:
    """Largest N that kept up, counting only sizes below the first one that did not."""
    best = 0
    for point in sorted(points, key=lambda p: p["n"]):
        if not point["ok"]:
            break
        best = point["n"]
    return best
