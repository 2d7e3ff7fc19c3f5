"""openai-asr and openai-tts over a real HTTP round trip to a local server that
transcribes with faster-whisper and speaks with Piper; and openai-asr failing (a refused
port, an HTTP 500, a timeout) in a conversation that goes on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

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
    stream_audio,
    wer,
)
from tests.conftest import babble, needs_models, script, silence
from tests.stages.test_asr import ends, error_frames, finals, listening
from tests.vendors.servers import free_port, serve_app
from tests.vendors.speech_server import SpeechServer


@pytest.fixture(scope="module")
def speech() -> Iterator[tuple[SpeechServer, str]]:
    server = SpeechServer()
    with serve_app(server.app) as url:
        yield server, f"{url}/v1"


@needs_models
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


@needs_models
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


@needs_models
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



class Transcriber:
    """A transcription endpoint whose first answer fails as told (``fault``), then says
    "hello there" to everything."""

    def __init__(self, fault: str) -> None:
        self.fault = fault
        self.requests = 0
        self.app = Starlette(routes=[
            Route("/v1/audio/transcriptions", self.transcribe, methods=["POST"])])

    async def transcribe(self, request: Request) -> Response:
        await request.body()
        self.requests += 1
        if self.requests == 1 and self.fault == "http-500":
            return JSONResponse({"error": {"message": "the model crashed"}}, status_code=500)
        if self.requests == 1 and self.fault == "timeout":
            await asyncio.sleep(1.0)  # past the client's read_timeout
        return JSONResponse({"text": " hello there", "segments": [
            {"avg_logprob": -0.2, "no_speech_prob": 0.01}]})


@pytest.mark.parametrize(("fault", "says"), [
    ("refused", "failed to connect"),
    ("http-500", "answered HTTP 500"),
    ("timeout", "timed out (ReadTimeout)"),
], ids=["refused", "http-500", "timeout"])
def test_a_failed_transcription_is_an_error_and_the_conversation_goes_on(
        fault: str, says: str) -> None:
    port = free_port()
    server = Transcriber(fault)
    run, turn = listening(OpenAIASR(OpenAIASROptions(
        base_url=f"http://127.0.0.1:{port}/v1", api_key_env=None, retries=0,
        read_timeout=0.3)))

    async def heard(count: int) -> None:
        for _ in range(1000):  # virtual time; the loop waits for the server for real
            if len(finals(run)) >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"stuck: finals {finals(run)}, errors {run.trace.named('error')}")

    async def feed(run: Run) -> None:
        with contextlib.ExitStack() as up:
            if fault != "refused":  # refused: nothing listens on the port for turn 1
                up.enter_context(serve_app(server.app, port))
            await stream_audio(run, script(silence(0.5), babble(1.0, seed=1), silence(1.5)))
            await heard(1)
            if fault == "refused":  # the server is up for the next turn
                up.enter_context(serve_app(server.app, port))
            await stream_audio(run, script(babble(1.0, seed=2), silence(1.5)))
            await heard(2)

    run.ctx.clock.run(drive(run, feed, deadline=120))
    assert finals(run) == ["", "hello there"]  # the failed segment is heard as nothing
    assert ends(run) == [(1, "hello there")]  # the turn controller did not wait for it
    assert turn.pending_finals == 0
    (error,) = run.trace.named("error")
    assert (error.stage, error.turn) == ("asr", 1)
    assert says in error.attrs["error"] and "openai-asr" in error.attrs["error"]
    (frame,) = error_frames(run)
    assert (frame.stage, frame.message) == ("asr", error.attrs["error"])
    assert server.requests == (1 if fault == "refused" else 2)
