"""Expected-outcome checks, verdicts and task success."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from cascade.errors import ConfigError
from cascade.evaluation.measure import CallMeasure, TurnResult
from cascade.evaluation.outcomes import contains, judge_call, load_judge, normalise, run_checks
from cascade.evaluation.scenarios import Expect, JudgeConfig, Scenario


def test_numbers_read_the_same_however_they_are_said() -> None:
    for said in ("four five two one nine", "4 5 2 1 9", "45219", "forty-five two one nine"):
        assert normalise(f"Order {said}, shipped.") == "order 45219 shipped"
    assert contains("Your order 4 5 2 1 9 has shipped", "45219")
    assert not contains("Your order 4521 has shipped", "45219")


def test_keywords_match_whole_words_only() -> None:
    assert contains("See you on Tuesday!", "tuesday")
    assert not contains("See you on Tuesdays", "tuesday")
    assert contains("It's booked, Dana.", "it's booked")


def test_each_configured_check_is_reported() -> None:
    expect = Expect(regex=r"\bat \d", keywords=["tuesday", "three", "friday"],
                    any_of=["book", "set"],
                    fact="3", rubric="polite")
    checks = run_checks(expect, "Booked for Tuesday at 3.", [], None, {})
    got = {(c["check"], str(c["want"])): c["passed"] for c in checks}
    assert got == {("regex", r"\bat \d"): True, ("keyword", "tuesday"): True,
                   ("keyword", "three"): True, ("keyword", "friday"): False,
                   ("any_of", "['book', 'set']"): False,
                   ("fact", "3"): True, ("rubric", "polite"): None}


def row(event: int, kind: str = "turn", **fields: Any) -> TurnResult:
    r = TurnResult("s", "x", event, kind, "words", 0.0, 1.0, kind in ("turn", "barge_in"))
    for key, value in fields.items():
        setattr(r, key, value)
    return r


def scenario(*events: dict[str, Any], **fields: Any) -> Scenario:
    return Scenario.model_validate({"id": "x", "events": list(events), **fields})


def test_task_success_needs_every_verdict() -> None:
    s = scenario({"say": "book tuesday", "expect": {"keywords": ["tuesday"]}},
                 {"kind": "barge_in", "say": "stop"}, {"kind": "backchannel", "say": "mm"})
    good = CallMeasure([row(1, answered=True, reply="Tuesday it is."),
                        row(2, "barge_in", answered=True, barge_in_stop=0.4,
                            barge_in_honoured=True),
                        row(3, "backchannel", interrupted_agent=False)], 2, 0)
    assert judge_call(s, good) and all(r.passed for r in good.rows)
    for broken in ({"rows": 0, "reply": "Wednesday."}, {"rows": 1, "barge_in_honoured": False},
                   {"rows": 2, "interrupted_agent": True}, {"rows": 0, "answered": False}):
        measure = CallMeasure([row(1, answered=True, reply="Tuesday it is."),
                               row(2, "barge_in", answered=True, barge_in_stop=0.4,
                                   barge_in_honoured=True),
                               row(3, "backchannel", interrupted_agent=False)], 2, 0)
        target = measure.rows[int(broken.pop("rows"))]
        for key, value in broken.items():
            setattr(target, key, value)
        assert not judge_call(s, measure), broken
        assert target.passed is False


def test_expect_silence_fails_when_the_agent_speaks() -> None:
    s = scenario(expect_silence=True)
    assert judge_call(s, CallMeasure([], 0, 0))
    assert not judge_call(s, CallMeasure([], 1, 1))


def test_a_configured_judge_decides_rubrics(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []

    def strict(**kwargs: Any) -> tuple[bool, str]:
        seen.append(kwargs)
        return "sorry" in kwargs["reply"].lower(), "apologised?"

    module = types.ModuleType("fake_judge")
    module.strict = strict  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_judge", module)
    judge = load_judge(JudgeConfig(callable="fake_judge:strict", options={"model": "m"}))
    s = scenario({"say": "you broke it", "expect": {"rubric": "apologises"}})
    rude = CallMeasure([row(1, answered=True, reply="No.")], 1, 0)
    assert not judge_call(s, rude, judge, {"model": "m"})
    assert rude.rows[0].checks[0] == {"check": "rubric", "want": "apologises", "passed": False,
                                      "note": "apologised?"}
    assert seen[0]["model"] == "m" and seen[0]["dialogue"][0]["content"] == "words"
    with pytest.raises(ConfigError, match="cannot be loaded"):
        load_judge(JudgeConfig(callable="fake_judge:missing"))
