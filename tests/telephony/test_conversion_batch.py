"""Line audio converted together once per event-loop pass, in each call's order."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

from cascade.frames import PCM
from cascade.telephony.conversion_batch import ConversionBatch
from cascade.telephony.resampler import resampler


def _chunks(count: int, seed: int) -> list[PCM]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, 4000, 160)).astype(np.int16) for _ in range(count)]


async def test_a_pass_of_calls_converts_together_and_matches_one_by_one() -> None:
    calls = 6
    chunks = [_chunks(3, seed) for seed in range(calls)]
    batched = [resampler(8000, 16000) for _ in range(calls)]
    alone = [resampler(8000, 16000) for _ in range(calls)]
    batch = ConversionBatch()
    got: list[list[PCM]] = [[] for _ in range(calls)]
    for step in range(3):
        for call in range(calls):
            batch.add(batched[call], chunks[call][step], got[call].append)
        assert len(batch) == calls and not any(len(g) > step for g in got)  # waiting
        await asyncio.sleep(0)  # the next pass runs them
        assert len(batch) == 0
    for call in range(calls):
        want = [alone[call].process(c) for c in chunks[call]]
        for g, w in zip(got[call], want, strict=True):
            assert len(g) == 320 and np.abs(g.astype(np.int32) - w).max() <= 1


async def test_order_per_call_holds_for_repeats_deferred_actions_and_flushes() -> None:
    up = resampler(8000, 16000)
    reference = resampler(8000, 16000)
    batch = ConversionBatch()
    events: list[str] = []
    first, second = _chunks(2, 1)
    batch.defer(lambda: events.append("nothing waits: at once"))
    assert events == ["nothing waits: at once"]
    batch.add(up, first, lambda pcm: events.append("first"))
    batch.defer(lambda: events.append("mark after first"))
    batch.add(up, second, lambda pcm: events.append("second"))  # same filter: flushes
    assert events[1:] == ["first", "mark after first"]
    batch.flush()
    assert events[3:] == ["second"]
    reference.process(first)
    reference.process(second)
    assert len(batch) == 0
    assert isinstance(up, type(reference))
    assert np.array_equal(up.history, reference.history)  # both chunks ran, in order


async def test_one_failing_delivery_does_not_cost_the_others(
        caplog: pytest.LogCaptureFixture) -> None:
    batch = ConversionBatch()
    delivered: list[int] = []

    def broken(pcm: PCM) -> None:
        raise RuntimeError("this call's conversation is gone")

    for index, chunk in enumerate(_chunks(5, 2)):
        target = broken if index == 2 else (lambda pcm, i=index: delivered.append(i))
        batch.add(resampler(8000, 16000), chunk, target)
    with caplog.at_level(logging.ERROR, "cascade.telephony"):
        batch.flush()
    assert delivered == [0, 1, 3, 4]
    assert "delivering converted line audio failed" in caplog.text
