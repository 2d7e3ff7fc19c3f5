"""VADStage hysteresis with the model-free energy VAD."""

from __future__ import annotations

import numpy as np
import pytest

from cascade.adapters.scripted import EnergyVAD, EnergyVADOptions
from cascade.audio import split_frames
from cascade.frames import SpeechStarted, SpeechStopped, UserAudio
from tests.conftest import babble, script, silence
from tests.stages.harness import Step, drive


def frames(pcm: np.ndarray) -> list[Step]:
    steps: list[Step] = []
    for index, chunk in enumerate(split_frames(pcm, 16000)):
        at = index * 0.02
        steps.append((at, lambda c, at=at, chunk=chunk: UserAudio(
            conversation="call", turn=c.turn, time=at, pcm=chunk, sample_rate=16000)))
    return steps


def test_one_utterance_gives_one_start_and_stop_at_the_true_times() -> None:
    audio = script(silence(1.0), babble(1.5), silence(1.0))
    run = drive(EnergyVAD(EnergyVADOptions(min_speech=0.1, min_silence=0.2)),
                frames(audio), until=4.0)
    [start] = run.collector.of(SpeechStarted)
    [stop] = run.collector.of(SpeechStopped)
    assert start.time == pytest.approx(1.0, abs=0.021)
    assert stop.time == pytest.approx(2.5, abs=0.021)
    assert isinstance(stop, SpeechStopped) and stop.started == start.time
    [span] = run.trace.named("user_speech")
    assert span.end - span.start == pytest.approx(1.5, abs=0.03)
    assert len(run.collector.of(UserAudio)) == len(audio) // 320  # audio passes through


def test_short_gap_and_short_click_are_ignored() -> None:
    audio = script(silence(0.5), babble(0.04, 1), silence(1.0), babble(1.0, 2),
                   silence(0.1), babble(1.0, 3), silence(1.0))
    run = drive(EnergyVAD(EnergyVADOptions(min_speech=0.1, min_silence=0.2)),
                frames(audio), until=5.0)
    assert len(run.collector.of(SpeechStarted)) == 1  # the 40 ms click never started speech
    assert len(run.collector.of(SpeechStopped)) == 1  # the 100 ms gap did not stop it


def test_silence_emits_nothing() -> None:
    run = drive(EnergyVAD(EnergyVADOptions()), frames(silence(3.0)), until=4.0)
    assert run.collector.of(SpeechStarted) == [] and run.trace.spans == []
