"""``NAME=pipeline.yaml`` specs, declared prices and config hashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade.errors import ConfigError
from cascade.evaluation.systems import load_system, load_systems
from tests.evaluation.harness import FUSED, SCRIPTED, write_yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "eval"


def test_prices_are_taken_out_of_options_that_do_not_have_them(tmp_path: Path) -> None:
    write_yaml(tmp_path / "scripted.yaml", SCRIPTED)
    system = load_system("a=scripted.yaml", near=tmp_path)
    assert system.prices == {"asr": 0.01, "tts": 0.02}
    assert "price_per_minute" not in system.config.stages["asr"].options
    fused = load_system(f"b={write_yaml(tmp_path / 'fused.yaml', FUSED)}")
    assert fused.prices == {"fused": 0.05}
    assert fused.config.stages["fused"].options["price_per_minute"] == 0.05  # a real option


def test_cost_bills_each_kind_its_own_minutes(tmp_path: Path) -> None:
    scripted = load_system(f"a={write_yaml(tmp_path / 's.yaml', SCRIPTED)}")
    fused = load_system(f"b={write_yaml(tmp_path / 'f.yaml', FUSED)}")
    # asr bills the caller's 120 s, tts the agent's 60 s; fused bills both
    assert scripted.cost(120.0, 60.0) == pytest.approx(0.01 * 2 + 0.02 * 1)
    assert fused.cost(120.0, 60.0) == pytest.approx(0.05 * 3)


def test_the_config_hash_follows_the_pipeline_not_the_file(tmp_path: Path) -> None:
    a = load_system(f"a={write_yaml(tmp_path / 'a.yaml', SCRIPTED)}")
    same = load_system(f"b={tmp_path / 'a.yaml'}")
    changed = {**SCRIPTED, "stages": {**SCRIPTED["stages"], "turn": {
        "adapter": "turn", "options": {"min_delay": 0.5}}}}
    other = load_system(f"c={write_yaml(tmp_path / 'c.yaml', changed)}")
    assert a.config_sha256 == same.config_sha256 != other.config_sha256


@pytest.mark.parametrize(("specs", "message"), [
    (["cascade.yaml"], "NAME=pipeline.yaml"),
    (["a b=scripted"], "may only hold"),
    (["a=nowhere.yaml"], "no such file"),
    (["a=scripted", "a=scripted"], "used twice"),
    ([], "no system"),
])
def test_bad_specs_are_explained(specs: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_systems(specs)


def test_the_starter_systems_load_next_to_the_suite() -> None:
    systems = load_systems(["a=cascade.yaml", "b=webrtc.yaml", "c=fused.yaml"], near=EXAMPLES)
    assert [s.config.name for s in systems] == ["cascade", "webrtc", "fused"]
    assert all(s.prices for s in systems)
    assert load_system("s=scripted").config.name == "scripted"  # a built-in name works too
