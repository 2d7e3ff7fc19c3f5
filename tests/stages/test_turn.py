"""TurnController decisions from scripted VAD/ASR events on the virtual clock."""

from __future__ import annotations

import pytest

from cascade.frames import (
    AgentSpeechStarted,
    AgentSpeechStopped,
    Cancel,
    EndOfTurn,
    Frame,
    Interrupt,
    ResumeReply,
    SpeechStarted,
    SpeechStopped,
    Transcript,
)
from cascade.stages.turn import TurnController, TurnOptions
from tests.stages.harness import Run, Step, drive


def started(at: float) -> Step:
    return at, lambda c: SpeechStarted(conversation="call", turn=c.turn, time=at)


def stopped(at: float, onset: float) -> Step:
    return at + 0.2, lambda c: SpeechStopped(conversation="call", turn=c.turn, time=at,
                                             started=onset)


def final(at: float, text: str, onset: float, end: float) -> Step:
    return at, lambda c: Transcript(conversation="call", turn=c.turn, time=at, text=text,
                                    final=True, speech_start=onset, speech_end=end)


def partial(at: float, text: str) -> Step:
    return at, lambda c: Transcript(conversation="call", turn=c.turn, time=at, text=text,
                                    final=False)


def agent_starts(at: float, turn: int = 0) -> Step:
    return at, lambda c: AgentSpeechStarted(conversation="call", turn=turn, time=at)


def agent_stops(at: float, turn: int = 0) -> Step:
    return at, lambda c: AgentSpeechStopped(conversation="call", turn=turn, time=at,
                                            spoken_text="", interrupted=False)


def utterance(onset: float, end: float, text: str, asr_delay: float = 0.3) -> list[Step]:
    """VAD reports the stop 0.2 s after the speech ends; ASR answers asr_delay later."""
    return [started(onset), stopped(end, onset), final(end + 0.2 + asr_delay, text, onset, end)]


def run(steps: list[Step], until: float = 10.0, **options: object) -> Run:
    return drive(TurnController(TurnOptions.model_validate(options)), steps, until)


def ends(result: Run) -> list[tuple[float, EndOfTurn]]:
    return [(t, f) for t, f in result.collector.frames if isinstance(f, EndOfTurn)]


def spans(result: Run, name: str) -> list[dict[str, object]]:
    return [s.attrs | {"start": s.start, "end": s.end, "turn": s.turn}
            for s in result.trace.named(name)]


def test_complete_turn_ends_min_delay_after_speech_or_when_the_transcript_arrives() -> None:
    result = run(utterance(1.0, 2.0, "What time is it?", asr_delay=0.05))
    [(at, eot)] = ends(result)
    assert eot.text == "What time is it?" and eot.reason == "silence" and eot.turn == 1
    assert at == 2.3  # speech end + min_delay (transcript came earlier)
    late = run(utterance(1.0, 2.0, "What time is it?", asr_delay=0.6))
    assert ends(late)[0][0] == pytest.approx(2.8)  # waits for the transcript


def test_trailing_conjunction_waits_longer_and_the_pause_does_not_end_the_turn() -> None:
    steps = utterance(1.0, 2.0, "I want to book a table and") + utterance(
        2.7, 4.0, "for two people tonight.")
    result = run(steps)
    [(at, eot)] = ends(result)
    assert eot.text == "I want to book a table and for two people tonight."
    assert at == 4.5


def test_unfinished_turn_still_ends_after_incomplete_delay() -> None:
    result = run(utterance(1.0, 2.0, "So I was thinking, um"), incomplete_delay=1.2)
    [(at, eot)] = ends(result)
    assert eot.reason == "unfinished_timeout" and at == 3.2
    [span] = spans(result, "end_of_turn")
    assert span["reason"] == "unfinished_timeout" and span["start"] == 2.0


def test_max_delay_caps_the_wait() -> None:
    result = run(utterance(1.0, 2.0, "and"), incomplete_delay=5.0, max_delay=2.0)
    assert ends(result)[0][0] == 4.0


def test_noise_without_words_is_no_turn() -> None:
    result = run(utterance(1.0, 1.5, ""))
    assert ends(result) == [] and spans(result, "end_of_turn") == []


def test_turn_ids_advance() -> None:
    result = run(utterance(1.0, 2.0, "One.") + utterance(4.0, 5.0, "Two."))
    assert [e.turn for _, e in ends(result)] == [1, 2]
    assert result.ctx.turn == 3


def test_barge_in_after_min_speech_interrupts_the_agent() -> None:
    steps = [agent_starts(0.5), *utterance(2.0, 3.5, "Wait, stop, I need something else.")]
    result = run(steps, barge_in_min_speech=0.5)
    [cut] = result.collector.of(Interrupt)
    assert cut.turn == 0 and cut.time == 2.7  # onset + min speech + VAD stop delay
    [span] = spans(result, "interruption")
    assert span["reason"] == "speech" and span["start"] == 2.0 and span["end"] == 2.7
    assert ends(result)[0][1].text == "Wait, stop, I need something else."


def test_backchannel_during_agent_speech_does_not_interrupt_and_is_traced() -> None:
    steps = [agent_starts(0.5), *utterance(2.0, 2.35, "Uh-huh."), agent_stops(6.0)]
    result = run(steps, barge_in_min_speech=0.5)
    assert result.collector.of(Interrupt) == []
    assert [s["text"] for s in spans(result, "backchannel")] == ["Uh-huh."]
    assert ends(result) == []  # a backchannel is not a user turn


def test_custom_backchannel_list() -> None:
    steps = [agent_starts(0.5), *utterance(2.0, 2.35, "Totally.")]
    assert run(steps, backchannels=["totally"]).collector.of(Interrupt) == []
    assert len(run(steps).collector.of(Interrupt)) == 1  # real words, not in the list


def test_short_real_words_interrupt_once_recognised() -> None:
    steps = [agent_starts(0.5), *utterance(2.0, 2.4, "Stop.", asr_delay=0.3)]
    result = run(steps, barge_in_min_speech=0.5)
    [cut] = result.collector.of(Interrupt)
    assert cut.time == 2.9
    assert spans(result, "interruption")[0]["reason"] == "words"


def test_min_words_interrupts_from_partials() -> None:
    steps = [agent_starts(0.5), started(2.0), partial(2.4, "could you please"),
             stopped(3.0, 2.0), final(3.3, "could you please repeat", 2.0, 3.0)]
    result = run(steps, barge_in_min_speech=2.0, barge_in_min_words=3)
    [cut] = result.collector.of(Interrupt)
    assert cut.time == 2.4


def test_no_interruptions_when_disabled() -> None:
    steps = [agent_starts(0.5), *utterance(2.0, 4.0, "Hello hello hello there.")]
    assert run(steps, allow_interruptions=False).collector.of(Interrupt) == []


def test_speech_while_reply_is_prepared_cancels_it() -> None:
    steps = utterance(1.0, 2.0, "Book me a table.") + [started(3.0)]
    result = run(steps)
    [cancel] = result.collector.of(Cancel)
    assert cancel.turn == 1 and cancel.reason == "caller_resumed"


def test_reply_that_started_playing_is_not_cancelled_by_later_speech() -> None:
    steps = utterance(1.0, 2.0, "Book me a table.") + [agent_starts(2.6, turn=1),
                                                       agent_stops(3.0, turn=1), started(4.0)]
    assert run(steps).collector.of(Cancel) == []


def _frames_of(result: Run) -> list[Frame]:
    return [f for _, f in result.collector.frames]


def test_speech_that_ended_long_enough_interrupts_when_the_stop_arrives() -> None:
    steps = [agent_starts(0.5), started(2.0), stopped(2.55, 2.0)]
    result = run(steps, barge_in_min_speech=0.5, vad_stop_delay=0.3)
    [cut] = result.collector.of(Interrupt)
    assert cut.time == 2.75  # the stop (0.2 s after the end) proves 0.55 s of speech


def test_decisions_are_deterministic() -> None:
    steps = [agent_starts(0.5), *utterance(2.0, 3.5, "Wait."), *utterance(5.0, 6.0, "Yes.")]
    first, second = run(steps), run(steps)
    assert [s.to_json() for s in first.trace.spans] == [s.to_json() for s in second.trace.spans]
    assert _frames_of(first) == _frames_of(second)



def noise_burst(onset: float, end: float, text: str = "") -> list[Step]:
    return [started(onset), stopped(end, onset), final(end + 0.5, text, onset, end)]


def test_noise_during_agent_speech_interrupts_then_the_agent_resumes() -> None:
    steps = [agent_starts(0.5), *noise_burst(2.0, 2.8)]
    result = run(steps, barge_in_min_speech=0.5)
    [cut] = result.collector.of(Interrupt)
    [resume] = result.collector.of(ResumeReply)
    assert cut.turn == 0 and resume.resumes == 0 and resume.turn == 1
    assert resume.time == pytest.approx(3.3)  # as soon as the empty transcript arrived
    [span] = spans(result, "false_interruption")
    assert span["reason"] == "no_words" and span["resumed_as"] == 1
    assert ends(result) == []  # a cough is not a user turn
    assert result.ctx.turn == 2


def test_barge_in_with_no_transcript_at_all_resumes_after_the_timeout() -> None:
    steps = [agent_starts(0.5), started(2.0), stopped(2.8, 2.0)]  # ASR never answers
    result = run(steps, barge_in_min_speech=0.5, false_interruption_timeout=2.0)
    [cut] = result.collector.of(Interrupt)
    [resume] = result.collector.of(ResumeReply)
    assert cut.time == pytest.approx(2.7) and resume.time == pytest.approx(4.7)
    assert spans(result, "false_interruption")[0]["reason"] == "timeout"


def test_a_long_backchannel_that_interrupted_is_undone() -> None:
    steps = [agent_starts(0.5), *noise_burst(2.0, 2.9, "yeah okay")]
    result = run(steps, barge_in_min_speech=0.5)
    assert len(result.collector.of(Interrupt)) == 1
    assert len(result.collector.of(ResumeReply)) == 1
    assert [s["text"] for s in spans(result, "backchannel")] == ["yeah okay"]


def test_real_words_after_a_barge_in_stand() -> None:
    steps = [agent_starts(0.5), *noise_burst(2.0, 2.9, "Actually I want Tuesday.")]
    result = run(steps, barge_in_min_speech=0.5)
    assert result.collector.of(ResumeReply) == []
    assert ends(result)[0][1].text == "Actually I want Tuesday."


def test_resume_can_be_turned_off() -> None:
    steps = [agent_starts(0.5), *noise_burst(2.0, 2.8)]
    result = run(steps, resume_after_false_interruption=False)
    assert result.collector.of(ResumeReply) == []


def test_a_slow_transcript_for_the_first_segment_does_not_end_the_turn_early() -> None:
    # segment 1 ends at 2.0, segment 2 at 3.5; segment 1's transcript arrives only after
    # segment 2 closed, and segment 2's a second later: one turn with both texts.
    steps = [started(1.0), stopped(2.0, 1.0), started(2.5), stopped(3.5, 2.5),
             final(3.8, "Yes please,", 1.0, 2.0), final(4.8, "under the name Dana.", 2.5, 3.5)]
    result = run(steps)
    [(at, eot)] = ends(result)
    assert eot.text == "Yes please, under the name Dana." and at == pytest.approx(4.8)
