"""A virtual room for the microphone front end: PulseAudio in user mode, no sound card.

``room`` is a null sink whose monitor is the microphone (the default source);
the caller's voice is played into it with ``paplay``. ``speaker`` (the default
sink, where the agent plays) is a remap sink onto the room at a realistic echo
level (volume 0.35, about -9 dB), so the microphone hears the agent too, as
from a laptop's loudspeaker. Everything runs at 44.1 kHz, PortAudio's rate for
the ``pulse`` device, so PulseAudio itself resamples nothing.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from cascade.audio import write_audio
from cascade.frames import PCM, AgentSpeechStarted, AgentSpeechStopped, EndOfTurn, Frame
from tests.conftest import RATE, piper_says, silence

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ECHO_GAIN = 0.35
"""Loudspeaker-to-microphone gain of the virtual room (about -9 dB)."""

needs_pulse = pytest.mark.skipif(
    not (shutil.which("pulseaudio") and shutil.which("pactl") and shutil.which("paplay")),
    reason="needs PulseAudio (apt install pulseaudio pulseaudio-utils libasound2-plugins "
           "libportaudio2)")


@dataclass
class Room:
    """The running PulseAudio server and ways to make sound in it."""

    folder: Path
    env: dict[str, str]
    players: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def pactl(self, *args: str) -> str:
        return subprocess.run(["pactl", *args], env=self.env, check=True,
                              capture_output=True, text=True, timeout=10).stdout

    def say(self, wav: Path) -> subprocess.Popen[bytes]:
        """Play a recording into the room (the caller speaking), without waiting."""
        player = subprocess.Popen(["paplay", "--device=room", str(wav)], env=self.env)
        self.players.append(player)
        return player

    def echo(self, gain: float) -> None:
        """Set how loud the speaker is heard in the room (0: headphones)."""
        self.pactl("set-sink-volume", "speaker", f"{gain:.3f}")

    def record(self, source: str, path: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["parecord", f"--device={source}", "--channels=1",
                                 f"--rate={RATE}", "--file-format=wav", str(path)],
                                env=self.env)


def _wait_for(check: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def room() -> Iterator[Room]:
    """PulseAudio with the virtual room; sounddevice sees it as 'pulse'/'default'."""
    if not shutil.which("pulseaudio"):
        pytest.skip("needs PulseAudio (apt install pulseaudio pulseaudio-utils "
                    "libasound2-plugins)")
    folder = Path(tempfile.mkdtemp(prefix="cascade-pulse-"))
    sock = folder / "native"
    conf = folder / "default.pa"
    conf.write_text(
        f"load-module module-native-protocol-unix socket={sock} auth-anonymous=1\n"
        "load-module module-null-sink sink_name=room rate=44100 channels=1\n"
        "load-module module-remap-sink sink_name=speaker master=room channels=1 remix=no\n"
        "set-default-sink speaker\n"
        "set-default-source room.monitor\n")
    env = {**os.environ, "XDG_RUNTIME_DIR": str(folder), "HOME": str(folder),
           "PULSE_SERVER": f"unix:{sock}"}
    daemon = subprocess.Popen(
        ["pulseaudio", "-n", "-F", str(conf), "--daemonize=no", "--exit-idle-time=-1",
         "--log-target=stderr"], env=env, stdout=subprocess.DEVNULL,
        stderr=(folder / "pulseaudio.log").open("wb"))
    saved = os.environ.get("PULSE_SERVER")
    try:
        _wait_for(sock.exists, "the PulseAudio socket")
        state = Room(folder, env)
        state.echo(ECHO_GAIN)
        # An idle null sink's monitor starts delivering only seconds after a recorder
        # opens it; a stream of silence keeps the room running, as a real microphone is.
        state.players.append(subprocess.Popen(
            ["pacat", "--playback", "--raw", "--format=s16le", "--rate=44100", "--channels=1",
             "--device=room", "/dev/zero"], env=env))
        os.environ["PULSE_SERVER"] = env["PULSE_SERVER"]
        if "sounddevice" in sys.modules:  # PortAudio listed the devices without the room
            sounddevice = sys.modules["sounddevice"]
            sounddevice._terminate()
            sounddevice._initialize()
        yield state
    finally:
        for player in state.players if "state" in locals() else []:
            player.kill()
        if saved is None:
            os.environ.pop("PULSE_SERVER", None)
        else:
            os.environ["PULSE_SERVER"] = saved
        daemon.terminate()
        daemon.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


VOICES = Path(tempfile.gettempdir()) / "cascade-test-voices"


@functools.cache
def spoken(text: str, pad: float = 0.3) -> Path:
    """``text`` spoken by the bundled Piper voice, as a 16 kHz WAV file (kept between runs)."""
    name = hashlib.sha1(f"{text}|{pad}".encode()).hexdigest()[:16]
    path = VOICES / f"{name}.wav"
    if not path.exists():
        VOICES.mkdir(exist_ok=True)
        partial = path.with_suffix(".part.wav")
        write_audio(partial, np.concatenate([silence(pad), piper_says(text), silence(pad)]),
                    RATE)
        partial.replace(path)
    return path


class CallWatcher:
    """A graph observer that lets a test wait for what the pipeline does."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self._changed = asyncio.Event()

    def __call__(self, stage: str, frame: Frame) -> None:
        self.frames.append(frame)
        self._changed.set()

    def of(self, kind: type[Frame]) -> list[Frame]:
        return [f for f in self.frames if isinstance(f, kind)]

    async def until(self, kind: type[Frame], count: int = 1, timeout: float = 60.0) -> Frame:
        """The ``count``-th frame of ``kind``, waiting for it up to ``timeout`` seconds."""
        async def arrived() -> Frame:
            while len(self.of(kind)) < count:
                self._changed.clear()
                await self._changed.wait()
            return self.of(kind)[count - 1]
        return await asyncio.wait_for(arrived(), timeout)

    @property
    def started(self) -> list[AgentSpeechStarted]:
        return [f for f in self.frames if isinstance(f, AgentSpeechStarted)]

    @property
    def stopped(self) -> list[AgentSpeechStopped]:
        return [f for f in self.frames if isinstance(f, AgentSpeechStopped)]

    @property
    def turns(self) -> list[EndOfTurn]:
        return [f for f in self.frames if isinstance(f, EndOfTurn)]


def rms_dbfs(pcm: PCM) -> float:
    if not len(pcm):
        return float("-inf")
    power = float(np.mean(pcm.astype(np.float64) ** 2))
    return 10 * np.log10(power / 32768.0**2) if power > 0 else float("-inf")
