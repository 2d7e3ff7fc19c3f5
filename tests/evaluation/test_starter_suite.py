"""A starter-suite scenario on the embedded local models (virtual clock)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from cascade.evaluation.command import run_evaluation
from tests.conftest import needs_models

pytestmark = needs_models
SUITE = Path(__file__).resolve().parents[2] / "examples" / "eval" / "suite.yaml"


def test_the_local_cascade_hears_a_caller_over_the_phone_line(tmp_path: Path) -> None:
    results = run_evaluation(SUITE, ["a=cascade.yaml", "b=fused.yaml"], tmp_path, fast=True,
                             seed=0, console=Console(quiet=True), only=["telephone_band"])
    assert not any(c["error"] for c in results["calls"])
    turns = {t["system"]: t for t in results["turns"]}
    cascade, fused = turns["a"], turns["b"]
    assert cascade["answered"] and fused["answered"]
    # the pieces heard across early ends of turn (at the caller's commas) add up
    assert cascade["wer"] is not None and cascade["wer"] <= 0.35, cascade["heard"]
    assert fused["wer"] is None  # the tone model reports no transcript
    # on the virtual clock the models take no time: the reply starts at the end of turn
    assert cascade["voice_to_voice"] == pytest.approx(cascade["endpointing"], abs=0.05)
    assert "| `telephone_band` |" in (tmp_path / "report.md").read_text()
