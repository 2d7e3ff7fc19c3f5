"""Voice-to-voice latency of the embedded local pipeline, on real speech at real-time pace.

Calls are built from recorded human speech (LibriVox sentences, the
pocketsphinx commands, spoken playing cards) interleaved with questions spoken
by the pipeline's Piper voice, each followed by enough silence for the agent's
short reply (LLM ``max_tokens`` capped) to finish before the caller speaks
again. Every call streams through Silero VAD -> faster-whisper tiny.en -> turn
controller -> SmolLM2-135M -> Piper in 20 ms frames on the ``RealClock``.

Reported: p50/p95 of the framework's own per-turn metrics (``cascade.metrics``:
voice_to_voice, endpointing, asr, llm_ttft, tts_ttfb), the same
voice-to-voice measured from the true end of speech (``v2v_from_true_end``: the
clip's last loud 10 ms on the caller's timeline, not the VAD's estimate;
``vad_lag`` is the difference), and where the time of a turn goes, from the
moments each stage emitted its output:

    end of speech (VAD) -> SpeechStopped -> final transcript -> EndOfTurn
      -> first clause to TTS -> first agent audio -> playout starts

``endpointing`` (end of speech -> EndOfTurn) therefore includes the VAD
hangover and the wait for the ASR final, not only the turn controller's delay.

    python benchmarks/voice_latency.py                 # 20 turns, real time (~5 min)
    python benchmarks/voice_latency.py --fast --turns 5   # virtual-clock smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from speech_corpus import (
    RATE,
    Call,
    Placed,
    build_call,
    human_clips,
    interleave,
    local_config,
    parse_overrides,
    spoken_questions,
)

from cascade.audio import FRAME_SECONDS
from cascade.clock import Clock, RealClock, VirtualClock
from cascade.conversation import Pipeline
from cascade.frames import AgentAudio, EndOfTurn, Frame, LLMText, SpeechStopped, Transcript
from cascade.metrics import TurnMetrics, percentile, summarize, turn_metrics
from cascade.tracing import MemoryTrace, Span, TraceSink, TraceWriter, spans_by_turn

SECONDS_PER_TOKEN = 0.3
"""Upper bound of Piper joe speech per SmolLM2 token (measured ~0.27 s); sizes the gap."""
REPLY_ALLOWANCE = 4.0
"""Seconds added to the longest possible reply for the agent to start speaking."""
EARLY_TOLERANCE = 0.3
"""A turn ending more than this before the clip's speech ends was cut mid-utterance."""

SEGMENTS = (
    ("vad_hangover", "VAD end of speech -> SpeechStopped (min_silence)"),
    ("asr_wait", "SpeechStopped -> final transcript"),
    ("endpoint_wait", "final transcript -> EndOfTurn (rest of min_delay)"),
    ("llm_first_clause", "EndOfTurn -> first clause sent to TTS"),
    ("tts_first_audio", "first clause -> first agent audio (Piper)"),
    ("playout", "first agent audio -> playout starts"),
)


class StageMarks:
    """A graph observer: the pipeline-clock moment each stage emitted the frames that
    close a turn's latency segments."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.stopped: dict[float, float] = {}
        self.finals: dict[float, float] = {}
        self.first: dict[tuple[str, int], float] = {}

    def see(self, stage: str, frame: Frame) -> None:
        now = self.clock.now()
        if isinstance(frame, SpeechStopped):
            self.stopped[frame.time] = now
        elif isinstance(frame, Transcript) and frame.final:
            self.finals[frame.speech_end] = now
        elif isinstance(frame, EndOfTurn):
            self.first.setdefault(("eot", frame.turn), now)
        elif isinstance(frame, LLMText) and frame.text.strip():
            self.first.setdefault(("clause", frame.turn), now)
        elif isinstance(frame, AgentAudio) and len(frame.pcm):
            self.first.setdefault(("audio", frame.turn), now)


@dataclass
class CallRun:
    """What one call produced: spans, stage marks and the stamps of the frames sent."""

    call: Call
    spans: list[Span]
    marks: StageMarks
    frame_times: list[float]
    wall: float

    def at(self, sample: int) -> float:
        """When the caller said ``sample``: ``play_recording`` sends frame k at its start
        + k x 20 ms, so the caller's timeline is linear from the first frame."""
        return self.frame_times[0] + sample / RATE

    def stamp_drift(self) -> float:
        """How far ahead of the caller's timeline the frames' media-time stamps ran."""
        step = FRAME_SECONDS
        first = self.frame_times[0]
        return max(t - (first + k * step) for k, t in enumerate(self.frame_times))


@dataclass
class TurnRow:
    """One answered caller turn: the framework's metrics plus the breakdown."""

    call: int
    metrics: TurnMetrics
    clip: str = ""
    complete: bool = True
    v2v_true_end: float | None = None
    vad_lag: float | None = None
    segments: dict[str, float | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"call": self.call, "clip": self.clip, "complete": self.complete,
                "v2v_true_end": self.v2v_true_end, "vad_lag": self.vad_lag,
                **self.metrics.as_dict(), "segments": self.segments}


async def run_calls(pipeline: Pipeline, calls: Sequence[Call], clock: Clock,
                    trace_dir: Path | None) -> list[CallRun]:
    """Each call in turn, one conversation at a time, at caller pace on ``clock``."""
    runs = []
    for index, call in enumerate(calls, 1):
        memory = MemoryTrace()
        sinks: list[TraceSink] = [memory]
        if trace_dir is not None:
            sinks.append(TraceWriter(trace_dir / f"call{index}.jsonl"))
        marks = StageMarks(clock)
        conversation = pipeline.conversation(clock, traces=sinks, conversation_id=f"call{index}")
        conversation.graph.observers.append(marks.see)
        started = time.perf_counter()
        await conversation.start()
        try:
            frames = await conversation.play_recording(call.pcm)
            await conversation.wait_finished()
        finally:
            await conversation.stop()
            for sink in sinks[1:]:
                sink.close()
        runs.append(CallRun(call, memory.spans, marks, [f.time for f in frames],
                            time.perf_counter() - started))
    return runs


def _first(group: list[Span], name: str) -> Span | None:
    return next((s for s in group if s.name == name), None)


def _gap(later: float | None, earlier: float | None) -> float | None:
    return None if later is None or earlier is None else later - earlier


def _clip_at(run: CallRun, when: float) -> Placed | None:
    """The clip being spoken (or answered) at pipeline time ``when``."""
    found = None
    for placed in run.call.placed:
        if run.at(placed.start) <= when:
            found = placed
    return found


def turn_rows(index: int, run: CallRun) -> list[TurnRow]:
    groups = dict(spans_by_turn(run.spans))
    rows = []
    for m in turn_metrics(run.spans):
        if m.turn == 0 or m.voice_to_voice is None:
            continue
        group = groups[m.turn]
        eot, speech = _first(group, "end_of_turn"), _first(group, "agent_speech")
        assert eot is not None and speech is not None
        end = eot.start
        marks = run.marks
        stopped, final = marks.stopped.get(end), marks.finals.get(end)
        said = marks.first.get(("eot", m.turn))
        clause = marks.first.get(("clause", m.turn))
        audio = marks.first.get(("audio", m.turn))
        row = TurnRow(index, m, segments={
            "vad_hangover": _gap(stopped, end),
            "asr_wait": _gap(final, stopped),
            "endpoint_wait": _gap(said, final),
            "llm_first_clause": _gap(clause, said),
            "tts_first_audio": _gap(audio, clause),
            "playout": _gap(speech.start, audio),
        })
        placed = _clip_at(run, end)
        if placed is not None:
            true_end = run.at(placed.speech_end)
            row.clip = placed.clip.name
            row.vad_lag = end - true_end
            row.complete = end >= true_end - EARLY_TOLERANCE
            if row.complete:
                row.v2v_true_end = speech.start - true_end
        rows.append(row)
    return rows


def call_checks(runs: Sequence[CallRun]) -> dict[str, Any]:
    """Did the calls run as designed: replies over before the caller spoke again?"""
    margins, interruptions, errors = [], 0, 0
    drift = max(run.stamp_drift() for run in runs)
    for run in runs:
        starts = sorted(run.at(p.speech_start) for p in run.call.placed)
        for span in run.spans:
            if span.name == "agent_speech":
                later = [s for s in starts if s > span.start]
                if later:
                    margins.append(later[0] - span.end)
            interruptions += span.name == "interruption"
            errors += span.name == "error"
    return {"interruptions": interruptions, "errors": errors,
            "min_margin_s": min(margins) if margins else None, "stamp_drift_s": drift}


def _stats(values: Sequence[float | None]) -> dict[str, float] | None:
    found = [v for v in values if v is not None]
    if not found:
        return None
    return {"p50": percentile(found, 50), "p95": percentile(found, 95),
            "mean": statistics.fmean(found), "n": float(len(found))}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def summary(rows: Sequence[TurnRow]) -> dict[str, dict[str, float]]:
    out = summarize(r.metrics for r in rows)
    for name, values in (("v2v_from_true_end", [r.v2v_true_end for r in rows]),
                         ("vad_lag", [r.vad_lag for r in rows])):
        stats = _stats(values)
        if stats is not None:
            out[name] = stats
    return out


def breakdown(rows: Sequence[TurnRow]) -> dict[str, Any]:
    """Segments of the median turn (by voice_to_voice), and p50/p95 of each segment."""
    ranked = sorted(rows, key=lambda r: r.metrics.voice_to_voice or 0.0)
    median = ranked[(len(ranked) - 1) // 2]
    return {
        "median_turn": {"call": median.call, "turn": median.metrics.turn, "clip": median.clip,
                        "voice_to_voice": median.metrics.voice_to_voice,
                        "llm_ttft": median.metrics.llm_ttft, "segments": median.segments},
        "segments": {name: _stats([r.segments.get(name) for r in rows])
                     for name, _ in SEGMENTS},
    }


def print_report(console: Console, rows: Sequence[TurnRow], result: dict[str, Any]) -> None:
    clock = "virtual clock (compute takes no time)" if result["settings"]["fast"] else "real time"
    table = Table(title=f"Voice-to-voice latency, local pipeline, {len(rows)} turns, {clock}")
    for column in ("metric", "n", "p50 ms", "p95 ms", "mean ms"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, stats in result["summary"].items():
        table.add_row(name, f"{stats['n']:.0f}", _ms(stats["p50"]), _ms(stats["p95"]),
                      _ms(stats["mean"]))
    console.print(table)

    parts = result["breakdown"]
    median = parts["median_turn"]
    table = Table(title=f"Where the time goes: median turn = call {median['call']} "
                        f"turn {median['turn']} ({median['clip']}), "
                        f"{_ms(median['voice_to_voice'])} ms")
    for column in ("segment", "median turn ms", "share", "p50 ms", "p95 ms", "what"):
        table.add_column(column, justify="left" if column in ("segment", "what") else "right")
    total = median["voice_to_voice"] or 0.0
    for name, what in SEGMENTS:
        value = median["segments"].get(name)
        stats = parts["segments"].get(name) or {}
        share = "-" if value is None or total <= 0 else f"{100 * value / total:.0f}%"
        if name == "llm_first_clause" and median["llm_ttft"] is not None:
            what += f" (TTFT {_ms(median['llm_ttft'])})"
        table.add_row(name, _ms(value), share, _ms(stats.get("p50")), _ms(stats.get("p95")), what)
    table.add_row("voice_to_voice", _ms(total), "100%", "", "", "sum")
    console.print(table)

    table = Table(title="Turns")
    for column in ("call", "turn", "clip", "heard", "end", "v2v", "v2v true", "hang", "asr",
                   "endp", "llm", "ttft", "tts"):
        table.add_column(column, justify="left" if column in ("clip", "heard", "end") else "right",
                         overflow="ellipsis", no_wrap=column == "heard",
                         max_width=30 if column == "heard" else None)
    for r in rows:
        s, m = r.segments, r.metrics
        table.add_row(str(r.call), str(m.turn), r.clip + ("" if r.complete else " (cut)"),
                      m.heard, m.end_reason or "", _ms(m.voice_to_voice), _ms(r.v2v_true_end),
                      _ms(s.get("vad_hangover")), _ms(s.get("asr_wait")),
                      _ms(s.get("endpoint_wait")), _ms(s.get("llm_first_clause")),
                      _ms(m.llm_ttft), _ms(s.get("tts_first_audio")))
    console.print(table)
    checks = result["checks"]
    margin = checks["min_margin_s"]
    console.print(
        f"clips spoken {result['clips']}, turns answered {len(rows)} "
        f"({sum(not r.complete for r in rows)} cut mid-utterance), "
        f"interruptions {checks['interruptions']}, errors {checks['errors']}; "
        f"smallest silence between a reply's end and the next utterance "
        f"{'-' if margin is None else f'{margin:.1f} s'} "
        f"(gap {result['settings']['gap_s']:.1f} s); frame stamps ran up to "
        f"{checks['stamp_drift_s']:.2f} s ahead of the caller's pace; load average "
        f"{result['settings']['loadavg_before'][0]:.1f} -> "
        f"{result['settings']['loadavg_after'][0]:.1f} on {result['settings']['cpus']} CPUs")


def warm_up(pipeline: Pipeline) -> None:
    """One short call on the virtual clock, so first-inference costs are not measured."""
    clip = next(c for c in human_clips() if c.name == "goforward")
    clock = VirtualClock()
    clock.run(run_calls(pipeline, [build_call([clip], gap=3.0)], clock, None))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20, help="caller utterances (default 20)")
    parser.add_argument("--turns-per-call", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=30, help="LLM reply cap (default 30)")
    parser.add_argument("--gap", type=float, default=None, help="silence after each utterance "
                        f"(s; default max_tokens x {SECONDS_PER_TOKEN} + {REPLY_ALLOWANCE})")
    parser.add_argument("--fast", action="store_true", help="virtual clock: a quick smoke run; "
                        "compute takes no pipeline time, so only built-in waits show")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.OPTION=VALUE",
                        help="override a stage option of the local pipeline (repeatable), "
                        "e.g. --set asr.partial_interval=0")
    parser.add_argument("--no-warmup", action="store_true")
    parser.add_argument("--trace-dir", type=Path, help="also write each call's spans (JSONL)")
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=132)
    overrides = parse_overrides(args.set)
    max_tokens = overrides.setdefault("llm", {}).setdefault("max_tokens", args.max_tokens)
    gap = args.gap if args.gap is not None else math.ceil(
        max_tokens * SECONDS_PER_TOKEN + REPLY_ALLOWANCE)
    pool = interleave(spoken_questions(), human_clips())
    clips = [pool[i % len(pool)] for i in range(args.turns)]
    per = max(1, args.turns_per_call)
    calls = [build_call(clips[i:i + per], gap) for i in range(0, len(clips), per)]
    pipeline = Pipeline(local_config(overrides))
    started = time.perf_counter()
    with console.status("loading models…"):
        pipeline.preload()
        load_s = time.perf_counter() - started
        if not args.no_warmup:
            warm_up(pipeline)
    if args.trace_dir is not None:
        args.trace_dir.mkdir(parents=True, exist_ok=True)
    clock: Clock = VirtualClock() if args.fast else RealClock()
    audio_s = sum(c.seconds for c in calls)
    load_before = os.getloadavg()
    with console.status(f"{len(calls)} calls, {audio_s:.0f} s of caller audio"
                        f"{' (virtual clock)' if args.fast else ' at real-time pace'}…"):
        runs = clock.run(run_calls(pipeline, calls, clock, args.trace_dir))
    rows = [row for index, run in enumerate(runs, 1) for row in turn_rows(index, run)]
    if not rows:
        raise SystemExit("no turn was answered: nothing to report")
    result = {
        "settings": {"turns": args.turns, "turns_per_call": per, "calls": len(calls),
                     "max_tokens": max_tokens, "overrides": overrides, "gap_s": gap,
                     "fast": args.fast, "warmup": not args.no_warmup,
                     "audio_s": round(audio_s, 2),
                     "model_load_s": round(load_s, 2), "cpus": os.cpu_count(),
                     "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                     "wall_s": round(sum(r.wall for r in runs), 2)},
        "clips": len(clips),
        "summary": summary(rows),
        "breakdown": breakdown(rows),
        "checks": call_checks(runs),
        "turns": [r.as_dict() for r in rows],
    }
    print_report(console, rows, result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
        console.print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
