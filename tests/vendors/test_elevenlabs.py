"""elevenlabs-tts against a local HTTP server replaying a recorded streaming exchange."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from cascade.adapters.elevenlabs import ElevenLabsOptions, ElevenLabsTTS
from cascade.clock import RealClock
from cascade.frames import AgentAudio, LLMText
from tests.adapters.harness import CONVERSATION, Collector, Run, build, drive
from tests.vendors.replay import ElevenLabsReplay, fixture
from tests.vendors.servers import serve_app

KEY = "el-test-key-not-real-0123456789"


@pytest.fixture(autouse=True)
def elevenlabs_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELEVENLABS_API_KEY", KEY)


def speak(replay: ElevenLabsReplay, text: str) -> Run:
    with serve_app(replay.app) as url:
        tts = ElevenLabsTTS(ElevenLabsOptions(base_url=f"{url}/v1", retries=0))
        clock = RealClock()
        run = build(clock, [("tts", tts)], Collector(AgentAudio))

        async def feed(run: Run) -> None:
            await run.graph.send(LLMText(conversation=CONVERSATION, turn=1, time=0.0,
                                         text=text, last=True))

        clock.run(drive(run, feed, deadline=30))
    return run


def test_streams_the_recorded_audio_into_agent_frames() -> None:
    replay = ElevenLabsReplay("elevenlabs_stream")
    run = speak(replay, "Hello there.")
    (seen,) = replay.seen
    assert not seen.problems, seen.problems
    assert seen.headers["xi-api-key"] == KEY
    recorded = b"".join(base64.b64decode(c) for c in
                        fixture("elevenlabs_stream")["response"]["chunks_base64"])
    frames = [f for f in run.collector.of(AgentAudio) if isinstance(f, AgentAudio)]
    audio = np.concatenate([f.pcm for f in frames])
    # pcm_16000 is the pipeline rate: the samples arrive unchanged, odd chunk cuts and all.
    assert np.array_equal(audio, np.frombuffer(recorded, "<i2"))
    assert frames[-1].reply_end
    (span,) = run.trace.named("tts")
    assert span.attrs["ttfb"] is not None


def test_a_refused_key_is_a_traced_error_without_the_key() -> None:
    run = speak(ElevenLabsReplay("elevenlabs_unauthorized"), "Hello there.")
    (error,) = run.trace.named("error")
    assert "HTTP 401" in error.attrs["error"] and "ELEVENLABS_API_KEY" in error.attrs["error"]
    assert "invalid_api_key" in error.attrs["error"]
    assert KEY not in error.to_json()
