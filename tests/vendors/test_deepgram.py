"""deepgram-asr against a local websocket server replaying a recorded /v1/listen exchange."""

from __future__ import annotations

import numpy as np
import pytest

from cascade.adapters.deepgram import DeepgramASR, DeepgramOptions
from cascade.adapters.provider import ProviderError
from cascade.adapters.scripted import EnergyVAD, EnergyVADOptions
from cascade.clock import VirtualClock
from cascade.frames import Transcript
from tests.adapters.harness import Collector, build, drive, play
from tests.conftest import babble, silence
from tests.vendors.replay import DeepgramReplay

KEY = "dg-test-key-not-real-0123456789"


@pytest.fixture(autouse=True)
def deepgram_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", KEY)


def test_recognize_streams_audio_finalizes_and_joins_finals() -> None:
    replay = DeepgramReplay("deepgram_listen")
    audio = np.linspace(-0.1, 0.1, 16000 * 2, dtype=np.float32)
    with replay.serving() as base:
        stage = DeepgramASR(DeepgramOptions(base_url=base))
        result = stage.recognize(audio)
    (seen,) = replay.seen
    assert not seen.problems, seen.problems
    assert seen.headers["authorization"] == f"Token {KEY}"
    assert seen.audio_bytes == len(audio) * 2
    assert seen.messages == [{"type": "Finalize"}, {"type": "CloseStream"}]
    assert result.text == "Go forward ten meters."
    assert [w.text for w in result.words] == ["Go", "forward", "ten", "meters."]
    assert result.words[0].start == pytest.approx(0.98)
    assert -0.1 < result.avg_logprob < 0


def test_a_segment_becomes_a_final_transcript_in_the_graph() -> None:
    replay = DeepgramReplay("deepgram_listen")
    with replay.serving() as base:
        asr = DeepgramASR(DeepgramOptions(base_url=base))
        clock = VirtualClock()
        run = build(clock, [("vad", EnergyVAD(EnergyVADOptions())), ("asr", asr)],
                    Collector(Transcript))
        clock.run(drive(run, play(np.concatenate([silence(0.5), babble(1.5), silence(1.0)]))))
    finals = [f for f in run.collector.of(Transcript) if isinstance(f, Transcript) and f.final]
    assert [f.text for f in finals] == ["Go forward ten meters."]
    assert finals[0].words[0].start > finals[0].speech_start  # media time, not segment time
    (span,) = run.trace.named("asr")
    assert span.attrs["text"] == "Go forward ten meters."


def test_a_refused_key_names_the_variable_and_hides_the_key() -> None:
    replay = DeepgramReplay("deepgram_unauthorized")
    with replay.serving() as base:
        stage = DeepgramASR(DeepgramOptions(base_url=base, retries=2))
        with pytest.raises(ProviderError, match=r"HTTP 401.*DEEPGRAM_API_KEY") as caught:
            stage.recognize(np.zeros(3200, np.float32))
    assert len(replay.seen) == 1  # a 401 is not retried
    assert KEY not in str(caught.value)
