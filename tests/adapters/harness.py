"""A harness for adapter tests: real speech, real models, a stage graph on a chosen clock.

Audio comes from Debian's ``pocketsphinx-testdata`` (LibriVox clips with their
transcripts, and ``goforward.raw``). ``build`` wires adapter stages into a
``Graph`` ending in a ``Collector``; ``drive`` runs it on a clock while a feed
streams caller audio at caller pace (free on the virtual clock), then drains it,
leaving what reached the collector and every span recorded.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf

from cascade.clock import Clock, VirtualClock
from cascade.conversation import Conversation
from cascade.frames import PCM, Frame, SpeechStarted, SpeechStopped, UserAudio
from cascade.graph import Graph
from cascade.stage import Stage, StageContext
from cascade.tracing import MemoryTrace, Tracer

RATE = 16000
CONVERSATION = "call"
TESTDATA = Path("/usr/share/pocketsphinx/test/data")
LIBRIVOX = TESTDATA / "librivox"
GOFORWARD = TESTDATA / "goforward.raw"

needs_testdata = pytest.mark.skipif(
    not (LIBRIVOX / "transcription").exists() or not GOFORWARD.exists(),
    reason="needs Debian's pocketsphinx-testdata (apt-get install pocketsphinx-testdata)",
)


def package_file(package: str, *parts: str) -> Path | None:
    """A file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    return path if path.exists() else None


# --- audio -------------------------------------------------------------------


def librivox(clip: str) -> PCM:
    """A LibriVox clip (``sense_and_sensibility_01_austen_64kb-0880``) as PCM16 at 16 kHz."""
    data, rate = sf.read(str(LIBRIVOX / f"{clip}.wav"), dtype="int16")
    assert rate == RATE, f"{clip}: expected {RATE} Hz, got {rate}"
    return np.asarray(data, np.int16)


def reference(clip: str) -> str:
    """The transcript of a LibriVox clip, from the ``transcription`` file."""
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        if line.rstrip().endswith(f"({clip})"):
            return line.replace("<s>", "").replace("</s>", "").rsplit("(", 1)[0].strip()
    raise KeyError(f"{clip} is not in {LIBRIVOX / 'transcription'}")


def goforward() -> PCM:
    """"go forward ten meters", PCM16 mono at 16 kHz."""
    return np.fromfile(GOFORWARD, dtype="<i2").astype(np.int16)


def silence(seconds: float) -> PCM:
    return np.zeros(int(RATE * seconds), np.int16)


def white_noise(seconds: float, dbfs: float, seed: int = 0) -> PCM:
    """Gaussian white noise whose RMS level is ``dbfs`` (re full scale)."""
    rng = np.random.default_rng(seed)
    rms = 10 ** (dbfs / 20) * 32768
    noise = rng.standard_normal(int(RATE * seconds)) * rms
    return noise.clip(-32768, 32767).astype(np.int16)


def padded(pcm: PCM, before: float = 1.0, after: float = 1.0) -> PCM:
    return np.concatenate([silence(before), pcm, silence(after)])


def speech_bounds(pcm: PCM, above_floor_db: float = 12.0, hold: float = 0.06
                  ) -> tuple[float, float]:
    """Where speech starts and ends (s) in a clip, from its energy alone.

    The level of 20 ms frames (10 ms hop) is compared with the clip's noise floor
    (its 10th percentile); speech is the first and last run of ``hold`` seconds
    spent ``above_floor_db`` over the floor, so a lone click does not count.
    """
    size, hop = int(RATE * 0.02), int(RATE * 0.01)
    samples = pcm.astype(np.float64)
    rms = np.array([
        np.sqrt(np.mean(samples[i : i + size] ** 2)) for i in range(0, len(pcm) - size + 1, hop)
    ])
    level = 20 * np.log10(np.maximum(rms, 1.0) / 32768)
    loud = level >= np.percentile(level, 10) + above_floor_db
    run = round(hold / 0.01)
    held = np.convolve(loud.astype(int), np.ones(run, int), mode="valid") == run
    starts = np.flatnonzero(held)
    assert len(starts), "no speech found in the clip"
    return float(starts[0] * hop / RATE), float(((starts[-1] + run - 1) * hop + size) / RATE)


# --- text ----------------------------------------------------------------------

_NUMBERS = {"10": "ten"}


def normalise(text: str) -> str:
    """Lower case, no punctuation, one space between words ("Ten." -> "ten")."""
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()
    return " ".join(_NUMBERS.get(w, w) for w in words)


def wer(truth: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalise(truth), normalise(hypothesis) or "<empty>"))


# --- graph -------------------------------------------------------------------


class Collector(Stage):
    """The end of a test graph: keeps every ordered frame it accepts, in order."""

    def __init__(self, *accepts: type[Frame]) -> None:
        self.accepts = accepts  # type: ignore[misc]
        self.frames: list[Frame] = []

    async def process(self, frame: Frame) -> None:
        self.frames.append(frame)

    def of(self, kind: type[Frame]) -> list[Frame]:
        return [f for f in self.frames if isinstance(f, kind)]


@dataclass
class Run:
    """A graph under test, its trace, and what reached its collector."""

    graph: Graph
    ctx: StageContext
    trace: MemoryTrace
    collector: Collector
    conversation: Conversation = field(init=False)

    def __post_init__(self) -> None:
        self.conversation = Conversation(self.graph, self.ctx)


def context(clock: Clock, trace: MemoryTrace) -> StageContext:
    tracer = Tracer(CONVERSATION, clock, [trace])
    return StageContext(CONVERSATION, clock, tracer, RATE, logging.getLogger("cascade.test"))


def build(
    clock: Clock, chain: Sequence[tuple[str, Stage]], collector: Collector
) -> Run:
    """A linear graph ``chain[0] -> chain[1] -> ... -> collect``."""
    stages = {**dict(chain), "collect": collector}
    names = list(stages)
    trace = MemoryTrace()
    ctx = context(clock, trace)
    graph = Graph(stages, itertools.pairwise(names), ctx)
    return Run(graph, ctx, trace, collector)


async def drive(run: Run, feed: Callable[[Run], Awaitable[object]], deadline: float = 600.0
                ) -> Run:
    """Start the graph, let ``feed`` send input, end the input, wait for the graph to drain.

    ``deadline`` is in clock seconds: a stuck graph fails instead of hanging.
    """

    async def whole() -> None:
        await feed(run)
        await run.conversation.end_input()
        await run.graph.wait_finished()

    await run.graph.start()
    try:
        await asyncio.wait_for(whole(), deadline)
    finally:
        await run.graph.stop()
    return run


def play(audio: PCM) -> Callable[[Run], Awaitable[object]]:
    """A feed that streams ``audio`` in 20 ms frames at caller pace (media time from 0)."""

    async def feed(run: Run) -> None:
        await stream_audio(run, audio)

    return feed


async def stream_audio(run: Run, audio: PCM) -> None:
    """Stream ``audio`` in 20 ms frames at caller pace, without ending the input."""
    conversation = run.conversation
    clock = run.ctx.clock
    size = int(RATE * 0.02)
    start = clock.now()
    for index, begin in enumerate(range(0, len(audio), size)):
        await clock.sleep_until(start + index * 0.02)
        chunk = audio[begin : begin + size]
        if len(chunk) < size:
            chunk = np.concatenate([chunk, np.zeros(size - len(chunk), np.int16)])
        await conversation.send_audio(chunk)


# --- VAD ---------------------------------------------------------------------

VAD_CLIP = "sense_and_sensibility_01_austen_64kb-0880"  # "he was not an ill disposed young man"
VAD_PAD = 1.0
VAD_TOLERANCE = 0.3
"""Seconds a detected onset or end may be from the energy boundary of the speech."""


def vad_speech() -> tuple[PCM, float, float]:
    """The VAD clip with ``VAD_PAD`` s of silence each side, and its true onset and end."""
    clip = librivox(VAD_CLIP)
    onset, end = speech_bounds(clip)
    return padded(clip, VAD_PAD, VAD_PAD), VAD_PAD + onset, VAD_PAD + end


def run_vad(vad: Stage, audio: PCM) -> Run:
    """Stream ``audio`` through a VAD stage on the virtual clock."""
    clock = VirtualClock()
    run = build(clock, [("vad", vad)], Collector(SpeechStarted, SpeechStopped, UserAudio))
    clock.run(drive(run, play(audio)))
    return run


def vad_events(run: Run) -> list[Frame]:
    return [f for f in run.collector.frames if not isinstance(f, UserAudio)]


def check_one_utterance(run: Run, audio: PCM, onset: float, end: float) -> None:
    """One start and one stop near the true boundaries, their span, the audio passed on."""
    events = vad_events(run)
    assert [type(f) for f in events] == [SpeechStarted, SpeechStopped], events
    started, stopped = events
    assert isinstance(stopped, SpeechStopped)
    assert abs(started.time - onset) <= VAD_TOLERANCE, (started.time, onset)
    assert abs(stopped.time - end) <= VAD_TOLERANCE, (stopped.time, end)
    assert stopped.started == started.time

    (span,) = run.trace.named("user_speech")
    assert (span.start, span.end) == (started.time, stopped.time)
    assert span.stage == "vad" and span.turn == 1
    assert abs(span.attrs["duration"] - (span.end - span.start)) <= 1e-3

    passed = [f.pcm for f in run.collector.frames if isinstance(f, UserAudio)]
    assert np.array_equal(np.concatenate(passed)[: len(audio)], audio)
