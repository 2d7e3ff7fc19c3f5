"""WebRTC VAD: real speech gives one utterance at its true boundaries at every
aggressiveness; silence and quiet noise give nothing at the default and strictest."""

from __future__ import annotations

import pytest

from cascade.adapters.webrtc_vad import WebRTCVAD
from cascade.audio import resample
from cascade.clock import VirtualClock
from cascade.frames import PCM, SpeechStarted, SpeechStopped, UserAudio
from tests.adapters.harness import (
    CONVERSATION,
    VAD_TOLERANCE,
    Collector,
    Run,
    build,
    check_one_utterance,
    drive,
    needs_testdata,
    run_vad,
    silence,
    vad_events,
    vad_speech,
    white_noise,
)
from tests.conftest import needs_models

pytestmark = needs_models


def detect(audio: PCM, aggressiveness: int = 2) -> Run:
    return run_vad(WebRTCVAD.create(WebRTCVAD.Options(aggressiveness=aggressiveness)), audio)


def test_ready_here() -> None:
    assert WebRTCVAD.missing() == []
    assert WebRTCVAD.window == 320  # 20 ms at 16 kHz, a frame size webrtcvad accepts


@needs_testdata
@pytest.mark.parametrize("aggressiveness", [0, 2, 3])
def test_one_utterance_at_the_true_speech_boundaries(aggressiveness: int) -> None:
    audio, onset, end = vad_speech()

    check_one_utterance(detect(audio, aggressiveness), audio, onset, end)


# Mode 0 ("quality") is meant to miss no speech: it calls -50 dBFS white noise speech.
@pytest.mark.parametrize("aggressiveness", [2, 3])
@pytest.mark.parametrize(
    "audio",
    [pytest.param(silence(3.0), id="silence"),
     pytest.param(white_noise(3.0, -50.0), id="noise-50dBFS")],
)
def test_silence_and_quiet_noise_are_not_speech(audio: PCM, aggressiveness: int) -> None:
    run = detect(audio, aggressiveness)

    assert vad_events(run) == []
    assert run.trace.named("user_speech") == []


@needs_testdata
def test_caller_audio_at_another_rate_is_resampled() -> None:
    """8 kHz telephone audio reaches the 16 kHz detector and finds the same utterance."""
    audio, onset, end = vad_speech()
    narrow = resample(audio, 16000, 8000)

    clock = VirtualClock()
    collector = Collector(SpeechStarted, SpeechStopped)
    run = build(clock, [("vad", WebRTCVAD.create(WebRTCVAD.Options()))], collector)

    async def feed(run: Run) -> None:
        size = 160  # 20 ms at 8 kHz
        for index, begin in enumerate(range(0, len(narrow), size)):
            await clock.sleep_until(index * 0.02)
            await run.graph.send(UserAudio(
                conversation=CONVERSATION, turn=1, time=index * 0.02,
                pcm=narrow[begin : begin + size], sample_rate=8000))

    clock.run(drive(run, feed))
    started, stopped = collector.frames
    assert abs(started.time - onset) <= VAD_TOLERANCE
    assert abs(stopped.time - end) <= VAD_TOLERANCE
