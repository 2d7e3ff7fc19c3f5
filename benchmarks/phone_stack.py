"""Phone calls through the embedded local stack: how many before voice-to-voice p95 > 1.5 s.

The SIP server runs the built-in ``local`` pipeline (Silero VAD -> faster-whisper
tiny.en -> turn controller -> SmolLM2-135M on llama.cpp -> Piper) in its own
process, models loaded and warmed up once. N callers in this process each place a
SIP call and speak real recorded utterances (pocketsphinx-testdata, via
``speech_corpus.py``) as 8 kHz mu-law RTP at real-time pace, 20 ms a packet, with
silence packets in between. After each utterance a caller keeps sending silence
until it has heard the agent's reply and the agent has then been quiet for
``--pause`` seconds, and speaks its next utterance (or gives up on the reply after
``--reply-timeout`` seconds: a missing reply).

Voice-to-voice is measured on the caller's side, per turn: from the end of the
caller's speech in the stream it sent (the clip's last loud 10 ms, at the moment
that sample was sent) to the first agent RTP packet it received that is not
silence (peak >= 500 of 32767). It includes the server's jitter buffer and
packetisation both ways. Turns where the agent was audible while the caller was
still speaking (the turn ended inside a pause of the utterance) are counted as
"talked over" and left out of the percentiles.

Sizes run N = 1, 2, 3, 4 until one's p95 exceeds 1.5 s or has a missing reply
(``--all`` measures every size anyway), or the time budget is spent. Also printed
per size: server CPU (all its threads, % of one core; the machine has two),
``others`` (CPU used by other processes on the machine), reply breaks (the agent
audio stopped and restarted mid-reply: a new RTP talk spurt after silence
packets, i.e. the LLM, Piper or playout fell behind line rate; with the longest
such silence), inbound frames dropped or late, how late the
server's 20 ms media clock woke up, and the server's own per-turn metrics from its
trace spans. Warnings and errors the server logged are printed at the end.

    python benchmarks/phone_stack.py                  # about 5 minutes at most
    python benchmarks/phone_stack.py --sizes 1,2 --turns 3 --all
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import logging
import multiprocessing
import os
import platform
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from phone import QUIET, core_busy, sip_calls
from speech_corpus import (
    RATE,
    Clip,
    card_clips,
    command_clips,
    interleave,
    librivox_clips,
    local_config,
    parse_overrides,
    speech_bounds,
    spoken_questions,
)
from voice_latency import warm_up

from cascade.audio import resample
from cascade.conversation import Pipeline
from cascade.metrics import percentile, summarize, turn_metrics
from cascade.telephony import g711

LIMIT = 1.5
"""Voice-to-voice p95 (s) a size must stay within."""
BUDGET = 300.0
"""Seconds the whole run may take; a size is skipped when the last one would not fit."""
LINE_RATE = 8000
PACKET = 160
TICK = 0.02
SILENT = bytes([g711.SILENCE["PCMU"]]) * PACKET
SERVER_CORE, CALLER_CORE = 0, 1
SERVER_METRICS = ("voice_to_voice", "endpointing", "asr", "llm_ttft", "tts_ttfb")


# --- the server process ---------------------------------------------------------


class LogTally(logging.Handler):
    """Warnings and errors the server logged, counted per distinct message."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        self.seen[text[:240]] += 1


def serve(overrides: dict[str, dict[str, Any]], pin: bool, trace_dir: Path | None,
          conn: Connection) -> None:
    if pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {SERVER_CORE})
    logs = LogTally()
    logging.getLogger().addHandler(logs)
    pipeline = Pipeline(local_config(overrides))
    started = time.perf_counter()
    pipeline.preload()
    warm_up(pipeline)
    asyncio.run(_serve(pipeline, logs, time.perf_counter() - started, trace_dir, conn))


async def _serve(pipeline: Pipeline, logs: LogTally, load_s: float, trace_dir: Path | None,
                 conn: Connection) -> None:
    from cascade.telephony.sip_call import MediaSettings
    from cascade.telephony.sip_server import SipServer, SipSettings
    from cascade.tracing import MemoryTrace, TraceSink, TraceWriter

    traces: list[MemoryTrace] = []

    def trace(call_id: str) -> list[TraceSink]:
        traces.append(MemoryTrace())
        if trace_dir is None:
            return [traces[-1]]
        return [traces[-1], TraceWriter(trace_dir / f"{time.time():.0f}-{call_id}.jsonl")]

    sip = SipServer(pipeline, SipSettings(port=0, max_calls=64, traces=trace,
                                          media=MediaSettings(media_timeout=60)))
    await sip.start()
    metrics = sip.metrics

    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    def snapshot(command: str) -> dict[str, Any]:
        calls = [d.call for d in sip.dialogs.values() if d.call is not None]
        errors = {s.labels["kind"]: s.value for m in metrics.registry.collect()
                  for s in m.samples if s.name == "cascade_phone_errors_total"}
        rows = [m for t in traces for m in turn_metrics(t.spans) if m.turn != 0]
        out = {
            "cpu": time.process_time(), "wall": time.perf_counter(),
            "active": value("cascade_phone_active_calls"),
            "dropped": value("cascade_phone_media_frames_total", direction="in",
                             fate="dropped"),
            "late": sum(c.jitter.stats.late + c.jitter.stats.concealed for c in calls),
            "agent_dropped": sum(c.sink.dropped for c in calls),
            "tick_lag": sip.clock.worst_lag, "late_ticks": sip.clock.late_ticks,
            "interruptions": value("cascade_phone_interruptions_total"),
            "errors": errors, "logs": dict(logs.seen), "turns": summarize(rows),
            "stage_errors": sum(m.errors for m in rows),
        }
        if command == "reset":
            sip.clock.worst_lag = 0.0
            traces.clear()
        elif command == "hang up":  # the server's BYE: phone.sip_hang_up's lacks the To tag
            for call_id in list(sip.dialogs):
                sip.spawn(sip.hang_up(call_id, "benchmark size done", attempts=1))
        return out

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def on_command() -> None:  # a pipe reader on the loop: no executor thread taken
        command = conn.recv()
        if command == "stop":
            stopping.set()
        else:
            conn.send(snapshot(command))

    loop.add_reader(conn.fileno(), on_command)
    conn.send((sip.port, load_s))
    await stopping.wait()
    loop.remove_reader(conn.fileno())
    await sip.stop()


# --- the callers ----------------------------------------------------------------


@dataclass(frozen=True)
class LineClip:
    """A clip as the caller sends it: 20 ms mu-law payloads, where its speech lies."""

    name: str
    payloads: tuple[bytes, ...]
    speech_start: int
    speech_end: int
    """Sample offsets at 8 kHz."""

    @classmethod
    def of(cls, clip: Clip) -> LineClip:
        pcm = resample(clip.pcm, RATE, LINE_RATE)
        pcm = np.concatenate([pcm, np.zeros(-len(pcm) % PACKET, np.int16)])
        encoded = g711.ulaw_encode(pcm)
        first, last = speech_bounds(clip.pcm)
        return cls(clip.name, tuple(encoded[i:i + PACKET] for i in range(0, len(encoded),
                                                                         PACKET)),
                   first * LINE_RATE // RATE, last * LINE_RATE // RATE)


class Ear(asyncio.DatagramProtocol):
    """The caller's earpiece: when the agent was audible, and when a talk spurt began.

    The server sends silence packets whenever it has no agent audio, and sets the RTP
    marker bit on the first packet of agent audio after them (a talk spurt)."""

    def __init__(self) -> None:
        self.loud: list[float] = []
        self.spurts: list[float] = []
        self.gaps: list[float] = []
        """Seconds of silence packets just before each talk spurt."""
        self._quiet = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.monotonic()
        if len(data) <= 12:
            return
        payload = data[12:]
        if data[1] & 0x80:
            self.spurts.append(now)
            self.gaps.append(self._quiet * TICK)
        self._quiet = self._quiet + 1 if payload == SILENT else 0
        if np.abs(g711.ulaw_decode(payload).astype(np.int32)).max() >= QUIET:
            self.loud.append(now)

    def audible(self, after: float, before: float) -> bool:
        return bisect.bisect_left(self.loud, before) > bisect.bisect_right(self.loud, after)

    def first_loud(self, after: float) -> float | None:
        index = bisect.bisect_left(self.loud, after)
        return self.loud[index] if index < len(self.loud) else None

    def breaks(self, after: float, before: float) -> list[float]:
        """Gaps before each talk spurt in (after, before) that restarted audible agent
        speech within 0.2 s, the reply's first spurt left out. A spurt with nothing
        audible after it is the reply's padded tail (``RtpSink.take`` holds a tail
        shorter than a packet back one tick), not a break."""
        low = bisect.bisect_right(self.spurts, after)
        high = bisect.bisect_left(self.spurts, before)
        found = []
        for index in range(low + 1, high):
            heard = self.first_loud(self.spurts[index])
            if heard is not None and heard - self.spurts[index] <= 0.2:
                found.append(self.gaps[index])
        return found


@dataclass
class Turn:
    call: int
    clip: str
    v2v: float | None = None
    """None: no reply within the timeout, or talked over."""
    talked_over: bool = False
    breaks: list[float] = field(default_factory=list)
    """Silence (s) before each restart of the agent's audio within the reply."""


@dataclass
class CallerPace:
    """How late the callers' packets went out, at worst."""

    worst_lag: float = 0.0


@dataclass
class Caller:
    call: Any
    clips: list[LineClip]
    lead: float
    pause: float
    reply_timeout: float
    pace: CallerPace
    turns: list[Turn] = field(default_factory=list)

    async def run(self, number: int) -> list[Turn]:
        """Speak each clip at real-time pace, then listen (sending silence) for the reply."""
        rtp, sender, remote, *_ = self.call
        ear = Ear()
        rtp.set_protocol(ear)
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0

        async def send(payload: bytes) -> float:
            """Packet ``sent`` goes out once its 20 ms have been spoken; when it did."""
            nonlocal sent
            due = start + (sent + 1) * TICK
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time()
            self.pace.worst_lag = max(self.pace.worst_lag, now - due)
            rtp.sendto(sender.packet(payload, speech=payload is not SILENT), remote)
            sent += 1
            return now

        while loop.time() < start + self.lead:
            await send(SILENT)
        for clip in self.clips:
            began = ended = loop.time()
            for index, payload in enumerate(clip.payloads):
                at = await send(payload)
                if index == clip.speech_start // PACKET:
                    began = at - TICK + (clip.speech_start % PACKET) / LINE_RATE
                if index == (clip.speech_end - 1) // PACKET:
                    ended = at - ((index + 1) * PACKET - clip.speech_end) / LINE_RATE
            turn = Turn(number, clip.name, talked_over=ear.audible(began, ended))
            while True:
                now = await send(SILENT)
                heard = ear.first_loud(ended)
                if heard is None:
                    if now - ended > self.reply_timeout:
                        break
                elif now - ear.loud[-1] >= self.pause:
                    if not turn.talked_over:
                        turn.v2v = heard - ended
                    turn.breaks = ear.breaks(ended, now)
                    break
            self.turns.append(turn)
        return self.turns


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies summed over every core."""
    pairs = [core_busy(core) for core in range(os.cpu_count() or 1)]
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


async def run_size(conn: Connection, port: int, n: int, pool: list[LineClip],
                   args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    conn.send("reset")
    before = conn.recv()
    busy0, cpu0 = machine_busy(), time.process_time()
    calls, _ = await sip_calls(port, n)
    rng = random.Random(n)
    pace = CallerPace()
    talks = [Caller(call, [pool[(i * 3 + t) % len(pool)] for t in range(args.turns)],
                    0.5 + rng.uniform(0, args.stagger), args.pause, args.reply_timeout, pace)
             for i, call in enumerate(calls)]
    done = await asyncio.gather(*(caller.run(i) for i, caller in enumerate(talks)))
    turns = [turn for heard in done for turn in heard]
    conn.send("stats")
    after = conn.recv()
    busy1, caller_cpu = machine_busy(), time.process_time() - cpu0
    conn.send("hang up")
    conn.recv()
    for _ in range(200):
        conn.send("stats")
        if conn.recv()["active"] == 0:
            break
        await asyncio.sleep(0.05)
    else:
        print(f"warning: calls still up on the server 10 s after hanging up {n}")
    for rtp, _, _, signal, *_ in calls:
        rtp.close()
        signal.close()
    wall = after["wall"] - before["wall"]
    server_cpu = after["cpu"] - before["cpu"]
    cores = os.cpu_count() or 1
    machine = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * cores
    v2v = [t.v2v for t in turns if t.v2v is not None]
    missing = sum(1 for t in turns if t.v2v is None and not t.talked_over)
    p95 = percentile(v2v, 95) if v2v else float("inf")
    logs = Counter(after["logs"])
    logs.subtract(before["logs"])
    errors = Counter(after["errors"])
    errors.subtract(before["errors"])
    return {
        "n": n, "turns": len(turns), "wall": wall,
        "p50": percentile(v2v, 50) if v2v else None, "p95": p95 if v2v else None,
        "max": max(v2v, default=None), "missing": missing,
        "talked_over": sum(t.talked_over for t in turns),
        "breaks": sum(len(t.breaks) for t in turns),
        "longest_break": max((g for t in turns for g in t.breaks), default=0.0),
        "server_cpu": server_cpu / wall,
        "others": max(0.0, machine - (server_cpu + caller_cpu) / wall),
        "dropped": after["dropped"] - before["dropped"], "late": after["late"],
        "agent_dropped": after["agent_dropped"],
        "tick_lag": after["tick_lag"], "late_ticks": after["late_ticks"] - before["late_ticks"],
        "caller_lag": pace.worst_lag, "load": (load_before, os.getloadavg()[0]),
        "server": after["turns"], "interruptions": after["interruptions"]
        - before["interruptions"], "stage_errors": after["stage_errors"],
        "errors": {k: v for k, v in errors.items() if v}, "logs": {k: v for k, v in
                                                                   logs.items() if v},
        "ok": p95 <= LIMIT and missing == 0, "each": turns,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


HEADER = (f"{'calls':>5} {'turns':>5} {'v2v p50':>8} {'v2v p95':>8} {'v2v max':>8} "
          f"{'missing':>7} {'talked over':>11} {'reply breaks':>19} {'server CPU':>10} "
          f"{'others':>6} {'in dropped/late':>15} {'tick lag':>8} {'load avg':>10}  "
          f"p95 <= {LIMIT} s")
SERVER_HEADER = (f"{'calls':>5} {'turns':>5} "
                 + " ".join(f"{name + ' p50/p95':>22}" for name in SERVER_METRICS)
                 + f" {'interruptions':>13} {'errors':>6}")


def row(p: dict[str, Any]) -> str:
    verdict = "yes" if p["ok"] else ("NO (missing reply)" if p["missing"] else "NO")
    return (f"{p['n']:>5} {p['turns']:>5} {_ms(p['p50']):>6}ms {_ms(p['p95']):>6}ms "
            f"{_ms(p['max']):>6}ms {p['missing']:>7} {p['talked_over']:>11} "
            f"{p['breaks']:>5} (max {p['longest_break'] * 1000:>3.0f}ms) "
            f"{p['server_cpu']:>10.0%} {p['others']:>6.0%} "
            f"{p['dropped']:>7.0f}/{p['late']:<7.0f} {p['tick_lag'] * 1000:>6.0f}ms "
            f"{p['load'][0]:>4.1f}->{p['load'][1]:<4.1f}  {verdict}")


def server_row(p: dict[str, Any]) -> str:
    cells = []
    for name in SERVER_METRICS:
        stats = p["server"].get(name)
        cells.append("-" if stats is None else f"{_ms(stats['p50'])}/{_ms(stats['p95'])} ms"
                     f" (n={stats['n']:.0f})")
    return (f"{p['n']:>5} {p['turns']:>5} " + " ".join(f"{c:>22}" for c in cells)
            + f" {p['interruptions']:>13.0f} {p['stage_errors']:>6}")


async def ladder(conn: Connection, port: int, pool: list[LineClip], args: argparse.Namespace,
                 began: float) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    for n in args.sizes:
        elapsed = time.monotonic() - began
        if points and elapsed + points[-1]["wall"] * 1.2 > args.budget:
            print(f"{n:>5}  skipped: {elapsed:.0f} s gone of the {args.budget:.0f} s budget")
            break
        point = await run_size(conn, port, n, pool, args)
        points.append(point)
        print(row(point), flush=True)
        if args.each:
            for turn in sorted(point["each"], key=lambda t: t.call):
                state = ("talked over" if turn.talked_over else "no reply" if turn.v2v is None
                         else f"{turn.v2v * 1000:.0f} ms")
                print(f"      call {turn.call + 1}: {turn.clip:<14} {state:>12}, "
                      f"breaks {' '.join(f'{g * 1000:.0f}ms' for g in turn.breaks) or '-'}")
        if not point["ok"] and not args.all:
            break
    return points


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,2,3,4", help="concurrent calls to try, in order")
    parser.add_argument("--turns", type=int, default=4, help="utterances per caller (4)")
    parser.add_argument("--all", action="store_true", help="measure every size, not stopping "
                        f"at the first whose p95 exceeds {LIMIT} s")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds of agent silence "
                        "before the caller speaks again (1.0)")
    parser.add_argument("--reply-timeout", type=float, default=12.0)
    parser.add_argument("--stagger", type=float, default=3.0, help="callers start their "
                        "first utterance at random within this many seconds")
    parser.add_argument("--max-tokens", type=int, default=30, help="LLM reply cap (30, as in "
                        "voice_latency.py; the pipeline's own is 60)")
    parser.add_argument("--questions", action="store_true", help="interleave questions "
                        "spoken by the Piper voice with the recordings, as voice_latency.py")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.OPTION=VALUE",
                        help="override a stage option of the local pipeline (repeatable)")
    parser.add_argument("--pin", action="store_true", help=f"pin the server to core "
                        f"{SERVER_CORE} and the callers to core {CALLER_CORE} (as phone.py)")
    parser.add_argument("--budget", type=float, default=BUDGET, help="seconds for the run")
    parser.add_argument("--each", action="store_true", help="also print every turn")
    parser.add_argument("--trace-dir", type=Path, help="also write the server's spans of "
                        "each call here (JSON Lines, for cascade trace)")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    return args


def main() -> None:
    args = parse_args()
    began = time.monotonic()
    overrides = parse_overrides(args.set)
    overrides.setdefault("llm", {}).setdefault("max_tokens", args.max_tokens)
    if args.pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {CALLER_CORE})
    human = interleave(librivox_clips(), command_clips() + card_clips())
    clips = interleave(spoken_questions(), human) if args.questions else human
    pool = [LineClip.of(clip) for clip in clips]
    if args.trace_dir is not None:
        args.trace_dir.mkdir(parents=True, exist_ok=True)
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.get_context("spawn").Process(
        target=serve, args=(overrides, args.pin, args.trace_dir, child), daemon=True)
    server.start()
    port, load_s = parent.recv()
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; server {'on core 0' if args.pin else 'unpinned'}, "
          f"models loaded and warmed up in {load_s:.0f} s; local pipeline, llm.max_tokens="
          f"{overrides['llm']['max_tokens']}; {args.turns} utterances per caller, "
          f"{'recorded + Piper-spoken' if args.questions else 'recorded'} speech, "
          f"{args.pause:.1f} s pause after each reply; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(HEADER, flush=True)
    points = asyncio.run(ladder(parent, port, pool, args, began))
    parent.send("stop")
    server.join(10)
    if server.is_alive():
        server.terminate()
    print("\nserver's own per-turn metrics (its trace spans; voice_to_voice from the VAD's "
          "end of speech to playout start):")
    print(SERVER_HEADER)
    for point in points:
        print(server_row(point))
    kept = 0
    for point in points:
        if not point["ok"]:
            break
        kept = point["n"]
    more = "+" if points and all(p["ok"] for p in points) else ""
    print(f"\ncalls before p95 > {LIMIT} s: {kept}{more}")
    for point in points:
        print(f"{point['n']} calls: {point['wall']:.0f} s, media clock late "
              f"{point['late_ticks']} times (> 20 ms), worst caller send lag "
              f"{point['caller_lag'] * 1000:.0f} ms, agent samples dropped "
              f"{point['agent_dropped']}")
        for name, source in (("server errors", point["errors"]), ("server log", point["logs"])):
            for text, count in sorted(source.items(), key=lambda kv: -kv[1])[:8]:
                print(f"{point['n']} calls, {name}: {count:.0f}x {text}")
    print(f"run took {time.monotonic() - began:.0f} s; load average now "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
