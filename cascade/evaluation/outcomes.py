"""Did the agent do what the scenario expected? Per-event verdicts and task success.

Checks run on what the caller *heard* of the reply (the ``agent_speech`` text),
normalised: lower case, punctuation dropped, number words turned into digits
and runs of digits joined ("four five two one", "4 5 2 1" and "4521" all read
"4521"). A verdict is:

* turn / barge_in - a reply was played (or, with ``expect.reply: false``, none
  was), every given check holds, and a barge-in that landed on the agent's
  speech stopped it;
* backchannel / noise - it did not interrupt the agent (a reply it provoked
  counts as a spurious reply of the turn it fell in).

A scenario's task succeeds when every verdict passed (and, with
``expect_silence``, the agent never spoke). ``expect.rubric`` goes to the
suite's judge (``JudgeConfig``) when there is one; without a judge the check is
recorded as skipped and does not count.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from cascade.errors import ConfigError
from cascade.evaluation.measure import CallMeasure, TurnResult
from cascade.evaluation.scenarios import Event, Expect, JudgeConfig, Scenario

UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen")
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
        "eighty": 80, "ninety": 90}
_TOKEN = re.compile(r"[a-z0-9']+")

Judge = Callable[..., Any]
NO_JUDGE = "skipped: no judge configured"
"""The note of a rubric check when the suite has no judge (not the judge's failure)."""


def normalise(text: str) -> str:
    """Lower case, words only, number words as digits, digit runs joined."""
    words = _TOKEN.findall(text.lower().replace("-", " "))
    out: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word in TENS:
            value = TENS[word]
            following = words[index + 1] if index + 1 < len(words) else ""
            if following in UNITS[1:10]:
                value += UNITS.index(following)
                index += 1
            word = str(value)
        elif word in UNITS:
            word = str(UNITS.index(word))
        if word.isdigit() and out and out[-1].isdigit():
            out[-1] += word
        else:
            out.append(word)
        index += 1
    return " ".join(out)


def contains(text: str, phrase: str) -> bool:
    """``phrase`` appears in ``text`` as whole words, after normalising both."""
    wanted = normalise(phrase)
    return bool(wanted) and f" {wanted} " in f" {normalise(text)} "


def load_judge(config: JudgeConfig | None) -> Judge | None:
    if config is None:
        return None
    if config.llm is not None:
        from cascade.evaluation.judge import LLMJudge

        return LLMJudge(config.llm, config.options)
    assert config.callable is not None
    module, _, name = config.callable.partition(":")
    try:
        found: Judge = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"judge.callable '{config.callable}' cannot be loaded: {exc}") from None
    return found


def run_checks(expect: Expect, reply: str, dialogue: list[dict[str, str]],
               judge: Judge | None, judge_options: dict[str, Any]) -> list[dict[str, Any]]:
    """Each configured check on ``reply``: name, what was wanted, passed (None: skipped)."""
    checks: list[dict[str, Any]] = []
    if expect.regex is not None:
        found = re.search(expect.regex, reply, re.IGNORECASE) is not None
        checks.append({"check": "regex", "want": expect.regex, "passed": found})
    for keyword in expect.keywords:
        checks.append({"check": "keyword", "want": keyword, "passed": contains(reply, keyword)})
    if expect.any_of:
        checks.append({"check": "any_of", "want": expect.any_of,
                       "passed": any(contains(reply, k) for k in expect.any_of)})
    if expect.fact is not None:
        checks.append({"check": "fact", "want": expect.fact,
                       "passed": contains(reply, expect.fact)})
    if expect.rubric is not None:
        checks.append(_judged(expect.rubric, reply, dialogue, judge, judge_options))
    return checks


def _judged(rubric: str, reply: str, dialogue: list[dict[str, str]], judge: Judge | None,
            options: dict[str, Any]) -> dict[str, Any]:
    if judge is None:
        return {"check": "rubric", "want": rubric, "passed": None,
                "note": NO_JUDGE}
    answer = judge(rubric=rubric, reply=reply, dialogue=dialogue, **options)
    verdict, reason = answer if isinstance(answer, tuple) else (answer, "")
    return {"check": "rubric", "want": rubric,
            "passed": None if verdict is None else bool(verdict), "note": str(reason)}


def verdict(row: TurnResult, event: Event) -> bool:
    """Pass/fail of one event from its measurements and checks."""
    if not event.takes_turn:
        return not row.interrupted_agent
    if row.answered != row.expects_reply:
        return False
    if row.barge_in_stop is not None and not row.barge_in_honoured:
        return False
    return all(c["passed"] is not False for c in row.checks)


def judge_call(scenario: Scenario, measure: CallMeasure, judge: Judge | None = None,
               judge_options: dict[str, Any] | None = None) -> bool:
    """Fill every row's checks and verdict; return the scenario's task success."""
    dialogue: list[dict[str, str]] = []
    for row, event in zip(measure.rows, scenario.events, strict=True):
        if event.takes_turn:
            dialogue.append({"role": "user", "content": row.text})
            if row.answered:
                row.checks = run_checks(event.expect, row.reply, list(dialogue), judge,
                                        judge_options or {})
                dialogue.append({"role": "assistant", "content": row.reply})
        row.passed = verdict(row, event)
    success = all(row.passed for row in measure.rows)
    if scenario.expect_silence and measure.agent_replies:
        success = False
    return success
