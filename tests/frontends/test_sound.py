"""Devices: finding them, and the errors that name the ones that exist (a stand-in PortAudio),
then capture and playback through PortAudio for real on the virtual room."""

from __future__ import annotations

import asyncio
import types
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from cascade.clock import RealClock
from cascade.frames import AgentAudio
from cascade.frontends import sound
from cascade.frontends.mic import list_devices
from cascade.frontends.sound import AudioDeviceError, Microphone, Speaker, find_device
from tests.conftest import RATE
from tests.frontends.conftest import Room, needs_pulse


class PortAudioError(Exception):
    pass


def fake_portaudio(devices: list[dict[str, Any]], default: tuple[int, int] = (0, 1),
                   rates: tuple[int, ...] = (48000, 44100, 16000),
                   busy: bool = False) -> types.SimpleNamespace:
    def check(device: int, samplerate: int, channels: int, dtype: str) -> None:
        if samplerate not in rates:
            raise PortAudioError(f"Invalid sample rate [PaErrorCode -9997]: {samplerate}")

    class Stream:
        def __init__(self, **kwargs: Any) -> None:
            if busy:
                raise PortAudioError("Error opening InputStream: Device unavailable "
                                     "[PaErrorCode -9985]")

    return types.SimpleNamespace(
        query_hostapis=lambda: [{"name": "ALSA"}],
        query_devices=lambda: [{"index": i, "hostapi": 0, **d} for i, d in enumerate(devices)],
        default=types.SimpleNamespace(device=list(default)),
        check_input_settings=check, check_output_settings=check,
        InputStream=Stream, OutputStream=Stream, PortAudioError=PortAudioError)


LAPTOP = [
    {"name": "Built-in Microphone", "max_input_channels": 2, "max_output_channels": 0,
     "default_samplerate": 48000.0},
    {"name": "Built-in Speakers", "max_input_channels": 0, "max_output_channels": 2,
     "default_samplerate": 48000.0},
    {"name": "USB Headset", "max_input_channels": 1, "max_output_channels": 2,
     "default_samplerate": 44100.0},
]


@pytest.fixture
def laptop(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    fake = fake_portaudio(LAPTOP)
    monkeypatch.setattr(sound, "sounddevice", lambda: fake)
    return fake


def test_defaults_indices_and_names_find_devices(laptop: types.SimpleNamespace) -> None:
    assert find_device(None, "input").name == "Built-in Microphone"
    assert find_device(None, "output").name == "Built-in Speakers"
    assert find_device("2", "input").name == "USB Headset"
    assert find_device("headset", "output").index == 2
    assert find_device("built-in speakers", "output").index == 1


@pytest.mark.parametrize(("spec", "kind", "says"), [
    ("webcam", "input", "no microphone has that in its name"),
    ("7", "input", "no such device"),
    ("1", "input", "has no input channels"),
    ("built-in", "input", None),  # matches only the microphone among inputs
    ("s", "output", "matches 2 devices"),
])
def test_wrong_choices_say_which_devices_exist(laptop: types.SimpleNamespace, spec: str,
                                                kind: sound.Kind, says: str | None) -> None:
    if says is None:
        assert find_device(spec, kind).index == 0
        return
    with pytest.raises(AudioDeviceError, match=says) as caught:
        find_device(spec, kind)
    if "matches" not in says:
        assert "USB Headset" in str(caught.value) and "devices that exist" in str(caught.value)


def test_no_microphone_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_portaudio([LAPTOP[1]], default=(-1, 0))
    monkeypatch.setattr(sound, "sounddevice", lambda: fake)
    with pytest.raises(AudioDeviceError, match="no microphone found") as caught:
        find_device(None, "input")
    assert "Built-in Speakers" in str(caught.value)


def test_an_unsupported_rate_falls_back_or_says_what_was_tried(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_portaudio(LAPTOP, rates=(16000,))
    monkeypatch.setattr(sound, "sounddevice", lambda: fake)
    mic = find_device(None, "input")
    assert sound.pick_rate(mic, "input", 1, fake) == 16000
    fake = fake_portaudio(LAPTOP, rates=())
    with pytest.raises(AudioDeviceError, match="accepts none of the rates") as caught:
        sound.pick_rate(mic, "input", 1, fake)
    assert "48000 Hz" in str(caught.value) and "choose another device" in str(caught.value)


async def test_a_busy_microphone_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_portaudio(LAPTOP, busy=True)
    monkeypatch.setattr(sound, "sounddevice", lambda: fake)
    microphone = Microphone(find_device(None, "input"), RATE, lambda pcm: None)
    with pytest.raises(AudioDeviceError, match="busy") as caught:
        microphone.start()
    assert "Built-in Microphone" in str(caught.value) and "USB Headset" in str(caught.value)


def test_list_devices_is_a_table(laptop: types.SimpleNamespace) -> None:
    console = Console(record=True, width=120)
    console.print(list_devices())
    text = console.export_text()
    assert "Built-in Microphone" in text and "USB Headset" in text and "44100 Hz" in text
    assert "input" in text and "output" in text


def test_the_speaker_plays_on_schedule_and_clear_drops_the_rest() -> None:
    now = [0.0]
    clock = types.SimpleNamespace(now=lambda: now[0])
    device = sound.Device(0, "test", "ALSA", 0, 1, 16000)
    speaker = Speaker(device, clock, delay=0.0)  # type: ignore[arg-type]
    tone = (np.ones(320) * 1000).astype(np.int16)
    for index in range(10):  # 0.2 s of audio due from pipeline time 1.0
        speaker.play(AgentAudio(conversation="c", turn=1, time=0.0, pcm=tone,
                                sample_rate=RATE, text="hi"), 1.0 + index * 0.02)
    out = np.zeros((320, 1), np.int16)
    times = types.SimpleNamespace(currentTime=5.0, outputBufferDacTime=5.0)

    def block_at(when: float) -> np.ndarray:
        now[0] = when
        speaker._fill(out, 320, times, None)
        return out[:, 0].copy()

    early = block_at(0.99)  # half before the reply is due, half of it
    assert (early[:160] == 0).all() and (early[160:] == 1000).all()
    assert (block_at(1.01) == 1000).all()
    speaker.clear(1.03)  # barge-in: what was not handed over yet is gone
    assert (block_at(1.03) == 0).all()
    assert speaker.played_samples == 480


@needs_pulse
async def test_capture_and_playback_through_portaudio_for_real(room: Room) -> None:
    """A tone played by ``Speaker`` comes back through ``Microphone`` (speaker -> room)."""
    frames: list[np.ndarray] = []
    clock = RealClock()
    microphone = Microphone(find_device(None, "input"), RATE, frames.append)
    speaker = Speaker(find_device(None, "output"), clock)
    room.echo(1.0)
    try:
        microphone.start()
        speaker.start()
        for _ in range(200):  # PortAudio's first capture callback can take a second here
            if frames:
                break
            await asyncio.sleep(0.05)
        frames.clear()
        t = np.arange(RATE) / RATE
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        at = clock.now() + 0.1
        for index in range(0, RATE, 320):
            speaker.play(AgentAudio(conversation="c", turn=1, time=at, pcm=tone[index:index + 320],
                                    sample_rate=RATE, text="la", reply_end=index + 320 >= RATE),
                         at + index / RATE)
        await asyncio.sleep(1.6)
    finally:
        microphone.stop()
        speaker.stop()
        room.echo(0.35)
    heard = np.concatenate(frames)
    assert all(len(f) == 320 for f in frames)
    assert 1.2 * RATE < len(heard) < 2.0 * RATE  # 20 ms frames at the pipeline rate
    spectrum = np.abs(np.fft.rfft(heard.astype(np.float64)))
    assert abs(np.argmax(spectrum) * RATE / len(heard) - 440) < 5
    assert np.abs(heard).max() > 4000  # the whole tone came back at its level
    assert microphone.device_rate == 44100
