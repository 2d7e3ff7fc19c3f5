"""Whole conversations of model-free stages on the virtual clock."""

from __future__ import annotations

import time

import pytest

from cascade.frames import PCM
from cascade.metrics import turn_metrics
from tests.conftest import babble, run_virtual, script, scripted_pipeline, silence


def two_turns() -> PCM:
    return script(silence(0.5), babble(1.5, 1), silence(5.0), babble(1.2, 2), silence(6.0))


def test_two_turns_get_two_replies_with_every_span() -> None:
    pipeline = scripted_pipeline(asr={"script": ["hello there", "what time is it"]})
    trace = run_virtual(pipeline, two_turns())
    metrics = {m.turn: m for m in turn_metrics(trace.spans)}
    assert metrics[1].heard == "hello there"
    assert metrics[1].reply == "You said: hello there. Is there anything else?"
    assert metrics[2].heard == "what time is it"
    for turn in (1, 2):
        m = metrics[turn]
        assert m.endpointing == pytest.approx(0.3, abs=0.03)
        assert m.llm_ttft == 0.2
        assert m.tts_ttfb == 0.05
        assert m.voice_to_voice is not None and m.voice_to_voice > m.endpointing + 0.25
    assert {s.name for s in trace.spans} >= {
        "user_speech", "end_of_turn", "asr", "llm", "tts", "agent_speech"}


def test_runs_are_identical_and_fast() -> None:
    audio = script(*(part for i in range(6) for part in (babble(2.0, i), silence(8.0))))
    assert len(audio) / 16000 >= 60
    pipeline = scripted_pipeline(asr={"script": [f"sentence {i}" for i in range(6)]})
    started = time.perf_counter()
    first = run_virtual(pipeline, audio)
    elapsed = time.perf_counter() - started
    second = run_virtual(
        scripted_pipeline(asr={"script": [f"sentence {i}" for i in range(6)]}), audio)
    assert [s.to_json() for s in first.spans] == [s.to_json() for s in second.spans]
    assert len(turn_metrics(first.spans)) == 6
    assert elapsed < 5.0, f"60 s conversation took {elapsed:.2f}s of real time"


def test_silence_produces_no_turn() -> None:
    trace = run_virtual(scripted_pipeline(), silence(10.0))
    assert trace.spans == []
