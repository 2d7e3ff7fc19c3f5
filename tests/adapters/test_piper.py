"""Piper with the bundled joe voice: 22.05 kHz int16 synthesis, 16 kHz agent audio
frames of 20 ms, plausible durations, the tts span, and a round trip through
faster-whisper."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cascade.adapters import bundled
from cascade.adapters.faster_whisper import FasterWhisperASR
from cascade.adapters.piper import PiperTTS
from cascade.adapters.silero import SileroVAD
from cascade.clock import Clock, RealClock, VirtualClock
from cascade.frames import PCM, AgentAudio, LLMText, Transcript
from cascade.tracing import Span
from tests.adapters.harness import (
    CONVERSATION,
    Collector,
    Run,
    build,
    drive,
    padded,
    play,
    wer,
)
from tests.conftest import needs_models

pytestmark = needs_models

FRAME = 320  # 20 ms at 16 kHz
TWO_SENTENCES = "The weather is lovely today. Let us walk to the park and feed the ducks."


def clause(text: str, turn: int = 1, last: bool = True) -> LLMText:
    return LLMText(conversation=CONVERSATION, turn=turn, time=0.0, text=text, last=last)


def speak(clock: Clock, *clauses: LLMText) -> tuple[list[AgentAudio], list[Span]]:
    """Clauses through a Piper stage; the agent audio frames and spans that came out."""
    run = build(clock, [("tts", PiperTTS.create(PiperTTS.Options()))], Collector(AgentAudio))

    async def feed(run: Run) -> None:
        for frame in clauses:
            await run.graph.send(frame)

    clock.run(drive(run, feed))
    return [f for f in run.collector.frames if isinstance(f, AgentAudio)], run.trace.spans


def joined(frames: list[AgentAudio]) -> PCM:
    return np.concatenate([f.pcm for f in frames])


def test_ready_here() -> None:
    assert PiperTTS.missing() == []
    found = bundled.piper_joe()
    assert found is not None
    config = json.loads(found[1].read_text())
    assert config["audio"]["sample_rate"] == 22050


def test_synthesis_is_int16_at_the_voices_rate_one_chunk_per_sentence() -> None:
    clock = VirtualClock()
    run = build(clock, [("tts", PiperTTS.create(PiperTTS.Options()))], Collector(AgentAudio))
    tts = run.graph.stages["tts"]
    assert isinstance(tts, PiperTTS)

    async def chunks() -> list[tuple[PCM, int]]:
        return [chunk async for chunk in tts.synthesize(TWO_SENTENCES)]

    found = clock.run(chunks())
    assert len(found) == 2
    for pcm, rate in found:
        assert rate == 22050 and pcm.dtype == np.int16 and pcm.ndim == 1
        assert 0.5 < len(pcm) / rate < 6.0
        assert np.abs(pcm.astype(np.int32)).max() > 3000  # audible, not silence


def test_stage_sends_16khz_agent_audio_in_20ms_frames() -> None:
    frames, _spans = speak(VirtualClock(), clause("Hello there,", last=False),
                           clause(TWO_SENTENCES))

    assert {f.sample_rate for f in frames} == {16000}
    assert all(f.pcm.dtype == np.int16 for f in frames)
    for text, last in (("Hello there,", False), (TWO_SENTENCES, True)):
        mine = [f for f in frames if f.text == text]
        assert all(len(f.pcm) == FRAME for f in mine[:-1])
        assert len(mine[-1].pcm) < FRAME  # the clause's remainder closes it
        assert [f.clause_end for f in mine] == [False] * (len(mine) - 1) + [True]
        assert [f.reply_end for f in mine] == [False] * (len(mine) - 1) + [last]
    assert frames[-1].reply_end and sum(f.reply_end for f in frames) == 1


@pytest.mark.parametrize("text", ["go forward ten meters", TWO_SENTENCES])
def test_duration_is_plausible_for_the_text(text: str) -> None:
    frames, _spans = speak(VirtualClock(), clause(text))

    seconds = len(joined(frames)) / 16000
    words = len(text.split())
    # Conversational English: roughly 2 to 4 words a second, plus pauses at the
    # ends; Piper's duration noise moves a sentence by a few percent.
    assert words / 5 <= seconds <= words / 1.5 + 0.6, (text, seconds)


def test_tts_span_with_time_to_first_byte_on_the_real_clock() -> None:
    frames, spans = speak(RealClock(), clause("Hello there,", last=False),
                          clause("go forward ten meters"))

    tts = [s for s in spans if s.name == "tts"]
    assert [s.attrs["text"] for s in tts] == ["Hello there,", "go forward ten meters"]
    for span in tts:
        assert span.stage == "tts" and span.turn == 1
        ttfb = span.attrs["ttfb"]  # rounded to 0.1 ms
        assert ttfb is not None and 0.0 < ttfb <= span.end - span.start + 1e-4
    assert frames


def test_tts_span_on_the_virtual_clock_takes_no_time() -> None:
    """Synthesis runs through ``run_blocking``: zero virtual seconds, still measured."""
    _frames, spans = speak(VirtualClock(), clause("go forward ten meters"))

    (tts,) = [s for s in spans if s.name == "tts"]
    assert tts.attrs["ttfb"] == 0.0 and tts.start == tts.end


def test_empty_clause_closes_the_reply_without_synthesis() -> None:
    frames, spans = speak(VirtualClock(), clause("   "))

    assert [(len(f.pcm), f.clause_end, f.reply_end) for f in frames] == [(0, True, True)]
    assert [s for s in spans if s.name == "tts"] == []


def test_round_trip_through_faster_whisper() -> None:
    """Piper says it, Silero hears it, faster-whisper writes it back."""
    frames, _spans = speak(VirtualClock(), clause("go forward ten meters"))
    spoken = padded(joined(frames), 1.0, 1.0)

    clock = VirtualClock()
    stages = [
        ("vad", SileroVAD.create(SileroVAD.Options())),
        ("asr", FasterWhisperASR.create(FasterWhisperASR.Options(partial_interval=0.0))),
    ]
    run = build(clock, stages, Collector(Transcript))
    clock.run(drive(run, play(spoken)))

    finals = [f for f in run.collector.frames if isinstance(f, Transcript) and f.final]
    text = " ".join(f.text for f in finals)
    assert wer("go forward ten meters", text) <= 0.25, text


def test_a_missing_voice_config_is_reported() -> None:
    """``missing()`` checks both files the voice needs, not only the .onnx."""
    found = bundled.piper_joe()
    assert found is not None
    options = PiperTTS.Options(voice=str(found[0]), config="/nonexistent/voice.onnx.json")

    assert PiperTTS.missing(options) != []
