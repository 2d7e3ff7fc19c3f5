"""`cascade eval` end to end on model-free systems and the virtual clock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from cascade.cli import app
from cascade.evaluation.command import run_evaluation
from cascade.evaluation.stats import METRICS, metric_rng
from tests.evaluation.harness import model_free_files

runner = CliRunner()


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("eval")
    suite, _, _ = model_free_files(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CASCADE_CACHE", str(folder / "cache"))
        result = runner.invoke(app, ["eval", str(suite), "--system", "a=scripted.yaml",
                                     "--system", "b=fused.yaml", "--out", str(folder / "out"),
                                     "--fast", "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert "paired comparison" in result.output
    out = folder / "out"
    return out, json.loads((out / "results.json").read_text())


def test_results_json_holds_every_call_turn_and_provenance(
        evaluated: tuple[Path, dict[str, Any]]) -> None:
    out, results = evaluated
    assert results["schema"] == "cascade-eval/1"
    assert results["run"] == {"seed": 7, "fast": True, "clock": "virtual", "resamples": 10000,
                              "level": 0.95}
    assert set(results["systems"]) == {"a", "b"}
    for system in results["systems"].values():
        assert len(system["config_sha256"]) == 64 and system["prices"]
    assert {"python", "cpus", "platform"} <= set(results["machine"])
    assert "voice-cascade" in results["packages"] and "numpy" in results["packages"]
    scenarios = results["scenarios"]
    assert list(scenarios) == ["book", "pause", "barge", "silence"]
    assert len(results["calls"]) == 8 and not any(c["error"] for c in results["calls"])
    for call in results["calls"]:  # both systems heard the same bytes
        assert call["input_sha256"] == scenarios[call["scenario"]]["track_sha256"]
        assert (out / call["trace"]).exists() and (out / call["audio"]).exists()
    events = sum(len(s["events"]) for s in scenarios.values())
    assert len(results["turns"]) == 2 * events
    for turn in results["turns"]:
        for metric in METRICS:
            if metric.level == "turn":
                assert metric.name in turn
    for file in ("report.md", "latency_cdf.png", "success_by_scenario.png", "median_turn.png"):
        assert (out / file).stat().st_size > 0


def test_the_calls_behave_as_the_systems_do(evaluated: tuple[Path, dict[str, Any]]) -> None:
    _, results = evaluated
    turns = {(t["system"], t["scenario"], t["event"]): t for t in results["turns"]}
    calls = {(c["system"], c["scenario"]): c for c in results["calls"]}
    # the scripted cascade echoes the caller's words; the tone model does not
    assert turns["a", "book", 1]["passed"] and not turns["b", "book", 1]["passed"]
    assert turns["a", "book", 1]["heard"] == "book me for tuesday"
    assert turns["b", "book", 1]["heard"] is None and turns["b", "book", 1]["wer"] is None
    for system in "ab":
        barge = turns[system, "barge", 2]
        assert barge["agent_speaking_at_onset"] and barge["barge_in_honoured"]
        assert 0.5 < barge["barge_in_stop"] < 1.0
        assert turns[system, "pause", 1]["early_endpoints"] == 1  # a 1.5 s pause ends turns
        assert calls[system, "silence"]["success"] and calls[system, "silence"][
            "agent_replies"] == 0
    # the fused model answers sooner: it has no clause-by-clause TTS to wait for
    assert turns["b", "book", 1]["voice_to_voice"] < turns["a", "book", 1]["voice_to_voice"]


def test_paired_statistics_come_from_the_per_turn_rows(
        evaluated: tuple[Path, dict[str, Any]]) -> None:
    _, results = evaluated
    rows = results["turns"]
    by_key: dict[tuple[str, int], dict[str, float]] = {}
    for t in rows:
        if t["kind"] in ("turn", "barge_in") and t["voice_to_voice"] is not None:
            by_key.setdefault((t["scenario"], t["event"]), {})[t["system"]] = t["voice_to_voice"]
    pairs = sorted((k, v["a"], v["b"]) for k, v in by_key.items() if {"a", "b"} <= set(v))
    differences = np.array([b - a for _, a, b in pairs])
    comparison = next(c for c in results["comparisons"] if c["metric"] == "voice_to_voice")
    assert comparison["n"] == len(pairs) == 5
    assert comparison["difference"] == pytest.approx(differences.mean())
    assert comparison["baseline_mean"] == pytest.approx(np.mean([a for _, a, _ in pairs]))
    # the interval is the seeded bootstrap of exactly these differences
    rng = metric_rng(7, "voice_to_voice", "a", "b")
    picks = rng.integers(0, len(differences), size=(10_000, len(differences)))
    low, high = np.quantile(differences[picks].mean(axis=1), [0.025, 0.975])
    assert comparison["ci"] == pytest.approx([low, high])
    success = next(c for c in results["comparisons"] if c["metric"] == "success")
    by_system: dict[str, list[float]] = {"a": [], "b": []}
    for call in sorted(results["calls"], key=lambda c: c["scenario"]):
        by_system[call["system"]].append(float(call["success"]))
    assert success["difference"] == pytest.approx(np.mean(by_system["b"])
                                                  - np.mean(by_system["a"]))


def test_the_same_seed_reproduces_the_numbers(evaluated: tuple[Path, dict[str, Any]],
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    out, first = evaluated
    suite = out.parent / "suite.yaml"
    monkeypatch.setenv("CASCADE_CACHE", str(out.parent / "cache"))
    again = run_evaluation(suite, ["a=scripted.yaml", "b=fused.yaml"], tmp_path, fast=True,
                           seed=7, console=Console(quiet=True), only=["book", "barge"])
    keep = {"book", "barge"}
    assert again["turns"] == [t for t in first["turns"] if t["scenario"] in keep]
    for scenario in keep:
        assert again["scenarios"][scenario]["track_sha256"] == \
            first["scenarios"][scenario]["track_sha256"]
