"""This machine's sound devices through sounddevice (PortAudio): find them, capture, play.

``find_device`` turns what the user typed (nothing, an index, part of a name)
into a ``Device`` and says which devices exist when it cannot. ``Microphone``
captures at the device's native rate and hands 20 ms frames at the pipeline
rate to the event loop. ``Speaker`` is an ``AudioSink``: agent audio waits in
a small buffer until the pipeline clock says it is due, is resampled to the
device's rate, and ``clear`` empties the buffer at once (barge-in).

sounddevice is the ``[mic]`` extra; it is imported only here, on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import soxr

from cascade.audio import FRAME_SECONDS, FrameCutter
from cascade.clock import Clock
from cascade.errors import CascadeError, MissingDependency
from cascade.frames import PCM, AgentAudio

Kind = Literal["input", "output"]
FALLBACK_RATES = (48000, 44100, 32000, 22050, 16000)


class AudioDeviceError(CascadeError):
    """A sound device is missing, busy, or cannot run as asked; the message lists devices."""


def sounddevice() -> Any:
    """The sounddevice module (``[mic]`` extra), with PortAudio loaded."""
    try:
        return importlib.import_module("sounddevice")
    except ModuleNotFoundError as exc:
        raise MissingDependency("the microphone front end", exc.name or "sounddevice",
                                "mic") from None
    except OSError as exc:  # sounddevice is there but the PortAudio library is not
        raise AudioDeviceError(f"PortAudio cannot be loaded ({exc}): install it "
                               "(Debian/Ubuntu: apt install libportaudio2)") from None


@dataclass(frozen=True, slots=True)
class Device:
    """One PortAudio device as the user sees it."""

    index: int
    name: str
    host_api: str
    inputs: int
    outputs: int
    rate: int
    """The device's native (default) sample rate."""
    default_input: bool = False
    default_output: bool = False

    def channels(self, kind: Kind) -> int:
        return self.inputs if kind == "input" else self.outputs

    def describe(self) -> str:
        return (f"{self.index} '{self.name}' ({self.host_api}: {self.inputs} in, "
                f"{self.outputs} out, {self.rate} Hz)")


def all_devices(sd: Any | None = None) -> list[Device]:
    """Every device PortAudio sees, marked with the default input and output."""
    sd = sd or sounddevice()
    apis = [str(api["name"]) for api in sd.query_hostapis()]
    default_in, default_out = (int(i) for i in sd.default.device)
    found = []
    for info in sd.query_devices():
        index = int(info["index"])
        found.append(Device(
            index=index, name=str(info["name"]), host_api=apis[int(info["hostapi"])],
            inputs=int(info["max_input_channels"]), outputs=int(info["max_output_channels"]),
            rate=int(info["default_samplerate"]), default_input=index == default_in,
            default_output=index == default_out))
    return found


def device_list(devices: list[Device], kind: Kind | None = None) -> str:
    """The devices (of one kind) on one line each, for error messages."""
    shown = [d for d in devices if kind is None or d.channels(kind) > 0]
    if not shown:
        return f"PortAudio sees no {kind or 'sound'} device at all"
    return "devices that exist:\n" + "\n".join(f"  {d.describe()}" for d in shown)


def find_device(spec: str | int | None, kind: Kind, sd: Any | None = None) -> Device:
    """The device named by ``spec``: None (the default), an index, or part of a name."""
    devices = all_devices(sd)
    usable = [d for d in devices if d.channels(kind) > 0]
    what = "microphone" if kind == "input" else "speaker"
    option = f"--{kind}-device"
    if not usable:
        raise AudioDeviceError(f"no {what} found: {device_list(devices)}")
    if spec is None or spec == "":
        chosen = [d for d in usable if (d.default_input if kind == "input" else d.default_output)]
        if chosen:
            return chosen[0]
        raise AudioDeviceError(f"there is no default {what}; choose one with {option} "
                               f"INDEX or NAME; {device_list(devices, kind)}")
    if isinstance(spec, int) or spec.strip().isdigit():
        index = int(spec)
        match = [d for d in devices if d.index == index]
        if not match:
            raise AudioDeviceError(f"{option} {index}: no such device; "
                                   f"{device_list(devices, kind)}")
        if match[0].channels(kind) == 0:
            raise AudioDeviceError(f"{option} {index}: '{match[0].name}' has no "
                                   f"{kind} channels; {device_list(devices, kind)}")
        return match[0]
    needle = spec.lower()
    exact = [d for d in usable if d.name.lower() == needle]
    match = exact or [d for d in usable if needle in d.name.lower()]
    if len(match) == 1:
        return match[0]
    if not match:
        raise AudioDeviceError(f"{option} '{spec}': no {what} has that in its name; "
                               f"{device_list(devices, kind)}")
    names = ", ".join(f"{d.index} '{d.name}'" for d in match)
    raise AudioDeviceError(f"{option} '{spec}' matches {len(match)} devices ({names}): "
                           "give its index or more of its name")


def pick_rate(device: Device, kind: Kind, channels: int, sd: Any) -> int:
    """The device's native rate, or the first common rate it accepts."""
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    tried = []
    for rate in dict.fromkeys((device.rate, *FALLBACK_RATES)):
        try:
            check(device=device.index, samplerate=rate, channels=channels, dtype="int16")
        except Exception as exc:  # PortAudioError or ValueError, both mean "not this way"
            tried.append(f"{rate} Hz ({exc})")
            continue
        return rate
    raise AudioDeviceError(f"{device.describe()} accepts none of the rates tried for "
                           f"{kind}: {'; '.join(tried)}; choose another device")


def open_error(device: Device, kind: Kind, rate: int, exc: Exception, sd: Any) -> AudioDeviceError:
    """Why a stream did not open, in words, with the devices that exist."""
    text = str(exc)
    if "unavailable" in text.lower() or "busy" in text.lower():
        hint = "the device is busy (another program holds it) or was unplugged"
    elif "sample rate" in text.lower():
        hint = f"it does not run at {rate} Hz"
    else:
        hint = "PortAudio refused it"
    return AudioDeviceError(f"cannot open {kind} device {device.describe()}: {hint} ({text}); "
                            f"{device_list(all_devices(sd), kind)}")


def _channels(device: Device, kind: Kind, sd: Any) -> int:
    """Mono when the device takes it, else its first two channels (e.g. a stereo-only card)."""
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    try:
        check(device=device.index, channels=1, dtype="int16", samplerate=device.rate)
    except Exception:
        return min(2, device.channels(kind))
    return 1


def start_stream(sd: Any, device: Device, kind: Kind, channels: int, rate: int,
                 callback: Callable[..., None]) -> Any:
    """A running PortAudio stream of 20 ms PCM16 blocks, or an error naming the devices.

    Input asks for low latency (frames reach the VAD promptly); output for PortAudio's
    "high" latency, which rides out a busy machine without gaps."""
    opener = sd.InputStream if kind == "input" else sd.OutputStream
    try:
        stream = opener(device=device.index, samplerate=rate, channels=channels,
                        dtype="int16", blocksize=round(rate * FRAME_SECONDS),
                        latency="low" if kind == "input" else "high", callback=callback)
        stream.start()
    except Exception as exc:
        raise open_error(device, kind, rate, exc, sd) from None
    return stream


class Microphone:
    """Captures one device and delivers 20 ms PCM16 frames at ``rate`` on the event loop."""

    def __init__(self, device: Device, rate: int, deliver: Callable[[PCM], None]) -> None:
        self.device = device
        self.rate = rate
        self.deliver = deliver
        self.device_rate = device.rate
        self.overflows = 0
        self._stream: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resampler: Any = None
        self._frames = FrameCutter(rate)

    def start(self) -> None:
        """Open and start the input stream (on the running event loop's thread)."""
        sd = sounddevice()
        self._loop = asyncio.get_running_loop()
        channels = _channels(self.device, "input", sd)
        self.device_rate = pick_rate(self.device, "input", channels, sd)
        self._resampler = soxr.ResampleStream(self.device_rate, self.rate, 1, dtype="int16")
        self._stream = start_stream(sd, self.device, "input", channels, self.device_rate,
                                    self._captured)

    def _captured(self, data: Any, frames: int, time: Any, status: Any) -> None:
        """PortAudio's thread: copy the block and hand it to the event loop."""
        if status.input_overflow:
            self.overflows += 1
        block = data.mean(axis=1).astype(np.int16) if data.shape[1] > 1 else data[:, 0].copy()
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed while we stopped
                loop.call_soon_threadsafe(self._arrived, block)

    def _arrived(self, block: PCM) -> None:
        for frame in self._frames.cut(self._resampler.resample_chunk(block)):
            self.deliver(frame)

    def stop(self) -> None:
        self._loop = None
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.abort()
            stream.close()


class Speaker:
    """An ``AudioSink`` that plays agent audio on an output device, on the pipeline's schedule.

    Each chunk is played when the pipeline clock says (``at``, plus ``delay``),
    not merely after the one before: PortAudio tells each callback when its
    block will reach the DAC, so a glitch (an underrun on a busy machine) loses
    a few milliseconds instead of shifting everything after it. That keeps the
    echo path constant, which the echo canceller relies on.
    """

    def __init__(self, device: Device, clock: Clock, delay: float = 0.05) -> None:
        self.device = device
        self.clock = clock
        self.delay = delay
        self.device_rate = device.rate
        self.played_samples = 0
        self.late_samples = 0
        self._stream: Any = None
        self._lock = threading.Lock()
        self._chunks: deque[tuple[int, PCM]] = deque()  # (first sample index, samples)
        self._resampler: Any = None
        self._active = False  # a reply (or stretch of one) is being scheduled
        self._base = 0  # device sample index where the current reply (or stretch) begins
        self._fed = 0  # pipeline-rate samples given to the resampler since then
        self._made = 0  # device-rate samples it gave back
        self._next_block: int | None = None

    def start(self) -> None:
        sd = sounddevice()
        channels = _channels(self.device, "output", sd)
        self.device_rate = pick_rate(self.device, "output", channels, sd)
        self._stream = start_stream(sd, self.device, "output", channels, self.device_rate,
                                    self._fill)

    def play(self, frame: AgentAudio, at: float) -> None:
        rate = self.device_rate
        due = round((at + self.delay) * rate)
        expected = None if not self._active else (
            self._base + self._fed * rate // frame.sample_rate)
        if expected is None or abs(due - expected) > rate // 50:
            # A new reply, or a gap in this one: start again on the pipeline's schedule.
            self._resampler = (None if frame.sample_rate == rate else
                               soxr.ResampleStream(frame.sample_rate, rate, 1, dtype="int16"))
            self._base, self._fed, self._made, self._active = due, 0, 0, True
        pcm: PCM = frame.pcm if self._resampler is None else self._resampler.resample_chunk(
            frame.pcm, last=frame.reply_end)
        self._fed += len(frame.pcm)
        if len(pcm):  # soxr keeps the timing: output sample k belongs at base + k
            with self._lock:
                self._chunks.append((self._base + self._made, pcm))
            self._made += len(pcm)
        if frame.reply_end:
            self._active = False

    def clear(self, at: float) -> None:
        """Barge-in: drop everything not yet handed to the device."""
        with self._lock:
            self._chunks.clear()
        self._active = False

    def _fill(self, out: Any, frames: int, time: Any, status: Any) -> None:
        """PortAudio's thread: the samples scheduled for this block's DAC time."""
        now = self.clock.now()  # read together with time.currentTime: same instant
        dac = time.outputBufferDacTime or time.currentTime
        first = round((dac - time.currentTime + now) * self.device_rate)
        expected = self._next_block
        if expected is not None and abs(first - expected) < self.device_rate // 100:
            first = expected  # the usual case: blocks follow each other exactly
        self._next_block = first + frames
        mono = np.zeros(frames, np.int16)
        with self._lock:
            chunks = self._chunks
            played_until = expected if expected is not None else first
            while chunks and chunks[0][0] + len(chunks[0][1]) <= first:
                start, pcm = chunks.popleft()  # its time has passed
                self.late_samples += max(0, start + len(pcm) - max(start, played_until))
            for start, pcm in chunks:
                if start >= first + frames:
                    break
                lo, hi = max(start, first), min(start + len(pcm), first + frames)
                mono[lo - first : hi - first] = pcm[lo - start : hi - start]
                self.played_samples += hi - lo
        out[:] = mono[:, None]

    def stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.abort()
            stream.close()
