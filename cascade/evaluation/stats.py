"""Paired comparison of systems: per-turn differences, bootstrap intervals, a verdict.

Every system heard the same caller turns, so system B's number for a turn is
compared with system A's number for *the same turn*: the difference ``B - A``
per pair removes what the turns themselves vary by (a long question, a noisy
room) and leaves what the systems do. For each metric:

* ``difference`` - mean of the paired differences (other minus baseline);
* ``ci`` - percentile bootstrap interval of that mean (pairs resampled with
  replacement, ``resamples`` times, seeded by the run seed and metric name);
* ``p_value`` - two-sided sign-flip permutation test of "no difference";
* ``significant`` - the interval excludes 0 *and* p < 1 - level (with few pairs
  the percentile bootstrap is too narrow; the permutation test is exact and
  keeps it honest: five pairs can never reach p < 0.05); the ``winner`` is then
  the system on the better side (lower latency, higher success, ...), else nobody.

Turn metrics pair on (scenario, event); call metrics (task success, cost) pair
on the scenario. A pair counts only when both systems have a value. Turn
metrics are paired over caller turns (turn, barge_in) except ``passed``, which
also covers the verdicts of backchannels and noise bursts.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Better = Literal["lower", "higher"]
Floats = npt.NDArray[np.float64]
MIN_PAIRS = 2


@dataclass(frozen=True, slots=True)
class Metric:
    """A compared quantity: where its values live and which way is better."""

    name: str
    unit: str
    better: Better
    level: Literal["turn", "call"]
    description: str
    every_event: bool = False
    """Pair over every caller event, not only turns and barge-ins."""


METRICS = (
    Metric("voice_to_voice", "s", "lower", "turn", "end of caller speech -> first agent audio"),
    Metric("endpointing", "s", "lower", "turn", "end of caller speech -> end-of-turn decision"),
    Metric("barge_in_stop", "s", "lower", "turn", "barge-in onset -> agent audio stops"),
    Metric("missed", "rate", "lower", "turn", "caller turns that got no reply"),
    Metric("false_interruptions", "count", "lower", "turn",
           "agent stopped with no caller turn being spoken"),
    Metric("early_endpoints", "count", "lower", "turn", "turn ended while the caller was "
           "mid-turn"),
    Metric("spurious_replies", "count", "lower", "turn", "replies answering no caller turn"),
    Metric("talk_over", "s", "lower", "turn", "agent audio over caller sound"),
    Metric("wer", "ratio", "lower", "turn", "word error rate of the caller's words"),
    Metric("passed", "rate", "higher", "turn", "events whose expected outcome held",
           every_event=True),
    Metric("success", "rate", "higher", "call", "scenarios whose task succeeded"),
    Metric("cost", "$", "lower", "call", "cost of the call from declared prices"),
)
TURN_KINDS = ("turn", "barge_in")


@dataclass(slots=True)
class Comparison:
    """``other`` against ``baseline`` on one metric."""

    metric: str
    unit: str
    better: Better
    baseline: str
    other: str
    n: int
    baseline_mean: float | None = None
    other_mean: float | None = None
    difference: float | None = None
    relative: float | None = None
    ci: tuple[float, float] | None = None
    level: float = 0.95
    p_value: float | None = None
    significant: bool = False
    winner: str | None = None
    pairs: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = None if self.ci is None else list(self.ci)
        return out


def metric_rng(seed: int, *names: str) -> np.random.Generator:
    """A generator fixed by the seed and the names (adding a metric moves no other)."""
    return np.random.default_rng([seed, *(zlib.crc32(n.encode()) for n in names)])


def bootstrap_ci(differences: Sequence[float], rng: np.random.Generator,
                 resamples: int = 10_000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``differences``."""
    values: Floats = np.asarray(differences, dtype=np.float64)
    if len(values) == 0:
        raise ValueError("bootstrap of no values")
    picks = rng.integers(0, len(values), size=(resamples, len(values)))
    means = values[picks].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def sign_flip_p(differences: Sequence[float], rng: np.random.Generator,
                resamples: int = 10_000) -> float:
    """Two-sided p-value of "mean difference is 0" by random sign flips of the pairs."""
    values: Floats = np.asarray(differences, dtype=np.float64)
    observed = abs(float(values.mean()))
    signs = rng.choice(np.array([-1.0, 1.0]), size=(resamples, len(values)))
    flipped = np.abs((signs * values).mean(axis=1))
    return float((1 + np.count_nonzero(flipped >= observed - 1e-12)) / (resamples + 1))


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    return float(value)


def paired(rows: Iterable[Mapping[str, Any]], metric: Metric, baseline: str,
           other: str) -> list[tuple[tuple[Any, ...], float, float]]:
    """(key, baseline value, other value) for every unit both systems have a value for."""
    values: dict[str, dict[tuple[Any, ...], float]] = {baseline: {}, other: {}}
    for row in rows:
        if row["system"] not in values:
            continue
        if metric.level == "turn":
            if row.get("kind") not in TURN_KINDS and not metric.every_event:
                continue
            key: tuple[Any, ...] = (row["scenario"], row["event"])
        else:
            key = (row["scenario"],)
        value = _number(row.get(metric.name))
        if value is not None:
            values[row["system"]][key] = value
    shared = sorted(set(values[baseline]) & set(values[other]))
    return [(k, values[baseline][k], values[other][k]) for k in shared]


def compare_metric(metric: Metric, pairs: list[tuple[tuple[Any, ...], float, float]],
                   baseline: str, other: str, seed: int, resamples: int = 10_000,
                   level: float = 0.95) -> Comparison:
    """The paired statistics of one metric for one pair of systems."""
    result = Comparison(metric.name, metric.unit, metric.better, baseline, other, len(pairs),
                        level=level)
    result.pairs = [{"key": list(k), baseline: a, other: b} for k, a, b in pairs]
    if not pairs:
        return result
    a = np.array([p[1] for p in pairs])
    b = np.array([p[2] for p in pairs])
    differences = b - a
    result.baseline_mean, result.other_mean = float(a.mean()), float(b.mean())
    result.difference = float(differences.mean())
    if result.baseline_mean:
        result.relative = result.difference / abs(result.baseline_mean)
    if len(pairs) < MIN_PAIRS:
        return result
    rng = metric_rng(seed, metric.name, baseline, other)
    result.ci = bootstrap_ci(differences, rng, resamples, level)
    result.p_value = sign_flip_p(differences, rng, resamples)
    low, high = result.ci
    result.significant = (low > 0.0 or high < 0.0) and result.p_value < 1.0 - level
    if result.significant:
        other_better = (result.difference < 0) == (metric.better == "lower")
        result.winner = other if other_better else baseline
    return result


def compare(turn_rows: Sequence[Mapping[str, Any]], call_rows: Sequence[Mapping[str, Any]],
            systems: Sequence[str], seed: int, resamples: int = 10_000,
            level: float = 0.95) -> list[Comparison]:
    """Every metric, every other system against the first (the baseline)."""
    out = []
    baseline = systems[0]
    for other in systems[1:]:
        for metric in METRICS:
            rows = turn_rows if metric.level == "turn" else call_rows
            pairs = paired(rows, metric, baseline, other)
            out.append(compare_metric(metric, pairs, baseline, other, seed, resamples, level))
    return out
