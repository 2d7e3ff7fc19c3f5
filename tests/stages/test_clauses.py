"""ClauseSplitter: the first clause is ready as soon as it can be spoken."""

from __future__ import annotations

from cascade.stages.clauses import ClauseSplitter


def feed_all(deltas: list[str], min_words: int = 4) -> list[str]:
    splitter = ClauseSplitter(min_words)
    out = [clause for delta in deltas for clause in splitter.feed(delta)]
    rest = splitter.flush()
    return out + ([rest] if rest else [])


def test_sentences_split_as_tokens_stream() -> None:
    splitter = ClauseSplitter()
    assert splitter.feed("Sure") == []
    assert splitter.feed(" thing.") == []  # could still be "thing.com"
    assert splitter.feed(" It") == ["Sure thing."]
    assert splitter.flush() == "It"


def test_long_clause_splits_at_comma_but_short_one_waits() -> None:
    assert feed_all(["Yes, ", "we open at nine in the morning, ", "and close at six."]) == [
        "Yes, we open at nine in the morning,", "and close at six."]


def test_decimals_and_abbreviations_do_not_split() -> None:
    assert feed_all(["It costs 3.50 dollars. ", "Ask Dr. Smith about it."]) == [
        "It costs 3.50 dollars.", "Ask Dr. Smith about it."]


def test_question_and_exclamation_marks() -> None:
    assert feed_all(["Really? ", "Great! ", "Bye"]) == ["Really?", "Great!", "Bye"]
