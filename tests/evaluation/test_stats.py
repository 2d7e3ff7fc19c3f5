"""Paired statistics: bootstrap coverage, significance, seeded reproducibility."""

from __future__ import annotations

import numpy as np

from cascade.evaluation.stats import (
    METRICS,
    bootstrap_ci,
    compare,
    compare_metric,
    metric_rng,
    paired,
    sign_flip_p,
)

V2V = next(m for m in METRICS if m.name == "voice_to_voice")
SUCCESS = next(m for m in METRICS if m.name == "success")


def synthetic_turns(true_difference: float, n: int, noise: float, seed: int
                    ) -> list[dict[str, object]]:
    """Two systems on ``n`` shared turns: per-turn difficulty shared, b slower by the difference."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(0.5, 2.0, n)
    rows: list[dict[str, object]] = []
    for i in range(n):
        for system, shift in (("a", 0.0), ("b", true_difference)):
            rows.append({"system": system, "scenario": f"s{i // 3}", "event": i % 3 + 1,
                         "kind": "turn",
                         "voice_to_voice": difficulty[i] + shift + rng.normal(0, noise)})
    return rows


def test_bootstrap_ci_covers_the_true_mean_difference_in_most_experiments() -> None:
    covered = 0
    for experiment in range(100):
        rows = synthetic_turns(0.2, 40, 0.15, seed=experiment)
        pairs = paired(rows, V2V, "a", "b")
        differences = [b - a for _, a, b in pairs]
        low, high = bootstrap_ci(differences, metric_rng(experiment, "x"), resamples=2000)
        covered += low <= 0.2 <= high
    assert covered >= 88  # nominal 95%; percentile bootstrap runs a little narrow


def test_pairs_match_the_same_turn_of_both_systems() -> None:
    rows = synthetic_turns(0.3, 6, 0.0, seed=1)
    rows.append({"system": "a", "scenario": "extra", "event": 1, "kind": "turn",
                 "voice_to_voice": 9.0})  # b has no value here: not paired
    rows.append({"system": "b", "scenario": "s0", "event": 9, "kind": "backchannel",
                 "voice_to_voice": 9.0})  # not a caller turn
    pairs = paired(rows, V2V, "a", "b")
    assert len(pairs) == 6
    for _, a, b in pairs:
        assert abs((b - a) - 0.3) < 1e-9


def test_significance_flips_with_the_size_and_sign_of_the_effect() -> None:
    none = compare(synthetic_turns(0.0, 30, 0.1, seed=3), [], ["a", "b"], seed=0)
    small = compare(synthetic_turns(0.01, 30, 0.3, seed=3), [], ["a", "b"], seed=0)
    slower = compare(synthetic_turns(0.25, 30, 0.1, seed=3), [], ["a", "b"], seed=0)
    faster = compare(synthetic_turns(-0.25, 30, 0.1, seed=3), [], ["a", "b"], seed=0)

    def v2v(results: list) -> object:  # type: ignore[type-arg]
        return next(c for c in results if c.metric == "voice_to_voice")

    assert not v2v(none).significant and v2v(none).winner is None
    assert not v2v(small).significant
    assert v2v(slower).significant and v2v(slower).winner == "a"  # lower latency wins
    assert v2v(faster).significant and v2v(faster).winner == "b"
    assert v2v(slower).ci[0] > 0 and v2v(faster).ci[1] < 0
    assert v2v(slower).p_value < 0.01


def test_higher_is_better_metrics_pick_the_higher_system() -> None:
    calls = [{"system": s, "scenario": f"s{i}", "success": s == "b" or i % 5 == 0}
             for i in range(20) for s in ("a", "b")]
    result = compare_metric(SUCCESS, paired(calls, SUCCESS, "a", "b"), "a", "b", seed=0)
    assert result.difference is not None and result.difference > 0.7
    assert result.significant and result.winner == "b"


def test_five_identical_pairs_are_not_enough_for_significance() -> None:
    pairs = [((f"s{i}", 1), 1.0, 0.8) for i in range(5)]
    result = compare_metric(V2V, pairs, "a", "b", seed=0)
    assert result.ci == (-0.2, -0.2) or np.allclose(result.ci, (-0.2, -0.2))
    assert result.p_value is not None and result.p_value > 0.05  # 2/32 at best
    assert not result.significant
    more = compare_metric(V2V, pairs + [((f"t{i}", 1), 1.0, 0.8) for i in range(3)], "a",
                          "b", seed=0)
    assert more.significant and more.winner == "b"


def test_same_seed_same_numbers_other_seed_other_numbers() -> None:
    rows = synthetic_turns(0.1, 25, 0.2, seed=5)
    first = [c.as_dict() for c in compare(rows, [], ["a", "b"], seed=11)]
    again = [c.as_dict() for c in compare(rows, [], ["a", "b"], seed=11)]
    other = [c.as_dict() for c in compare(rows, [], ["a", "b"], seed=12)]
    assert first == again
    v2v = next(c for c in first if c["metric"] == "voice_to_voice")
    v2v_other = next(c for c in other if c["metric"] == "voice_to_voice")
    assert v2v["difference"] == v2v_other["difference"]  # the data, not the seed
    assert v2v["ci"] != v2v_other["ci"]


def test_sign_flip_p_is_one_for_no_difference_and_small_for_a_clear_one() -> None:
    rng = metric_rng(0, "p")
    assert sign_flip_p([0.0] * 10, rng, 2000) == 1.0
    assert sign_flip_p([0.5 + 0.01 * i for i in range(12)], rng, 2000) < 0.01


def test_metrics_without_pairs_are_reported_empty() -> None:
    [*_, cost] = compare([], [], ["a", "b"], seed=0)
    assert cost.metric == "cost" and cost.n == 0 and cost.ci is None and not cost.significant
