"""The front end's echo canceller on real speech with a synthetic room (no sound card)."""

from __future__ import annotations

import numpy as np
import pytest

from cascade.frames import PCM
from cascade.frontends.echo_canceller import EchoCanceller
from cascade.playback import PlaybackHistory
from tests.conftest import RATE, librivox

FRAME = 320
DELAY = 0.0853  # a fractional number of samples, as a sound card's resamplers leave it


@pytest.fixture(scope="module")
def voices() -> tuple[PCM, PCM]:
    agent = librivox("sense_and_sensibility_01_austen_64kb-0870")
    caller = librivox("sense_and_sensibility_01_austen_64kb-0880")
    n = min(len(agent), len(caller), 6 * RATE)
    return agent[:n], caller[:n]


def room(agent: PCM, gain: float = 0.35) -> np.ndarray:
    """The agent as the microphone hears it: delayed by a fraction of a sample, -9 dB."""
    taps = np.arange(int(0.2 * RATE))
    response = np.sinc(taps - DELAY * RATE) * np.hanning(len(taps) * 2)[len(taps):] * gain
    return np.convolve(agent.astype(np.float64), response)[: len(agent)]


def run(agent: PCM, mic: np.ndarray) -> tuple[np.ndarray, EchoCanceller]:
    playback = PlaybackHistory(RATE, 4.0)
    canceller = EchoCanceller(playback, FRAME)
    out = []
    for start in range(0, len(mic) - FRAME + 1, FRAME):
        at = 10.0 + start / RATE
        playback.write(agent[start : start + FRAME], at)  # what playout played, when
        frame = np.clip(mic[start : start + FRAME], -32768, 32767).astype(np.int16)
        out.append(canceller.process(frame, at))
    return np.concatenate(out).astype(np.float64), canceller


def level(x: np.ndarray) -> float:
    return 10 * np.log10(float(np.mean(x**2)) + 1e-9)


def test_echo_alone_is_removed_deeply(voices: tuple[PCM, PCM]) -> None:
    agent, _ = voices
    echo = room(agent)
    out, canceller = run(agent, echo)
    assert canceller.delay == pytest.approx(DELAY, abs=0.002)
    late = slice(2 * RATE, len(out))  # after the first two seconds of learning
    assert level(echo[late]) - level(out[late]) > 45  # cancellation plus suppression
    assert canceller.erle > 15  # the adaptive filter alone


def test_the_caller_talking_over_the_agent_passes(voices: tuple[PCM, PCM]) -> None:
    agent, caller = voices
    mic = room(agent) + caller
    out, _ = run(agent, mic)
    late = slice(2 * RATE, len(out))
    before = np.corrcoef(mic[late], caller[late].astype(np.float64))[0, 1]
    after = np.corrcoef(out[late], caller[late].astype(np.float64))[0, 1]
    assert after > 0.8, before  # the caller is kept (quiet stretches are suppressed)


def test_without_playback_or_echo_the_microphone_is_untouched(voices: tuple[PCM, PCM]) -> None:
    agent, caller = voices
    out, canceller = run(np.zeros_like(agent), caller.astype(np.float64))
    assert np.array_equal(out[: len(caller)].astype(np.int16), caller[: len(out)])
    out, canceller = run(agent, caller.astype(np.float64))  # headphones: played, not heard
    assert canceller.delay is None  # nothing to cancel; the caller's speech passes
    assert np.corrcoef(out, caller[: len(out)].astype(np.float64))[0, 1] > 0.8


def test_frames_of_the_wrong_size_are_refused() -> None:
    canceller = EchoCanceller(PlaybackHistory(RATE, 1.0), FRAME)
    with pytest.raises(ValueError, match="frames of 320 samples"):
        canceller.process(np.zeros(100, np.int16), 0.0)
