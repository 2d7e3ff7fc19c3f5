"""The microphone front end for real: sounddevice on PulseAudio's virtual room, real models.

The caller is Piper's voice played into the room; the microphone is the room's
monitor; the agent plays on the speaker sink, which the room hears back at
about -9 dB (a laptop's loudspeaker). Everything runs at real-time pace.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cascade import MemoryTrace, Pipeline, parse_pipeline
from cascade.audio import read_audio
from cascade.frames import AgentSpeechStarted, AgentSpeechStopped, EndOfTurn
from cascade.frontends.live_view import LiveView
from cascade.frontends.mic import MicrophoneCall
from cascade.frontends.sound import find_device
from cascade.recording import CallRecorder
from cascade.tracing import read_trace
from tests.conftest import RATE, needs_models, wer
from tests.frontends.conftest import (
    ARTIFACTS,
    ECHO_GAIN,
    CallWatcher,
    Room,
    needs_pulse,
    rms_dbfs,
    spoken,
)
from tests.test_end_to_end import local_pipeline

pytestmark = [needs_pulse]
QUESTION = "What is the capital of France?"
STORY = ("The forecast for tomorrow is mild and sunny, with a light breeze in the "
         "afternoon, a few clouds over the hills, and clear skies all evening.")


def storyteller() -> Pipeline:
    """Real VAD, ASR, turn taking and voice; the LLM is scripted to talk for ~8 s."""
    return Pipeline(parse_pipeline({"name": "storyteller", "stages": {
        "vad": {"adapter": "silero", "options": {"threshold": 0.5, "min_silence": 0.2}},
        "asr": {"adapter": "faster-whisper", "options": {"partial_interval": 1.0}},
        "turn": {"adapter": "turn"},
        "llm": {"adapter": "echo-llm", "options": {"template": "You asked: {text}. " + STORY}},
        "tts": {"adapter": "piper"},
    }}))


class Session:
    """A ``MicrophoneCall`` running in the test's loop on the default (virtual) devices."""

    def __init__(self, pipeline: Pipeline, cancel_echo: bool = True) -> None:
        pipeline.preload()
        self.trace = MemoryTrace()
        self.recorder = CallRecorder(RATE)
        self.view = LiveView("test")
        self.watch = CallWatcher()
        self.call = MicrophoneCall(pipeline, find_device(None, "input"),
                                   find_device(None, "output"), view=self.view,
                                   recorder=self.recorder, traces=[self.trace],
                                   cancel_echo=cancel_echo)
        self.call.conversation.graph.observers.append(self.watch)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Session:
        self._task = asyncio.create_task(self.call.run(self._stop))
        deadline = asyncio.get_running_loop().time() + 10
        while self.call.frames_in < 10:  # the microphone delivers before the caller speaks
            assert not self._task.done(), self._task.exception()
            assert asyncio.get_running_loop().time() < deadline, "the microphone is silent"
            await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, 10)

    def named(self, name: str) -> list[str]:
        return [str(s.attrs.get("reason", "")) for s in self.trace.spans if s.name == name]


@needs_models
async def test_a_spoken_question_is_heard_and_answered_through_the_sound_card(
        room: Room, tmp_path: Path) -> None:
    out = tmp_path / "speaker.wav"
    recorder = room.record("speaker.monitor", out)
    try:
        async with Session(local_pipeline(max_tokens=24)) as s:
            room.say(spoken(QUESTION))
            turn = await s.watch.until(EndOfTurn, timeout=60)
            stopped = await s.watch.until(AgentSpeechStopped, timeout=90)
    finally:
        recorder.terminate()
        recorder.wait(5)
    assert isinstance(turn, EndOfTurn) and isinstance(stopped, AgentSpeechStopped)
    assert wer(QUESTION, turn.text) <= 0.2, turn.text
    assert not stopped.interrupted and stopped.spoken_text
    assert s.call.dropped == 0
    # The reply really went out of the output device: the speaker sink carried it.
    assert s.call.speaker.played_samples > 0.5 * s.call.speaker.device_rate
    played = read_audio(out, RATE, allow_silent=True)
    assert rms_dbfs(played) > -45 and np.abs(played).max() > 3000
    assert [line.who for line in s.view.lines] == ["you", "agent"]
    ARTIFACTS.mkdir(exist_ok=True)
    s.recorder.write(ARTIFACTS / "mic-call.wav")


@needs_models
@pytest.mark.parametrize("cancel", [True, False], ids=["canceller", "no-canceller"])
async def test_the_agents_own_echo_interrupts_it_only_without_the_canceller(
        room: Room, cancel: bool) -> None:
    room.echo(ECHO_GAIN)
    async with Session(storyteller(), cancel_echo=cancel) as s:
        room.say(spoken("Will it rain tomorrow?"))
        started = await s.watch.until(AgentSpeechStarted, timeout=60)
        stopped = await s.watch.until(AgentSpeechStopped, timeout=40)
    assert isinstance(started, AgentSpeechStarted) and isinstance(stopped, AgentSpeechStopped)
    # The microphone really heard the agent while it spoke (the room's echo).
    both = s.recorder.render()
    begin = int(np.argmax(both[:, 1] != 0)) + RATE // 5  # the echo of the first words
    assert rms_dbfs(both[begin : begin + RATE // 2, 0]) > -40
    if cancel:
        assert not stopped.interrupted, f"cut after: {stopped.spoken_text!r}"
        assert s.named("interruption") == []
        assert s.call.canceller is not None and s.call.canceller.delay is not None
    else:
        assert stopped.interrupted or s.named("interruption"), "expected a self-interruption"


@needs_models
async def test_the_caller_barges_in_over_the_echo(room: Room) -> None:
    room.echo(ECHO_GAIN)
    async with Session(storyteller()) as s:
        room.say(spoken("Will it rain tomorrow?"))
        started = await s.watch.until(AgentSpeechStarted, timeout=60)
        await asyncio.sleep(1.5)
        said_at = s.call.clock.now()
        room.say(spoken("Tell me about Sunday instead please.", pad=0.0))
        stopped = await s.watch.until(AgentSpeechStopped, timeout=20)
        await s.watch.until(EndOfTurn, count=2, timeout=45)
        heard = " ".join(t.text for t in s.watch.turns[1:])
    said = "Tell me about Sunday instead please."
    assert isinstance(started, AgentSpeechStarted) and isinstance(stopped, AgentSpeechStopped)
    assert stopped.interrupted
    cuts = [(c.start - said_at, c.end - said_at, c.attrs.get("reason"))
            for c in s.trace.spans if c.name == "interruption"]
    assert stopped.time - said_at < 3.0, cuts  # cut by the barge-in, long before the end
    assert wer(said, heard) <= 0.5, heard  # and the caller's words got through


def run_microphone_in_a_child(room: Room, record: Path, trace: Path,
                              headphones: bool = False) -> subprocess.Popen[str]:
    """``run_microphone`` with the scripted pipeline, as ``cascade run --mic`` would call it."""
    driver = (
        "import sys\n"
        "from rich.console import Console\n"
        "from cascade.frontends.mic import run_microphone\n"
        "from cascade.run_command import find_pipeline\n"
        "turns = run_microphone(find_pipeline('scripted'), record=sys.argv[1], "
        "trace=sys.argv[2], headphones=sys.argv[3] == 'yes', console=Console(width=140))\n"
        "print('answered', turns)\n")
    return subprocess.Popen(
        [sys.executable, "-c", driver, str(record), str(trace), "yes" if headphones else "no"],
        env=room.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_run_microphone_stops_cleanly_on_a_signal_and_writes_trace_and_recording(
        room: Room, tmp_path: Path) -> None:
    trace, record = tmp_path / "call.jsonl", tmp_path / "call.wav"
    process = run_microphone_in_a_child(room, record, trace)
    try:
        wait_until_listening(room, process)
        room.say(spoken("Hello there.")).wait(10)
        time.sleep(4.0)  # the scripted agent answers in tones within ~3 s
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "answered" in stdout and "answered 0" not in stdout, stdout
    assert "Voice" in stdout  # the closing per-turn latency table
    names = {s.name for s in read_trace(trace)}
    assert {"user_speech", "end_of_turn", "agent_speech"} <= names
    both = read_audio(record, RATE)  # the stereo file mixed down: both sides are in it
    assert len(both) > 3 * RATE


def test_sigterm_before_anyone_speaks_still_writes_the_files(
        room: Room, tmp_path: Path) -> None:
    trace, record = tmp_path / "t.jsonl", tmp_path / "r.wav"
    process = run_microphone_in_a_child(room, record, trace, headphones=True)
    try:
        wait_until_listening(room, process)
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert trace.exists() and record.exists()


def wait_until_listening(room: Room, process: subprocess.Popen[str]) -> None:
    """Until the program records from the room (its microphone stream is open)."""
    deadline = time.monotonic() + 30
    while not room.pactl("list", "short", "source-outputs").strip():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the microphone never opened"
        time.sleep(0.1)
