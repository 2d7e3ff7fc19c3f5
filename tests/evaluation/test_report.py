"""results.json, report.md and the plots, from a hand-made two-system result."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from cascade.evaluation.measure import TurnResult
from cascade.evaluation.outcomes import NO_JUDGE
from cascade.evaluation.plots import draw_all, median_turn, stage_segments
from cascade.evaluation.report import render_markdown, summarise, write_results
from cascade.evaluation.stats import METRICS, compare

PNG = b"\x89PNG\r\n\x1a\n"


def fake_results() -> dict[str, Any]:
    turns = []
    calls = []
    for system, slower in (("a", 0.0), ("b", 0.3)):
        for n, scenario in enumerate(("one", "two", "three", "four")):
            for event in (1, 2):
                row = TurnResult(system, scenario, event, "turn", "hello there", 0.5, 2.0, True,
                                 heard="hello there", reply="Hi.", system_turn=event,
                                 answered=True, missed=False, endpointing=0.3 + 0.01 * n,
                                 voice_to_voice=0.8 + slower + 0.05 * n + 0.01 * event,
                                 wer=0.0, passed=system == "a" or n % 2 == 0)
                row.marks = {"asr_final": 0.2, "end_of_turn": 0.3, "llm_first_token": 0.5,
                             "tts_first_audio": 0.7, "agent_audio": row.voice_to_voice or 0}
                turns.append(row.as_dict())
            calls.append({"system": system, "scenario": scenario, "success": n % 2 == 0
                          or system == "a", "cost": 0.01, "error": None})
    return {
        "created": "2026-01-01T00:00:00+00:00",
        "suite": {"name": "fake", "file": "suite.yaml", "sha256": "0" * 64},
        "run": {"seed": 0, "fast": True},
        "machine": {"machine": "x86_64", "cpus": 2, "python": "3.11"},
        "systems": {s: {"pipeline": f"{s}.yaml", "config_sha256": "f" * 64} for s in "ab"},
        "scenarios": {s: {"description": f"scenario {s}"} for s in ("one", "two", "three",
                                                                     "four")},
        "calls": calls, "turns": turns,
        "summary": {s: summarise(turns, calls, s) for s in "ab"},
        "comparisons": [c.as_dict() for c in compare(turns, calls, ["a", "b"], seed=0)],
    }


def test_report_md_has_every_section_and_a_row_per_metric() -> None:
    text = render_markdown(fake_results())
    for heading in ("# Evaluation: fake", "## Who wins", "## Per system",
                    "## Task success by scenario", "## Failed expectations",
                    "## How this was measured", "## Reproduce"):
        assert heading in text, heading
    for metric in METRICS:
        assert f"| {metric.name} ({metric.better} is better)" in text
    v2v = next(line for line in text.splitlines() if line.startswith("| voice_to_voice"))
    assert "**a**" in v2v and "+0.300 s" in v2v  # b is 0.3 s slower on every turn
    assert "| `one` | scenario one | ✓ 2/2 | ✓ 2/2 |" in text
    assert "| `two` | scenario two | ✓ 2/2 | ✗ 0/2 |" in text


def test_rubrics_the_judge_left_unjudged_are_counted_and_listed() -> None:
    results = fake_results()
    first, second = results["turns"][0], results["turns"][1]  # system a
    first["checks"] = [{"check": "rubric", "want": "polite", "passed": None,
                        "note": "judge openai-llm failed: ConnectError: refused"}]
    second["checks"] = [{"check": "rubric", "want": "polite", "passed": None,
                         "note": NO_JUDGE}]  # not the judge's fault
    results["summary"] = {s: summarise(results["turns"], results["calls"], s) for s in "ab"}
    assert results["summary"]["a"]["unjudged_rubrics"] == 1
    assert results["summary"]["b"]["unjudged_rubrics"] == 0
    text = render_markdown(results)
    section = text.split("## Unjudged rubrics", 1)[1].split("\n## ", 1)[0]
    assert "1 rubric check(s)" in section
    assert "| `a` | `one` #1 | 'polite' | judge openai-llm failed: ConnectError: refused |" \
        in section
    assert "## Unjudged rubrics" not in render_markdown(fake_results())


def test_results_json_round_trips_and_summaries_add_up(tmp_path: Path) -> None:
    results = fake_results()
    loaded = json.loads(write_results(results, tmp_path / "results.json").read_text())
    assert loaded["turns"] == results["turns"]
    summary = loaded["summary"]["b"]
    assert summary["calls"] == 4 and summary["successes"] == 2
    assert summary["cost_per_success"] == 0.04 / 2
    assert summary["metrics"]["voice_to_voice"]["n"] == 8


def test_plots_are_drawn_from_the_results_alone(tmp_path: Path) -> None:
    drawn = draw_all(fake_results(), tmp_path)
    assert set(drawn) == {"latency_cdf", "success_by_scenario", "median_turn"}
    for file in drawn.values():
        assert (tmp_path / file).read_bytes().startswith(PNG)


def test_the_median_turn_and_its_stage_segments() -> None:
    rows = [r for r in fake_results()["turns"] if r["system"] == "a"]
    middle = median_turn(rows)
    assert middle is not None
    values = sorted(r["voice_to_voice"] for r in rows)
    assert middle["voice_to_voice"] == values[(len(values) - 1) // 2]
    segments = stage_segments(middle)
    assert [s[0] for s in segments] == ["endpointing", "LLM first token", "first clause + TTS",
                                        "playout"]
    assert segments[0][1] == 0.0 and segments[-1][2] == middle["voice_to_voice"]
    assert all(a[2] == b[1] for a, b in itertools.pairwise(segments))
