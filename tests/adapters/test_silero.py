"""Silero VAD on onnxruntime: real speech gives one utterance at its true boundaries;
silence and quiet noise give nothing; both ONNX layouts load and agree."""

from __future__ import annotations

import asyncio

import numpy as np
import onnxruntime
import pytest

from cascade.adapters import bundled
from cascade.adapters.silero import SileroVAD
from cascade.clock import VirtualClock
from cascade.frames import PCM, SpeechStarted, SpeechStopped
from tests.adapters.harness import (
    VAD_TOLERANCE,
    Collector,
    Run,
    build,
    check_one_utterance,
    drive,
    needs_testdata,
    package_file,
    play,
    run_vad,
    silence,
    vad_events,
    vad_speech,
    white_noise,
)
from tests.conftest import needs_models

pytestmark = needs_models

WHEEL_MODEL = package_file("silero_vad", "data", "silero_vad.onnx")
FASTER_WHISPER_MODEL = package_file("faster_whisper", "assets", "silero_vad_v6.onnx")
no_wheel = pytest.mark.skipif(
    WHEEL_MODEL is None,
    reason="the silero-vad wheel is not installed (pip install --no-deps silero-vad: "
           "its .onnx is read without importing the package, which needs torch)",
)

LAYOUTS = [
    pytest.param(None, id="faster-whisper-h-c"),
    pytest.param(str(WHEEL_MODEL), id="silero-vad-state-sr", marks=no_wheel),
]


def detect(model: str | None, audio: PCM) -> Run:
    return run_vad(SileroVAD.create(SileroVAD.Options(model=model)), audio)


def input_names(path: str) -> set[str]:
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return {i.name for i in session.get_inputs()}


def test_bundled_model_is_the_faster_whisper_asset_with_h_c_state() -> None:
    assert FASTER_WHISPER_MODEL is not None
    assert bundled.silero_onnx() == FASTER_WHISPER_MODEL
    assert {"input", "h", "c"} <= input_names(str(FASTER_WHISPER_MODEL))
    assert SileroVAD.missing() == []
    stage = SileroVAD.create(SileroVAD.Options())
    assert isinstance(stage, SileroVAD) and stage.split_state


@no_wheel
def test_wheel_model_has_the_state_sr_layout() -> None:
    assert {"input", "state", "sr"} <= input_names(str(WHEEL_MODEL))
    stage = SileroVAD.create(SileroVAD.Options(model=str(WHEEL_MODEL)))
    assert isinstance(stage, SileroVAD) and not stage.split_state


@needs_testdata
@pytest.mark.parametrize("model", LAYOUTS)
def test_one_utterance_at_the_true_speech_boundaries(model: str | None) -> None:
    audio, onset, end = vad_speech()

    check_one_utterance(detect(model, audio), audio, onset, end)


@pytest.mark.parametrize("model", LAYOUTS)
@pytest.mark.parametrize(
    "audio",
    [pytest.param(silence(3.0), id="silence"),
     pytest.param(white_noise(3.0, -50.0), id="noise-50dBFS")],
)
def test_silence_and_quiet_noise_are_not_speech(model: str | None, audio: PCM) -> None:
    run = detect(model, audio)

    assert vad_events(run) == []
    assert run.trace.named("user_speech") == []


@needs_testdata
@no_wheel
def test_both_layouts_agree_on_the_utterance() -> None:
    audio, _onset, _end = vad_speech()
    found = [[f.time for f in vad_events(detect(model, audio))]
             for model in (None, str(WHEEL_MODEL))]
    assert len(found[0]) == len(found[1]) == 2
    assert np.allclose(found[0], found[1], atol=VAD_TOLERANCE)


@needs_testdata
def test_conversations_share_the_session_but_not_the_state() -> None:
    """Two calls interleaved on one loop each find what a call alone finds."""
    audio, _onset, _end = vad_speech()
    expected = [f.time for f in vad_events(detect(None, audio))]
    # The second caller starts speaking 0.96 s later: a whole number of both
    # 20 ms frames and 32 ms windows, so the windows cut the speech the same way.
    later = 0.96
    second = np.concatenate([silence(later), audio])

    clock = VirtualClock()
    runs = [
        build(clock, [("vad", SileroVAD.create(SileroVAD.Options()))],
              Collector(SpeechStarted, SpeechStopped))
        for _ in range(2)
    ]

    async def both() -> None:
        await asyncio.gather(drive(runs[0], play(audio)), drive(runs[1], play(second)))

    clock.run(both())
    first, other = ([f.time for f in r.collector.frames] for r in runs)
    assert first == expected
    assert np.allclose(np.array(other) - later, expected, atol=0.07), (other, expected)
    one, two = (r.graph.stages["vad"] for r in runs)
    assert isinstance(one, SileroVAD) and isinstance(two, SileroVAD)
    assert one.session is two.session
