"""The suite YAML: events, pauses, defaults, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade.errors import ConfigError
from cascade.evaluation.scenarios import Event, load_suite, parse_suite
from tests.evaluation.harness import SUITE

STARTER = Path(__file__).resolve().parents[2] / "examples" / "eval" / "suite.yaml"


def test_pause_marks_split_the_words() -> None:
    event = Event(say="I want [1.5s] a pizza with [0.5 s] olives")
    assert event.pieces == [("I want", 1.5), ("a pizza with", 0.5), ("olives", 0.0)]
    assert event.text == "I want a pizza with olives"


def test_defaults_by_kind() -> None:
    assert Event(say="hi").expects_reply and Event(say="hi", kind="barge_in").expects_reply
    assert not Event(say="mm", kind="backchannel").expects_reply
    assert not Event(kind="noise").expects_reply
    assert Event(say="hi").gap(first=True, reply_wait=7.0) == 0.0
    assert Event(say="hi").gap(first=False, reply_wait=7.0) == 7.0
    assert Event(say="no", kind="barge_in").gap(first=False, reply_wait=7.0) == 2.5
    assert Event(say="hi", after=1.0).gap(first=False, reply_wait=7.0) == 1.0


@pytest.mark.parametrize(("change", "message"), [
    ({"scenarios": [{"id": "a", "events": [{"kind": "turn"}]}]}, "needs words"),
    ({"scenarios": [{"id": "a", "events": [{"say": "x", "expect": {"regex": "("}}]}]},
     "does not compile"),
    ({"scenarios": [{"id": "a"}, {"id": "a"}]}, "used twice"),
    ({"scenarios": [{"id": "a", "noise": {"type": "pink"}}]}, "exactly one"),
    ({"scenarios": [{"id": "a", "noise": {"snr_db": 5}}]}, "needs caller speech"),
    ({"scenarios": [{"id": "a", "evnts": []}]}, "scenarios.0.evnts"),
    ({"scenarios": []}, "scenarios"),
])
def test_mistakes_are_explained(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_suite({**SUITE, **change}, "suite.yaml")


def test_select_keeps_the_suite_order_and_rejects_unknown_ids() -> None:
    suite = parse_suite(SUITE)
    assert [s.id for s in suite.select(["silence", "book"]).scenarios] == ["book", "silence"]
    with pytest.raises(ConfigError, match="no scenario nope"):
        suite.select(["nope"])


def test_the_starter_suite_covers_what_it_promises() -> None:
    suite = load_suite(STARTER)
    assert len(suite.scenarios) >= 12
    kinds = {e.kind for s in suite.scenarios for e in s.events}
    assert kinds == {"turn", "barge_in", "backchannel", "noise"}
    assert any(s.channel == "telephone" for s in suite.scenarios)
    assert any(s.noise and s.noise.snr_db is not None for s in suite.scenarios)
    assert any(s.expect_silence for s in suite.scenarios)
    assert any(len(e.pieces) > 1 for s in suite.scenarios for e in s.events)
    long_turn = next(s for s in suite.scenarios if s.id == "long_turn")
    assert len(long_turn.events[0].text.split()) >= 90  # 30 s+ at ~2.7 words/s
