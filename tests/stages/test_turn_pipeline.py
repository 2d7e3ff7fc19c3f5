"""Turn-taking rules through a whole model-free pipeline on the virtual clock."""

from __future__ import annotations

from cascade.metrics import turn_metrics
from cascade.tracing import MemoryTrace
from tests.conftest import babble, run_virtual, script, scripted_pipeline, silence


def agent_speech(trace: MemoryTrace) -> dict[int, dict[str, object]]:
    return {s.turn: s.attrs | {"start": s.start, "end": s.end}
            for s in trace.named("agent_speech")}


def test_noise_burst_cuts_the_agent_which_then_resumes_the_cut_sentence() -> None:
    audio = script(silence(0.5), babble(1.5, 1), silence(1.0), babble(0.8, 2), silence(8.0))
    trace = run_virtual(scripted_pipeline(asr={"script": ["hello there", ""]}), audio)
    speech = agent_speech(trace)
    assert speech[1]["interrupted"] is True
    assert speech[2]["interrupted"] is False  # the resumed reply played to the end
    heard, resumed = str(speech[1]["text"]), str(speech[2]["text"])
    full = "You said: hello there. Is there anything else?"
    assert full.startswith(heard.rsplit(" ", 1)[0]) and full.endswith(resumed)
    assert resumed.startswith(("You said", "Is there"))
    [false] = trace.named("false_interruption")
    assert false.attrs["reason"] == "no_words" and false.attrs["resumed_as"] == 2


def test_backchannel_over_agent_speech_keeps_it_talking() -> None:
    audio = script(silence(0.5), babble(1.5, 1), silence(1.0), babble(0.25, 2), silence(8.0))
    trace = run_virtual(scripted_pipeline(asr={"script": ["hello there", "uh-huh"]}), audio)
    speech = agent_speech(trace)
    assert speech[1]["interrupted"] is False
    assert [s.attrs["text"] for s in trace.named("backchannel")] == ["uh-huh"]
    assert trace.named("interruption") == []
    assert [m.turn for m in turn_metrics(trace.spans) if m.heard] == [1]


def test_real_barge_in_stops_the_agent_and_answers_the_new_turn() -> None:
    audio = script(silence(0.5), babble(1.5, 1), silence(1.0), babble(1.2, 2), silence(8.0))
    trace = run_virtual(
        scripted_pipeline(asr={"script": ["hello there", "stop I meant Tuesday"]}), audio)
    speech = agent_speech(trace)
    assert speech[1]["interrupted"] is True
    metrics = {m.turn: m for m in turn_metrics(trace.spans)}
    assert metrics[1].barge_in_stop is not None
    # stop latency = min speech 0.5 s + VAD stop delay 0.2 s (the gate) after onset
    assert 0.69 <= metrics[1].barge_in_stop <= 0.75
    assert metrics[2].heard == "stop I meant Tuesday"
    assert metrics[2].reply.startswith("You said: stop I meant Tuesday")
    assert trace.named("false_interruption") == []
    # nothing of the cut reply played after the cut
    cut_end = float(speech[1]["end"])
    assert float(speech[2]["start"]) > cut_end
