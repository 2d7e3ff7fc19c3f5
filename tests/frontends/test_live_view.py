"""The live terminal view: state, words as they form, the reply as played, latencies."""

from __future__ import annotations

import numpy as np
from rich.console import Console

from cascade.frames import (
    AgentAudio,
    AgentSpeechStarted,
    AgentSpeechStopped,
    EndOfTurn,
    SpeechStarted,
    Transcript,
)
from cascade.frontends.live_view import LiveView
from cascade.tracing import Span


def render(view: LiveView) -> str:
    console = Console(record=True, width=140)
    console.print(view)
    return console.export_text()


def audio(text: str, clause_end: bool = False) -> AgentAudio:
    return AgentAudio(conversation="c", turn=1, time=0.0, pcm=np.zeros(320, np.int16),
                      sample_rate=16000, text=text, clause_end=clause_end)


def test_a_turn_as_the_user_sees_it() -> None:
    view = LiveView("Cascade · test")
    assert "listening" in render(view)
    view.observe("vad", SpeechStarted(conversation="c", turn=1, time=0.1))
    view.observe("asr", Transcript(conversation="c", turn=1, time=0.5, text="what is",
                                   final=False))
    screen = render(view)
    assert "you are speaking" in screen and "what is …" in screen
    view.observe("asr", Transcript(conversation="c", turn=1, time=0.9,
                                   text="What is the time?", final=True))
    view.observe("turn", EndOfTurn(conversation="c", turn=1, time=1.2,
                                   text="What is the time?", reason="silence", speech_end=0.9))
    assert "thinking" in render(view)
    view.observe("playout", AgentSpeechStarted(conversation="c", turn=1, time=1.8))
    view.play(audio("It is noon."), 1.8)
    view.play(audio("It is noon.", clause_end=True), 1.82)
    view.play(audio("Anything else?"), 1.84)
    screen = render(view)
    assert "speaking" in screen and "It is noon. Anything else?" in screen
    view.observe("playout", AgentSpeechStopped(conversation="c", turn=1, time=2.5,
                                               spoken_text="It is noon. Anything",
                                               interrupted=True))
    for name, start, end, attrs in (
            ("end_of_turn", 0.9, 1.2, {"text": "What is the time?", "reason": "silence"}),
            ("asr", 0.9, 1.1, {}), ("llm", 1.2, 1.6, {"text": "It is noon.", "ttft": 0.2}),
            ("agent_speech", 1.8, 2.5, {"interrupted": True})):
        view.write(Span("c", 1, "x", name, start, end, attrs))
    screen = render(view)
    assert "It is noon. Anything [cut off]" in screen
    assert "900" in screen  # voice-to-voice of the finished turn, in ms
    assert view.finished_turns == [1]
    assert [line.who for line in view.lines] == ["you", "agent"]
