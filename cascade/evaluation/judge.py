"""An LLM judge for ``expect.rubric``: any LLM adapter grades a reply against a rubric.

In a suite file::

    judge:
      llm: openai-llm            # or llama-cpp, transformers-llm, fallback-llm, ...
      options: {base_url: "http://127.0.0.1:8080/v1", model: judge, temperature: 0}

The judge sees the dialogue so far, the agent's reply and the rubric, and must
answer ``PASS`` or ``FAIL`` on its first line, then why (``parse_verdict``). An
answer without one clear verdict, or a judge that fails, leaves the check
unjudged with the reason as its note: the report counts unjudged checks apart,
and a broken judge never throws away a finished run.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from cascade.clock import RealClock
from cascade.errors import ConfigError
from cascade.frames import Frame
from cascade.registry import load_adapter
from cascade.stage import StageContext
from cascade.stages.llm import LLMStage, Message
from cascade.tracing import Tracer

log = logging.getLogger("cascade.evaluation")

INSTRUCTIONS = (
    "You grade one reply of a voice agent against a rubric. Read the dialogue, the reply "
    "and the rubric. Answer PASS if the reply meets the rubric and FAIL if it does not: "
    "that word alone on the first line, then one short sentence saying why."
)
_LEADING = re.compile(r"^[\s*#>`_]*(?:verdict\s*[:=-]?\s*)?[*_`]*(pass|fail)(?:ed|es)?\b",
                      re.IGNORECASE)
_SHOUTED = re.compile(r"\b(PASS|FAIL)(?:ED|ES)?\b")


class JudgeUnanswered(Exception):
    """The judge answered without a verdict, or could not answer; the message says which."""


def parse_verdict(answer: str) -> tuple[bool, str]:
    """(passed, reason) from a judge's answer, read from its first non-empty line: the
    verdict it opens with (any case, after markdown or "Verdict:"), else the one PASS or
    FAIL written in capitals on it. Both, or neither, is no verdict."""
    lines = [line for line in answer.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    leading = _LEADING.match(first)
    found = [(m.group(1), m.end()) for m in _SHOUTED.finditer(first)]
    if leading is not None:
        found.insert(0, (leading.group(1).upper(), leading.end()))
    if len({word for word, _ in found}) != 1:
        shown = " ".join(answer.split())[:200] or "(nothing)"
        what = "both PASS and FAIL" if found else "no PASS or FAIL"
        raise JudgeUnanswered(f"{what} on the first line of the judge's answer: {shown!r}")
    word, end = found[0]
    reason = " ".join([first[end:], *lines[1:]]).split()
    return word == "PASS", " ".join(reason).lstrip(":.-–—* ")


def prompt(rubric: str, reply: str, dialogue: list[dict[str, str]]) -> list[Message]:
    """The messages the judge gets."""
    lines = [f"{turn['role']}: {turn['content']}" for turn in dialogue]
    told = "\n".join(lines) if lines else "(the reply opens the conversation)"
    return [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": f"Dialogue so far:\n{told}\n\nThe agent's reply:\n"
                                    f"{reply}\n\nRubric: {rubric}\n\nPASS or FAIL?"},
    ]


async def _dropped(frame: Frame) -> None:
    """What the judge's LLM stage pushes (a greeting, say) goes nowhere."""


class LLMJudge:
    """Grades rubrics with the LLM adapter ``adapter`` built from ``options``."""

    def __init__(self, adapter: str, options: dict[str, Any]) -> None:
        self.adapter = adapter
        cls = load_adapter(adapter)
        if cls.kind != "llm":
            raise ConfigError(f"judge.llm '{adapter}' is a {cls.kind} adapter; name an LLM "
                              "adapter (e.g. openai-llm, llama-cpp)")
        try:
            self.options = cls.Options.model_validate(options)
        except ValueError as exc:
            raise ConfigError(f"judge.options for '{adapter}': {exc}") from None
        cls.ensure_available(adapter, self.options)
        self._cls = cls

    def __call__(self, *, rubric: str, reply: str, dialogue: list[dict[str, str]]
                 ) -> tuple[bool | None, str]:
        """(passed, reason); passed is None when the judge gave no verdict."""
        try:
            answer = RealClock().run(self.ask(prompt(rubric, reply, dialogue)))
            return parse_verdict(answer)
        except JudgeUnanswered as exc:
            log.warning("judge %s: %s", self.adapter, exc)
            return None, str(exc)
        except Exception as exc:  # a failing judge must not cost the finished run
            log.warning("judge %s failed: %s: %s", self.adapter, type(exc).__name__, exc)
            return None, f"judge {self.adapter} failed: {type(exc).__name__}: {exc}"

    async def ask(self, messages: list[Message]) -> str:
        """The judge LLM's whole answer to ``messages``."""
        stage = self._cls.create(self.options)
        assert isinstance(stage, LLMStage)
        clock = RealClock()
        stage.bind("judge", StageContext(conversation="judge", clock=clock,
                                         tracer=Tracer("judge", clock), sample_rate=16000,
                                         log=log), _dropped)
        await stage.start()
        try:
            return "".join([piece async for piece in stage.stream(messages)])
        finally:
            await stage.stop()
