"""Offline turn-taking benchmark: labelled conversations through two turn controllers.

Every conversation made by ``generate.py`` is streamed, in 20 ms frames at
caller pace, through real Silero VAD -> faster-whisper tiny.en -> the
``TurnController``, with a model-free agent behind it (``echo-llm`` always
saying the same 24-word reply, ``tone-tts`` speaking it as tones), twice:

* ``silence``    - silence only: ``min_delay`` 0.3 s for every turn, no
                   continuation words, ``incomplete_delay`` = ``min_delay`` (so
                   the trailing-punctuation cue, which has no switch, is moot);
* ``smart-turn`` - Smart Turn v3.2 plus the default transcript cues:
                   ``incomplete_delay`` 1.2 s when either says "unfinished".

The scores (``scoring.py``) come from the trace spans alone and are printed
side by side, Full-Duplex-Bench style. By default the run is on the
``VirtualClock``: model compute takes no virtual time, so delays exclude ASR
and Smart Turn compute. ``--realtime`` runs on the ``RealClock`` at real pace
(about the audio's length per configuration) and then includes compute.

    python benchmarks/turns/run.py                  # 40 conversations, virtual clock
    python benchmarks/turns/run.py --json out.json  # ... and every outcome as JSON
    python benchmarks/turns/run.py --realtime --limit 5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from generate import DATA, load_or_generate, tally
from rich.console import Console
from rich.table import Table
from scoring import score, shifted, summarise

from cascade import MemoryTrace, Pipeline, RealClock, TraceWriter, VirtualClock, parse_pipeline
from cascade.adapters.faster_whisper import FasterWhisperASR
from cascade.audio import read_audio
from cascade.clock import Clock
from cascade.frames import PCM
from cascade.stages.asr import Recognition
from cascade.stages.turn import TurnOptions
from cascade.tracing import Span, TraceSink

CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "silence": ("silence only", {
        "min_delay": 0.3, "incomplete_delay": 0.3, "max_delay": 3.0, "continuation_words": []}),
    "smart-turn": ("Smart Turn + cues", {
        "min_delay": 0.3, "incomplete_delay": 1.2, "max_delay": 3.0,
        "semantic_model": "smart-turn"}),
}
VAD = {"threshold": 0.5, "min_silence": 0.2}
ASR = {"partial_interval": 0.0}
"""No partial transcripts: with barge_in_min_words 0 the controller ignores them, and
each costs a Whisper call."""


class SharedWhisper(FasterWhisperASR):  # type: ignore[misc]
    """faster-whisper that transcribes each distinct segment once per process.

    The caller audio, the VAD and so the ASR segments are the same in every
    configuration (only the turn controller differs), so the second configuration
    reuses the first one's transcripts: half the Whisper calls, and both
    controllers judge exactly the same words (Whisper's temperature fallback
    samples, so a second call could differ). Virtual clock only: there, compute
    takes no time anyway.
    """

    results: ClassVar[dict[bytes, Recognition]] = {}

    def recognize(self, audio: npt.NDArray[np.float32]) -> Recognition:
        key = hashlib.sha1(audio.tobytes()).digest()
        found = self.results.get(key)
        if found is None:
            found = self.results[key] = super().recognize(audio)
        return found


def pipeline(turn: dict[str, Any], agent: dict[str, Any], share_asr: bool) -> Pipeline:
    pipe = Pipeline(parse_pipeline({"name": "turn-benchmark", "stages": {
        "vad": {"adapter": "silero", "options": VAD},
        "asr": {"adapter": "faster-whisper", "options": ASR},
        "turn": {"adapter": "turn", "options": turn},
        "llm": {"adapter": "echo-llm", "options": {"template": agent["template"]}},
        "tts": {"adapter": "tone-tts", "options": {
            "seconds_per_word": agent["seconds_per_word"]}},
    }}))
    if share_asr:
        pipe.adapters["asr"] = (SharedWhisper, pipe.adapters["asr"][1])
    return pipe


async def converse(pipe: Pipeline, audio: PCM, clock: Clock, cid: str,
                   sinks: list[TraceSink]) -> tuple[list[Span], float]:
    """Stream one caller track; the spans, and when its first sample entered the graph."""
    memory = MemoryTrace()
    conversation = pipe.conversation(clock, traces=[memory, *sinks], conversation_id=cid)
    await conversation.start()
    try:
        frames = await conversation.play_recording(audio)
        await conversation.wait_finished()
    finally:
        await conversation.stop()
    return memory.spans, frames[0].time


def run(manifest: dict[str, Any], data: Path, names: list[str], realtime: bool,
        traces: Path | None, console: Console) -> dict[str, Any]:
    agent = manifest["agent"]
    pipes = {name: pipeline(CONFIGS[name][1], agent, share_asr=not realtime) for name in names}
    for pipe in pipes.values():
        pipe.preload()
    outcomes: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    wall = dict.fromkeys(names, 0.0)
    for conversation in manifest["conversations"]:
        audio = read_audio(data / conversation["file"], manifest["rate"])
        line = []
        for name in names:
            min_speech = TurnOptions(**CONFIGS[name][1]).barge_in_min_speech
            sinks: list[TraceSink] = []
            if traces is not None:
                traces.mkdir(parents=True, exist_ok=True)
                sinks.append(TraceWriter(traces / f"{conversation['id']}.{name}.jsonl"))
            began = time.perf_counter()
            clock: Clock = RealClock() if realtime else VirtualClock()
            try:
                spans, origin = clock.run(
                    converse(pipes[name], audio, clock, conversation["id"], sinks))
            finally:
                for sink in sinks:
                    sink.close()
            wall[name] += time.perf_counter() - began
            outcomes[name] += score(conversation, shifted(spans, origin), min_speech)
            line.append(f"{name} {time.perf_counter() - began:.1f} s")
        SharedWhisper.results.clear()
        console.print(f"[dim]{conversation['id']} ({conversation['seconds']:.0f} s of audio): "
                      f"{', '.join(line)}[/dim]")
    return {"outcomes": outcomes, "wall_seconds": wall,
            "summary": {name: summarise(outcomes[name]) for name in names}}


def _rate(entry: dict[str, Any]) -> str:
    if not entry["n"]:
        return "-"
    return f"{100 * entry['rate']:.1f}% ({entry['hits']}/{entry['n']})"


def _spread(entry: dict[str, Any]) -> str:
    if not entry["n"]:
        return "-"
    return f"{entry['p50']:.3f} / {entry['p95']:.3f} s (n={entry['n']})"


def table(result: dict[str, Any], names: list[str], realtime: bool) -> Table:
    summary = result["summary"]
    min_speech = TurnOptions(**CONFIGS[names[0]][1]).barge_in_min_speech
    clock = ("RealClock (real pace: delays include ASR and Smart Turn compute)" if realtime
             else "VirtualClock (model compute takes zero time: delays exclude ASR and "
             "Smart Turn compute)")
    out = Table(title=f"Turn-taking benchmark - {clock}", title_justify="left")
    out.add_column("metric")
    out.add_column("goal")
    for name in names:
        out.add_column(f"{name}\n({CONFIGS[name][0]})", justify="right")
    rows: list[tuple[str, str, str, Any]] = [
        ("Takeover at mid-sentence pauses (agent audio before the caller finished)",
         "lower", "takeover", _rate),
        ("  turn ended inside the pause (reply started or cancelled)", "lower",
         "premature_end_paused", _rate),
        ("Turn ended inside an unpaused sentence (questions, interruptions)", "lower",
         "premature_end_complete", _rate),
        ("Backchannel false interruption (agent stopped, or answered it)", "lower",
         "backchannel_false_interruption", _rate),
        ("  agent audio stopped", "lower", "backchannel_cut", _rate),
        ("  a turn was ended on it", "lower", "backchannel_answered", _rate),
        ("Barge-in: agent stopped for a real interruption", "100%", "barge_in_stopped", _rate),
        ("Barge-in stop latency p50 / p95 (caller onset -> agent audio stops)",
         f"p95 <= {min_speech + 0.3:.2f} s", "barge_in_stop", _spread),
        (f"  minus barge_in_min_speech ({min_speech:.1f} s)", "p95 <= 0.300 s",
         "barge_in_beyond_min", _spread),
        ("Endpointing delay p50 / p95, every turn (end of speech -> end of turn)",
         "p50 <= 0.400 s (model)", "endpointing", _spread),
        ("  clean audio", "", "endpointing_clean", _spread),
        ("  10-20 dB SNR noise", "", "endpointing_noisy", _spread),
        ("  finished turn judged unfinished (waited incomplete_delay)", "lower",
         "judged_unfinished", _rate),
        ("Turn never ended (before the next labelled event)", "0", "endpoint_missed", _rate),
        ("Noise burst stopped the agent: voiced hum", "lower", "noise_cut_hum", _rate),
        ("Noise burst stopped the agent: cough", "lower", "noise_cut_cough", _rate),
        ("Noise burst answered as a turn", "0", "noise_answered", _rate),
        ("False-interruption resume rate (cut by noise or backchannel -> resumed)",
         "higher", "resume", _rate),
    ]
    for label, goal, key, render in rows:
        out.add_row(label, goal, *(render(summary[name][key]) for name in names))
    out.add_row("Not scored: agent silent at a labelled event / turn began over the agent",
                "0",
                *(f"{summary[n]['left_out']['agent_silent_at_event']} / "
                  f"{summary[n]['left_out']['turn_over_agent']}" for n in names))
    out.add_row("Wall time", "", *(f"{result['wall_seconds'][n]:.0f} s" for n in names))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="conversation folder")
    parser.add_argument("--count", type=int, default=40, help="conversations to generate")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--limit", type=int, default=None, help="run only the first N")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated, of: {', '.join(CONFIGS)}")
    parser.add_argument("--realtime", action="store_true",
                        help="RealClock at real pace (numbers include model compute)")
    parser.add_argument("--json", type=Path, help="write the summary and every outcome here")
    parser.add_argument("--traces", type=Path, help="write one JSON Lines trace per run here")
    args = parser.parse_args()
    logging.getLogger("faster_whisper").setLevel(logging.ERROR)
    console = Console(width=None if sys.stdout.isatty() else 150)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        sys.exit(f"--configs: unknown {unknown}; choose from {list(CONFIGS)}")
    began = time.perf_counter()
    manifest = load_or_generate(args.data, args.count, args.seed)
    generated = time.perf_counter() - began
    if args.limit is not None:
        manifest = {**manifest, "conversations": manifest["conversations"][: args.limit]}
    audio_seconds = sum(c["seconds"] for c in manifest["conversations"])
    console.print(f"{len(manifest['conversations'])} conversations, {audio_seconds / 60:.1f} min "
                  f"of caller audio, {tally(manifest)}")
    result = run(manifest, args.data, names, args.realtime, args.traces, console)
    total = time.perf_counter() - began
    console.print(table(result, names, args.realtime))
    shared = "" if args.realtime else "; later configurations reuse the first one's transcripts"
    console.print(f"runtime {total:.0f} s (data ready in {generated:.0f} s; "
                  f"{audio_seconds / 60:.1f} min of audio per configuration{shared})")
    if args.json:
        report = {
            "clock": "real" if args.realtime else "virtual",
            "note": "real: delays include ASR and Smart Turn compute" if args.realtime else
                    "virtual: model compute takes zero time; delays exclude ASR and Smart "
                    "Turn compute",
            "data": {"folder": str(args.data), "seed": manifest["seed"],
                     "conversations": len(manifest["conversations"]),
                     "audio_seconds": round(audio_seconds, 1), "events": tally(manifest)},
            "pipeline": {"vad": VAD, "asr": ASR, "agent": manifest["agent"]},
            "configs": {n: {"label": CONFIGS[n][0], "turn": CONFIGS[n][1]} for n in names},
            "runtime_seconds": round(total, 1),
            **result,
        }
        args.json.write_text(json.dumps(report, indent=1, default=str))
        console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
