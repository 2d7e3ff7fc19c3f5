"""A fused model in the graph: the same frames, spans and metrics as the cascade."""

from __future__ import annotations

from cascade import Pipeline, parse_pipeline
from cascade.metrics import turn_metrics
from tests.conftest import babble, run_virtual, script, silence


def fused_pipeline(**fused_options: object) -> Pipeline:
    return Pipeline(parse_pipeline({"stages": {
        "vad": {"adapter": "energy-vad"},
        "turn": {"adapter": "turn", "options": {"require_transcript": False}},
        "fused": {"adapter": "local-fused", "options": fused_options},
    }}))


def test_fused_model_answers_each_turn_and_is_measured_like_a_cascade() -> None:
    audio = script(silence(0.5), babble(1.5, 1), silence(6.0), babble(1.0, 2), silence(6.0))
    trace = run_virtual(fused_pipeline(), audio)
    metrics = {m.turn: m for m in turn_metrics(trace.spans)}
    assert sorted(metrics) == [1, 2]
    assert metrics[1].reply == "I heard 2.3 seconds from you in turn 1."  # 0.5 + 1.5 + 0.3
    assert "turn 2" in metrics[2].reply  # the model keeps its own history
    for m in metrics.values():
        assert m.endpointing is not None and abs(m.endpointing - 0.3) < 0.05
        assert m.llm_ttft is not None and abs(m.llm_ttft - 0.15) < 0.01
        assert m.voice_to_voice is not None and 0.44 < m.voice_to_voice < 0.5
    assert [s.attrs["interrupted"] for s in trace.named("agent_speech")] == [False, False]


def test_barge_in_cancels_the_fused_reply() -> None:
    audio = script(silence(0.5), babble(1.5, 1), silence(1.5), babble(1.2, 2), silence(6.0))
    trace = run_virtual(fused_pipeline(), audio)
    speech = {s.turn: s for s in trace.named("agent_speech")}
    assert speech[1].attrs["interrupted"] is True
    assert [s.attrs["reason"] for s in trace.named("interruption")] == ["speech"]
    assert speech[2].attrs["interrupted"] is False  # the new turn got its own answer
