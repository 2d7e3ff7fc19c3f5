"""The LLM judge: any LLM adapter grades rubrics; no verdict or a failing judge never passes."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from pydantic import ValidationError

from cascade.clock import RealClock
from cascade.errors import AdapterNotFound, ConfigError
from cascade.evaluation.judge import JudgeUnanswered, LLMJudge, parse_verdict, prompt
from cascade.evaluation.measure import CallMeasure
from cascade.evaluation.outcomes import judge_call, load_judge
from cascade.evaluation.scenarios import JudgeConfig
from tests.conftest import needs_models
from tests.evaluation.test_outcomes import row, scenario

INSTANT = {"first_token_delay": 0.0, "token_interval": 0.0}


@pytest.mark.parametrize(("answer", "verdict", "reason"), [
    ("PASS\nIt names Paris.", True, "It names Paris."),
    ("**FAIL**: the agent was rude.", False, "the agent was rude."),
    ("Verdict: passed - polite and correct", True, "polite and correct"),
    ("fail", False, ""),
    ("I cannot pass this reply. Verdict: FAIL\nIt is rude.", False, "It is rude."),
])
def test_the_first_line_gives_the_verdict(answer: str, verdict: bool, reason: str) -> None:
    assert parse_verdict(answer) == (verdict, reason)


@pytest.mark.parametrize(("answer", "why"), [
    ("I think so", "no PASS or FAIL"),
    ("The reply does not pass the rubric.\nFAIL", "no PASS or FAIL"),  # not on line one
    ("PASS or FAIL? FAIL - rude", "both PASS and FAIL"),  # the question echoed back
    ("", "no PASS or FAIL"),
])
def test_an_answer_without_one_clear_verdict_is_refused(answer: str, why: str) -> None:
    with pytest.raises(JudgeUnanswered, match=why):
        parse_verdict(answer)


def test_an_llm_adapter_judges_what_the_dialogue_reply_and_rubric_say() -> None:
    # echo-llm answers with its template around the prompt's last message: the verdict
    # comes from the template, and the reason shows what the judge was asked
    judge = load_judge(JudgeConfig(llm="echo-llm", options={
        "template": "FAIL. Asked: {text}", **INSTANT}))
    s = scenario({"say": "you broke it", "expect": {"rubric": "apologises"}})
    rude = CallMeasure([row(1, answered=True, reply="Not my problem.")], 1, 0)
    assert not judge_call(s, rude, judge)
    (check,) = rude.rows[0].checks
    assert check["check"] == "rubric" and check["passed"] is False
    for shown in ("user: words", "The agent's reply: Not my problem.", "Rubric: apologises"):
        assert shown in check["note"]


def test_no_verdict_or_a_failing_judge_leaves_the_check_unjudged() -> None:
    vague = load_judge(JudgeConfig(llm="echo-llm", options={"template": "Hmm, hard to say.",
                                                             **INSTANT}))
    s = scenario({"say": "hello", "expect": {"rubric": "greets", "keywords": ["hi"]}})
    call = CallMeasure([row(1, answered=True, reply="hi there")], 1, 0)
    assert judge_call(s, call, vague)  # the keyword decides; the rubric does not count
    rubric = call.rows[0].checks[-1]
    assert rubric["passed"] is None and rubric["note"].startswith("no PASS or FAIL")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = LLMJudge("openai-llm", {"base_url": f"http://127.0.0.1:{port}/v1",
                                   "api_key_env": None, "retries": 0})
    passed, note = down(rubric="greets", reply="hi", dialogue=[])
    assert passed is None and note.startswith("judge openai-llm failed: ")


def test_bad_judge_settings_are_refused_before_anything_runs() -> None:
    with pytest.raises(ValidationError, match="exactly one of llm"):
        JudgeConfig(llm="echo-llm", callable="mod:fn")
    with pytest.raises(ValidationError, match="exactly one of llm"):
        JudgeConfig()
    with pytest.raises(ConfigError, match="'tone-tts' is a tts adapter"):
        LLMJudge("tone-tts", {})
    with pytest.raises(AdapterNotFound, match="no adapter named 'gpt-judge'"):
        LLMJudge("gpt-judge", {})
    with pytest.raises(ConfigError, match=r"judge\.options for 'echo-llm'"):
        LLMJudge("echo-llm", {"temprature": 0})


@needs_models
def test_a_local_model_judges_and_its_own_answer_decides() -> None:
    judge = LLMJudge("llama-cpp", {"temperature": 0.0, "max_tokens": 24})
    asked: dict[str, Any] = {"rubric": "names Paris as the capital",
                             "reply": "The capital of France is Paris.",
                             "dialogue": [{"role": "user", "content": "Capital of France?"}]}
    answer = RealClock().run(judge.ask(prompt(**asked)))
    assert answer.strip()  # the bundled SmolLM2 said something
    try:
        expected: tuple[bool | None, str] = parse_verdict(answer)
    except JudgeUnanswered as exc:
        expected = (None, str(exc))
    assert judge(**asked) == expected  # temperature 0: the same answer, read the same way
