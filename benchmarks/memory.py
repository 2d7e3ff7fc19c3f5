"""Peak memory of the local pipeline: one conversation vs ten sharing the models.

Each case runs in a fresh Python process, so peaks do not mix: the process
loads the local pipeline's models once (``Pipeline.preload``), then runs N
conversations (``pipeline.conversation``) at once with ``asyncio.gather`` on
one clock, every caller speaking the same short call (a spoken question and
``goforward.raw``, each followed by silence for the reply). Reported per case:

* RSS after model load (``/proc/self/statm``),
* peak RSS while the calls ran (sampled every 10 ms),
* the process's high-water mark (``getrusage(RUSAGE_SELF).ru_maxrss``),

and the ratio of the ten-conversation peak to the one-conversation peak
(goal: below 1.5). The default clock is virtual (the calls take as long as
their compute); ``--realtime`` streams at caller pace on the RealClock.

    python benchmarks/memory.py
    python benchmarks/memory.py --conversations 1 10 20 --realtime
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

GOAL_RATIO = 1.5
SAMPLE_SECONDS = 0.01
MAX_TOKENS = 30
GAP = 13.0
"""Silence after each utterance (s): a 30-token reply fits before the next one."""
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * _PAGE


def max_rss_bytes() -> int:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakSampler:
    """Samples RSS on a thread until stopped; keeps the highest value."""

    def __init__(self, every: float = SAMPLE_SECONDS) -> None:
        self.every = every
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def worker(conversations: int, realtime: bool) -> dict[str, Any]:
    """One measured case, inside its own process."""
    from speech_corpus import build_call, command_clips, local_config, spoken_questions

    from cascade.clock import Clock, RealClock, VirtualClock
    from cascade.conversation import Pipeline
    from cascade.tracing import MemoryTrace

    rss_start = rss_bytes()
    started = time.perf_counter()
    pipeline = Pipeline(local_config({"llm": {"max_tokens": MAX_TOKENS}}))
    pipeline.preload()
    load_s = time.perf_counter() - started
    goforward = next(c for c in command_clips() if c.name == "goforward")
    call = build_call([spoken_questions(1)[0], goforward], GAP)
    rss_loaded = rss_bytes()
    clock: Clock = RealClock() if realtime else VirtualClock()

    async def one(index: int) -> int:
        memory = MemoryTrace()
        conversation = pipeline.conversation(clock, traces=[memory],
                                             conversation_id=f"c{index}")
        await conversation.start()
        try:
            await conversation.play_recording(call.pcm)
            await conversation.wait_finished()
        finally:
            await conversation.stop()
        return sum(1 for s in memory.named("llm") if s.attrs.get("text"))

    async def everyone() -> list[int]:
        return await asyncio.gather(*(one(i) for i in range(conversations)))

    started = time.perf_counter()
    with PeakSampler() as sampler:
        answered = clock.run(everyone())
    return {
        "conversations": conversations,
        "clock": "real time" if realtime else "virtual",
        "rss_start": rss_start,
        "rss_loaded": rss_loaded,
        "peak_during_calls": sampler.peak,
        "ru_maxrss": max_rss_bytes(),
        "rss_end": rss_bytes(),
        "turns_answered": sum(answered),
        "turns_expected": conversations * len(call.placed),
        "call_seconds": round(call.seconds, 2),
        "model_load_s": round(load_s, 2),
        "calls_wall_s": round(time.perf_counter() - started, 2),
        "threads_at_end": threading.active_count(),
    }


def measure(conversations: int, realtime: bool) -> dict[str, Any]:
    """Run one case in a fresh interpreter and read its JSON answer."""
    command = [sys.executable, __file__, "--worker", str(conversations)]
    if realtime:
        command.append("--realtime")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {conversations}-conversation case failed "
                         f"(exit {done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _mb(value: float) -> str:
    return f"{value / 2**20:.0f}"


def print_report(console: Console, cases: list[dict[str, Any]], ratio: dict[str, Any]) -> None:
    clock = cases[0]["clock"]
    table = Table(title=f"Peak RSS, local pipeline, models shared in one process ({clock} clock)")
    for column in ("conversations", "after import MB", "after load MB", "peak in calls MB",
                   "added by calls MB", "ru_maxrss MB", "turns", "calls wall s"):
        table.add_column(column, justify="right")
    for case in cases:
        table.add_row(str(case["conversations"]), _mb(case["rss_start"]),
                      _mb(case["rss_loaded"]), _mb(case["peak_during_calls"]),
                      _mb(case["peak_during_calls"] - case["rss_loaded"]),
                      _mb(case["ru_maxrss"]),
                      f"{case['turns_answered']}/{case['turns_expected']}",
                      f"{case['calls_wall_s']:.1f}")
    console.print(table)
    verdict = "[green]met[/]" if ratio["goal_met"] else "[red]missed[/]"
    marginal = ratio["per_extra_conversation"]
    console.print(f"{ratio['many']} conversations / {ratio['one']}: peak RSS (ru_maxrss) "
                  f"{ratio['ratio']:.2f}x, goal < {GOAL_RATIO}x -> {verdict}; each extra "
                  f"conversation adds {'-' if marginal is None else _mb(marginal)} MB at peak")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, nargs="+", default=[1, 10],
                        help="cases to run, each in a fresh process (default: 1 10)")
    parser.add_argument("--realtime", action="store_true",
                        help="stream at caller pace on the RealClock (default: virtual clock)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.realtime)))
        return
    console = Console()
    if not console.is_terminal:
        console = Console(width=132)
    cases = []
    for count in args.conversations:
        with console.status(f"{count} conversation(s) in a fresh process…"):
            cases.append(measure(count, args.realtime))
    first, last = cases[0], cases[-1]
    added = last["conversations"] - first["conversations"]
    ratio = {"one": first["conversations"], "many": last["conversations"],
             "ratio": last["ru_maxrss"] / first["ru_maxrss"],
             "ratio_peak_in_calls": last["peak_during_calls"] / first["peak_during_calls"],
             "per_extra_conversation": None if added <= 0 else
             (last["ru_maxrss"] - first["ru_maxrss"]) / added,
             "goal": GOAL_RATIO}
    ratio["goal_met"] = ratio["ratio"] < GOAL_RATIO
    print_report(console, cases, ratio)
    if args.json is not None:
        args.json.write_text(json.dumps({"cases": cases, "ratio": ratio}, indent=2),
                             encoding="utf-8")
        console.print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
