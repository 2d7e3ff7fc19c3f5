"""What the stage graph itself costs: a chain of four pass-through stages, no work in them.

Two measures, with Pipecat's beside them when asked (``--with-pipecat``):

* added latency per hop - 20 ms caller frames sent one at a time, each after
  the previous reached the fourth stage; send-to-arrival divided by 4.
* capacity - how many real-time conversations (a frame every 20 ms each) one
  core carries with every frame less than 20 ms late at p99, below 100% CPU;
  and, robust to other processes sharing the core, the CPU one frame costs and
  the conversation count that cost allows (20 ms / cost).

Pipecat is never installed in the project's environment: it lives in
``benchmarks/.venv-pipecat`` (created on first use) and is measured by
``pipecat_passthrough.py`` running there, with the same harness.

    python benchmarks/graph_overhead.py --with-pipecat
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import logging
import os
import platform
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import numpy as np
from harness import (
    FRAME_SAMPLES,
    FRAME_SECONDS,
    LAG_LIMIT_MS,
    SAMPLE_RATE,
    SIZES,
    Arrival,
    LagLog,
    capacity_ladder,
    cpu_bound,
    hop_latency,
    one_core,
    realtime_load,
    sustained,
)

from cascade.clock import RealClock
from cascade.frames import Frame, UserAudio
from cascade.graph import Graph
from cascade.stage import Stage, StageContext
from cascade.tracing import Tracer

HERE = Path(__file__).resolve().parent
PIPECAT_VENV = HERE / ".venv-pipecat"
PIPECAT_REQUIREMENT = "pipecat-ai==1.14.0"
GOAL_P50_US = 50
GOAL_P99_US = 200
GOAL_CONVERSATIONS = 300
LOG = logging.getLogger("benchmarks.graph_overhead")


# --- the Cascade pipeline ---------------------------------------------------


class Relay(Stage):
    """Passes every caller frame on untouched."""

    accepts = (UserAudio,)

    async def process(self, frame: Frame) -> None:
        await self.push(frame)


class LatencyProbe(Relay):
    """Last stage of the latency chain: reports each arrival, then relays as usual."""

    def __init__(self, arrival: Arrival) -> None:
        self.arrival = arrival

    async def process(self, frame: Frame) -> None:
        self.arrival.reached()
        await self.push(frame)


class LagProbe(Relay):
    """Last stage of a loaded conversation: logs how late the frame is (``time`` = due)."""

    def __init__(self, log: LagLog) -> None:
        self.log = log

    async def process(self, frame: Frame) -> None:
        self.log.reached(frame.time)
        await self.push(frame)


def chain(last: Stage, clock: RealClock, conversation: str) -> Graph:
    """Three relays then ``last``, joined in a line."""
    stages: dict[str, Stage] = {"relay1": Relay(), "relay2": Relay(), "relay3": Relay()}
    stages["last"] = last
    names = list(stages)
    ctx = StageContext(
        conversation=conversation,
        clock=clock,
        tracer=Tracer(conversation, clock),
        sample_rate=SAMPLE_RATE,
        log=LOG,
    )
    return Graph(stages, itertools.pairwise(names), ctx)


async def cascade_latency(frames: int, warmup: int) -> dict[str, float]:
    clock = RealClock()
    arrival = Arrival()
    graph = chain(LatencyProbe(arrival), clock, "latency")
    pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def make_frame(index: int) -> UserAudio:
        return UserAudio(
            conversation="latency", turn=1, time=index * 0.02, pcm=pcm, sample_rate=SAMPLE_RATE
        )

    await graph.start()
    try:
        return await hop_latency(graph.send, make_frame, arrival, frames, warmup)
    finally:
        await graph.stop()


async def cascade_load(n: int, seconds: float) -> dict[str, Any]:
    clock = RealClock()
    log = LagLog(clock.now)
    names = [f"call-{i}" for i in range(n)]
    graphs = [chain(LagProbe(log), clock, name) for name in names]
    pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def make_frame(index: int, due: float) -> UserAudio:
        return UserAudio(
            conversation=names[index], turn=1, time=due, pcm=pcm, sample_rate=SAMPLE_RATE
        )

    for graph in graphs:
        await graph.start()
    try:
        return await realtime_load([g.send for g in graphs], make_frame, log, seconds)
    finally:
        for graph in graphs:
            await graph.stop()


def measure_cascade(args: argparse.Namespace) -> dict[str, Any]:
    latency = RealClock().run(cascade_latency(args.frames, args.warmup))

    def point(n: int) -> dict[str, Any]:
        gc.collect()
        return RealClock().run(cascade_load(n, args.seconds))

    with one_core(args.core):
        capacity = capacity_ladder(args.sizes, point)
    return {"latency": latency, "capacity": capacity}


# --- Pipecat, in its own virtualenv -----------------------------------------


class PipecatUnavailable(Exception):
    """Pipecat could not be installed or measured; the message says why."""


def _run(cmd: list[str], timeout: float, what: str) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PipecatUnavailable(f"{what}: {exc}") from exc
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
        tail = next((ln for ln in reversed(lines) if not ln.startswith("WARNING")), "")[:300]
        raise PipecatUnavailable(f"{what} exited {done.returncode}: {tail}")
    return done


def pipecat_python() -> Path:
    """The venv's interpreter, with pipecat-ai installed (creating both if missing)."""
    python = PIPECAT_VENV / "bin" / "python"
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('pipecat-ai'))"]
    if python.exists():
        found = subprocess.run(probe, capture_output=True, text=True, check=False)
        if found.returncode == 0:
            return python
    print(f"setting up {PIPECAT_VENV} with {PIPECAT_REQUIREMENT} (once)...", file=sys.stderr)
    try:
        venv.EnvBuilder(with_pip=True, clear=python.exists()).create(PIPECAT_VENV)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise PipecatUnavailable(f"cannot create {PIPECAT_VENV}: {exc}") from exc
    _run(
        [str(python), "-m", "pip", "install", "--quiet", PIPECAT_REQUIREMENT],
        timeout=900,
        what=f"pip install {PIPECAT_REQUIREMENT}",
    )
    return python


def measure_pipecat(args: argparse.Namespace) -> dict[str, Any]:
    python = pipecat_python()
    cmd = [
        str(python), str(HERE / "pipecat_passthrough.py"),
        "--frames", str(args.frames), "--warmup", str(args.warmup),
        "--sizes", ",".join(map(str, args.sizes)), "--seconds", str(args.seconds),
        "--core", str(args.core),
    ]
    budget = 120 + args.frames * 0.002 + len(args.sizes) * (args.seconds + 15)
    done = _run(cmd, timeout=budget, what="pipecat_passthrough.py")
    try:
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise PipecatUnavailable(f"pipecat_passthrough.py printed no JSON: {exc}") from exc
    return result


# --- report -----------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return "inf" if value == float("inf") else f"{value:.{digits}f}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if theirs is None or not ours:
        return "-"
    return f"{theirs / ours:.2f}x"


def summary_rows(cascade: dict[str, Any], pipecat: dict[str, Any] | None) -> list[list[str]]:
    rows = []
    for key, label, goal in (
        ("p50_us", "latency per hop, p50 (us)", f"<= {GOAL_P50_US}"),
        ("p99_us", "latency per hop, p99 (us)", f"<= {GOAL_P99_US}"),
    ):
        ours = cascade["latency"][key]
        theirs = pipecat["latency"][key] if pipecat else None
        rows.append([label, goal, _num(ours), _num(theirs), _ratio(ours, theirs)])

    ours_points = cascade["capacity"]
    their_points = (pipecat or {}).get("capacity") or []
    ours_n = sustained(ours_points)
    theirs_n = sustained(their_points) if their_points else None
    rows.append([
        "conversations per core, kept up", f">= {GOAL_CONVERSATIONS}",
        _capacity(ours_n, ours_points),
        "-" if theirs_n is None else _capacity(theirs_n, their_points),
        _ratio(ours_n, theirs_n),
    ])

    # CPU per frame falls as N grows (timer wake-ups get shared), so compare at one N.
    ours_own, theirs_own = cpu_bound(ours_points), cpu_bound(their_points)
    common = min(ours_own["n"], theirs_own["n"]) if ours_own and theirs_own else None
    ours_at = cpu_bound(ours_points, common) if common else ours_own
    theirs_at = cpu_bound(their_points, common) if common else None
    ours_us = ours_at["cpu_per_frame_us"] if ours_at else None
    theirs_us = theirs_at["cpu_per_frame_us"] if theirs_at else None
    rows.append([
        f"CPU per conversation frame (us){_at(ours_at)}", "",
        _num(ours_us), _num(theirs_us), _ratio(ours_us, theirs_us),
    ])
    ours_limit, theirs_limit = _limit(ours_own), _limit(theirs_own)
    rows.append([
        "conversations per core, CPU-bound", f">= {GOAL_CONVERSATIONS}",
        _num(ours_limit, 0) + _at(ours_own), _num(theirs_limit, 0) + _at(theirs_own),
        _ratio(ours_limit, theirs_limit),
    ])
    return rows


def _limit(point: dict[str, Any] | None) -> float | None:
    """Conversations one core could carry at ``point``'s CPU cost per frame."""
    return FRAME_SECONDS * 1e6 / point["cpu_per_frame_us"] if point else None


def _at(point: dict[str, Any] | None) -> str:
    return f" at N={point['n']}" if point else ""


def _capacity(n: int, points: list[dict[str, Any]]) -> str:
    """``n``, marked ``+`` when even the largest size tried kept up."""
    return f"{n}+" if n == max(p["n"] for p in points) else str(n)


def capacity_rows(cascade: dict[str, Any], pipecat: dict[str, Any] | None) -> list[list[str]]:
    sides = [("Cascade", cascade["capacity"])]
    if pipecat:
        sides.append(("Pipecat", pipecat.get("capacity") or []))
    rows = []
    for side, points in sides:
        for point in points:
            others = point.get("others")
            rows.append([
                side, str(point["n"]), f"{point['cpu'] * 100:.0f}%",
                "-" if others is None else f"{others * 100:.0f}%",
                _num(point["cpu_per_frame_us"]),
                _num(point["p50_lag_ms"]), _num(point["p99_lag_ms"]),
                f"{point['late_pct']:.2f}%", "yes" if point["ok"] else "no",
                str(point.get("runs", 1)),
            ])
    return rows


def render(title: str, header: list[str], rows: list[list[str]], plain: bool) -> None:
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
    if plain:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        print(title)
        for row in [header, ["-" * w for w in widths], *rows]:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        print()
        return
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=130).print(table)


def report(
    args: argparse.Namespace, cascade: dict[str, Any], pipecat: dict[str, Any] | None
) -> None:
    versus = f" vs Pipecat {pipecat['version']}" if pipecat else ""
    render(
        f"Graph overhead: 4 pass-through stages, 20 ms frames{versus}",
        ["measure", "goal", "Cascade", "Pipecat", "Pipecat/Cascade"],
        summary_rows(cascade, pipecat),
        args.plain,
    )
    render(
        f"Capacity on core {args.core} ({args.seconds:g} s per N; kept up = p99 lag "
        f"< {LAG_LIMIT_MS:g} ms and CPU < 100%; 'others' = other processes on that core)",
        ["framework", "N", "CPU", "others", "CPU/frame us", "p50 lag ms", "p99 lag ms",
         "late", "kept up", "runs"],
        capacity_rows(cascade, pipecat),
        args.plain,
    )
    print(f"latency: {args.frames} frames after {args.warmup} warm-up, one in flight")
    print(f"machine: {machine()}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-pipecat", action="store_true",
                        help="also measure Pipecat (in benchmarks/.venv-pipecat)")
    parser.add_argument("--frames", type=int, default=20_000,
                        help="frames timed for latency (default 20000)")
    parser.add_argument("--warmup", type=int, default=1_000,
                        help="frames sent before timing starts (default 1000)")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=list(SIZES),
                        help="conversation counts to try, ascending (default "
                        + ",".join(map(str, SIZES)) + ")")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="measured seconds per conversation count (default 5)")
    parser.add_argument("--core", type=int, default=0,
                        help="core the capacity runs are pinned to (default 0)")
    parser.add_argument("--plain", action="store_true", help="plain text instead of rich")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cascade = measure_cascade(args)
    pipecat = None
    if args.with_pipecat:
        try:
            pipecat = measure_pipecat(args)
        except PipecatUnavailable as exc:
            print(f"pipecat: unavailable ({exc})")
    report(args, cascade, pipecat)


if __name__ == "__main__":
    main()
