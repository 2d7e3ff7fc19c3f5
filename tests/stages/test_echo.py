"""EchoGate: the agent's own voice fed back into the microphone does not interrupt it."""

from __future__ import annotations

import numpy as np

from cascade import MemoryTrace, Pipeline, VirtualClock, parse_pipeline
from cascade.audio import split_frames
from cascade.frames import PCM
from tests.conftest import babble, script, silence


def pipeline(with_gate: bool) -> Pipeline:
    stages: dict[str, dict[str, object]] = {
        "vad": {"adapter": "energy-vad"},
        "asr": {"adapter": "scripted-asr",
                "options": {"script": ["hello there", "wait I have a question"]}},
        "turn": {"adapter": "turn"},
        "llm": {"adapter": "echo-llm",
                "options": {"template": "You said {text}. " + "That is nice. " * 6}},
        "tts": {"adapter": "tone-tts", "options": {"level": 0.5}},
    }
    if with_gate:
        stages["echo"] = {"adapter": "echo-gate"}
    return Pipeline(parse_pipeline({"stages": stages}))


def call_with_echo(pipe: Pipeline, caller: PCM, gain_db: float = -10.0,
                   delay: float = 0.12) -> MemoryTrace:
    """Feed the caller plus the agent's own playback, delayed and attenuated (a room)."""
    clock = VirtualClock()
    trace = MemoryTrace()
    gain = 10 ** (gain_db / 20)

    async def main() -> None:
        conversation = pipe.conversation(clock, traces=[trace], conversation_id="room")
        playback = conversation.ctx.playback
        assert playback is not None
        await conversation.start()
        for index, chunk in enumerate(split_frames(caller, 16000)):
            at = index * 0.02
            await clock.sleep_until(at)
            echo = playback.read(at - delay, len(chunk)).astype(np.float32) * gain
            mixed = np.clip(chunk.astype(np.float32) + echo, -32768, 32767).astype(np.int16)
            await conversation.send_audio(mixed)
        await conversation.end_input()
        await conversation.wait_finished()
        await conversation.stop()

    clock.run(main())
    return trace


def test_without_the_gate_the_agent_interrupts_itself() -> None:
    trace = call_with_echo(pipeline(False), script(silence(0.5), babble(1.5), silence(14.0)))
    assert trace.named("interruption"), "the echo should have cut the agent off"


def test_with_the_gate_its_own_echo_does_not_interrupt_it() -> None:
    trace = call_with_echo(pipeline(True), script(silence(0.5), babble(1.5), silence(14.0)))
    assert trace.named("interruption") == []
    [speech] = [s for s in trace.named("agent_speech") if s.turn == 1]
    assert speech.attrs["interrupted"] is False and speech.end - speech.start > 5.0
    assert [s.turn for s in trace.named("user_speech")] == [1]  # only the caller's turn


def test_with_the_gate_a_real_barge_in_still_interrupts() -> None:
    caller = script(silence(0.5), babble(1.5, 1), silence(4.0), babble(1.5, 2), silence(9.0))
    trace = call_with_echo(pipeline(True), caller)
    [cut] = trace.named("interruption")
    assert cut.turn == 1 and cut.attrs["reason"] == "speech"
    assert 5.9 < cut.start < 6.2  # the caller's onset, not an echo
    assert any(s.attrs.get("text") == "wait I have a question" for s in trace.named("asr"))


def test_the_gate_passes_audio_untouched_when_the_agent_is_quiet() -> None:
    from cascade.stages.echo import EchoGate, EchoGateOptions
    from tests.stages.harness import drive

    frame_audio = babble(0.2, 5)
    steps = []
    for index, chunk in enumerate(split_frames(frame_audio, 16000)):
        at = index * 0.02
        steps.append((at, lambda c, at=at, chunk=chunk: __import__(
            "cascade.frames", fromlist=["UserAudio"]).UserAudio(
            conversation="call", turn=1, time=at, pcm=chunk, sample_rate=16000)))
    gate = EchoGate(EchoGateOptions())
    run = drive(gate, steps, until=1.0)
    sent = [f.pcm for _, f in run.collector.frames]
    assert np.array_equal(np.concatenate(sent), frame_audio)
