"""LLMStage: clauses stream out, history is budgeted and truncated at barge-in."""

from __future__ import annotations

from cascade.adapters.scripted import EchoLLM, EchoLLMOptions
from cascade.frames import AgentSpeechStopped, EndOfTurn, LLMReply, LLMText
from tests.stages.harness import Step, drive


def end_of_turn(at: float, text: str, turn: int = 1) -> Step:
    return at, lambda c: EndOfTurn(conversation="call", turn=turn, time=at, text=text,
                                   reason="silence", speech_end=at)


def stopped(at: float, spoken: str, turn: int = 1) -> Step:
    return at, lambda c: AgentSpeechStopped(conversation="call", turn=turn, time=at,
                                            spoken_text=spoken, interrupted=True)


def test_reply_streams_as_clauses_then_a_whole_reply_and_a_span() -> None:
    llm = EchoLLM(EchoLLMOptions(first_token_delay=0.2, token_interval=0.01))
    run = drive(llm, [end_of_turn(1.0, "book a table")], until=5.0)
    texts = run.collector.of(LLMText)
    assert [t.text for t in texts] == ["You said: book a table.", "Is there anything else?"]
    assert [t.last for t in texts] == [False, True]
    [reply] = run.collector.of(LLMReply)
    assert reply.text == "You said: book a table. Is there anything else?"
    [span] = run.trace.named("llm")
    assert span.attrs["ttft"] == 0.2 and span.start == 1.0
    first_clause_at = next(t for t, f in run.collector.frames if isinstance(f, LLMText))
    assert first_clause_at < span.end  # TTS can start before the reply is finished


def test_greeting_is_turn_zero_and_in_history() -> None:
    llm = EchoLLM(EchoLLMOptions(greeting="Hello, how can I help?"))
    run = drive(llm, [], until=1.0)
    [hello] = run.collector.of(LLMText)
    assert hello.turn == 0 and hello.last and hello.text == "Hello, how can I help?"
    assert llm.history == [{"role": "assistant", "content": "Hello, how can I help?"}]


def test_history_keeps_what_the_caller_heard_after_a_barge_in() -> None:
    llm = EchoLLM(EchoLLMOptions())
    drive(llm, [end_of_turn(1.0, "tell me a story"),
                stopped(3.0, "You said: tell me")], until=5.0)
    assert llm.history == [{"role": "user", "content": "tell me a story"},
                           {"role": "assistant", "content": "You said: tell me"}]


def test_reply_cut_before_any_audio_leaves_no_agent_message() -> None:
    llm = EchoLLM(EchoLLMOptions())
    drive(llm, [end_of_turn(1.0, "hi"), stopped(3.0, "")], until=5.0)
    assert llm.history == [{"role": "user", "content": "hi"}]


def test_messages_fit_the_token_budget_newest_first() -> None:
    llm = EchoLLM(EchoLLMOptions(history_tokens=64, system_prompt="Be brief."))
    for index in range(40):
        llm.history.append({"role": "user", "content": f"message number {index} " * 3})
    messages = llm.messages()
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[-1]["content"].startswith("message number 39")
    assert 1 < len(messages) < 10
    assert sum(llm.count_tokens(m["content"]) + 4 for m in messages[1:]) <= 64


def test_resume_speaks_again_from_the_sentence_that_was_cut() -> None:
    from cascade.frames import ResumeReply

    llm = EchoLLM(EchoLLMOptions())
    resume = (4.0, lambda c: ResumeReply(conversation="call", turn=2, time=4.0, resumes=1,
                                         reason="no_words"))
    run = drive(llm, [end_of_turn(1.0, "book a table"),
                      stopped(3.0, "You said: book a table. Is there"), resume], until=6.0)
    resumed = [f for f in run.collector.of(LLMText) if f.turn == 2]
    assert [f.text for f in resumed if f.text] == ["Is there anything else?"]
    assert resumed[-1].last
    assert llm.history[-1]["content"] == "You said: book a table. Is there anything else?"
    [span] = run.trace.named("resume")
    assert span.attrs["resumes"] == 1 and span.turn == 2


def test_unheard_part_restarts_at_the_cut_sentence() -> None:
    from cascade.stages.llm import unheard_part

    assert unheard_part("One two. Three four five. Six.", "One two. Three") == (
        "One two.", "Three four five. Six.")
    assert unheard_part("One two.", "") == ("", "One two.")
    assert unheard_part("One two.", "One two.") == ("One two.", "")
