"""openai-asr and openai-tts over a real HTTP round trip to a local server that
transcribes with faster-whisper and speaks with Piper."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from cascade.adapters.openai_speech import (
    OpenAIASR,
    OpenAIASROptions,
    OpenAITTS,
    OpenAITTSOptions,
)
from cascade.audio import to_float
from cascade.clock import RealClock, VirtualClock
from cascade.frames import AgentAudio, LLMText, SpeechStarted, SpeechStopped, Transcript, UserAudio
from tests.adapters.harness import (
    CONVERSATION,
    Collector,
    Run,
    build,
    drive,
    goforward,
    needs_testdata,
    padded,
    wer,
)
from tests.conftest import needs_models
from tests.vendors.servers import serve_app
from tests.vendors.speech_server import SpeechServer

pytestmark = needs_models


@pytest.fixture(scope="module")
def speech() -> Iterator[tuple[SpeechServer, str]]:
    server = SpeechServer()
    with serve_app(server.app) as url:
        yield server, f"{url}/v1"


@needs_testdata
def test_transcribes_a_segment_over_http(speech: tuple[SpeechServer, str]) -> None:
    server, base = speech
    asr = OpenAIASR(OpenAIASROptions(base_url=base, api_key_env=None))
    clock = VirtualClock()
    run = build(clock, [("asr", asr)], Collector(Transcript))
    audio = padded(goforward(), 0.2, 0.2)

    async def feed(run: Run) -> None:  # one VAD segment around the whole clip
        await run.graph.send(SpeechStarted(conversation=CONVERSATION, turn=1, time=0.0))
        for index, start in enumerate(range(0, len(audio), 320)):
            await run.graph.send(UserAudio(conversation=CONVERSATION, turn=1,
                                           time=index * 0.02, pcm=audio[start : start + 320],
                                           sample_rate=16000))
        end = len(audio) / 16000
        await run.graph.send(SpeechStopped(conversation=CONVERSATION, turn=1, time=end,
                                           started=0.0))

    clock.run(drive(run, feed))
    (final,) = [f for f in run.collector.of(Transcript) if isinstance(f, Transcript)]
    assert final.final and wer("go forward ten meters", final.text) <= 0.25, final.text
    assert final.words  # word timings came back through verbose_json
    (form,) = server.forms
    assert (form["model"], form["language"], form["file"][:4]) == (b"whisper-1", b"en", b"RIFF")
    (span,) = run.trace.named("asr")
    assert span.attrs["text"] == final.text


def test_speaks_a_clause_streamed_over_http(speech: tuple[SpeechServer, str]) -> None:
    _, base = speech
    tts = OpenAITTS(OpenAITTSOptions(base_url=base, api_key_env=None, model="piper"))
    clock = RealClock()
    run = build(clock, [("tts", tts)], Collector(AgentAudio))
    text = "Hello there. This is a streamed test of the speech endpoint."

    async def feed(run: Run) -> None:
        await run.graph.send(LLMText(conversation=CONVERSATION, turn=1, time=0.0,
                                     text=text, last=True))

    clock.run(drive(run, feed, deadline=60))
    frames = [f for f in run.collector.of(AgentAudio) if isinstance(f, AgentAudio)]
    audio = np.concatenate([f.pcm for f in frames])
    assert frames[-1].reply_end and frames[-1].clause_end
    assert all(f.sample_rate == 16000 for f in frames)
    seconds = len(audio) / 16000
    assert 2.0 < seconds < 8.0, seconds
    assert float(np.sqrt(np.mean(to_float(audio) ** 2))) > 0.01
    (span,) = run.trace.named("tts")
    assert 0 < span.attrs["ttfb"] < span.end - span.start


def test_a_bad_request_is_a_traced_error(speech: tuple[SpeechServer, str]) -> None:
    _, base = speech
    tts = OpenAITTS(OpenAITTSOptions(base_url=base.replace("/v1", "/nope"), api_key_env=None))
    clock = RealClock()
    run = build(clock, [("tts", tts)], Collector(AgentAudio))

    async def feed(run: Run) -> None:
        await run.graph.send(LLMText(conversation=CONVERSATION, turn=1, time=0.0,
                                     text="Hello.", last=True))

    clock.run(drive(run, feed, deadline=30))
    (error,) = run.trace.named("error")
    assert "HTTP 404" in error.attrs["error"] and "base_url" in error.attrs["error"]
