"""Pipeline files: loading, round trip, default edges, and errors that name file and field."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from cascade import ConfigError, load_pipeline, parse_pipeline
from cascade.config import STANDARD_EDGES
from cascade.errors import AdapterNotFound
from cascade.registry import adapter_names
from tests.conftest import PIPELINES

PIPELINE = """\
name: round-trip
sample_rate: 24000
inbox_size: 16
stages:
  vad: {adapter: energy-vad, options: {level_dbfs: -40.0, min_silence: 0.3}}
  asr: {adapter: scripted-asr, options: {script: ["hello", "bye"]}}
  turn: {adapter: turn, options: {min_delay: 0.5, backchannels: [yeah]}}
  llm: {adapter: echo-llm, options: {greeting: Hi there, first_token_delay: 0.1}}
  tts: {adapter: tone-tts}
edges:
  - vad -> asr
  - asr->turn
  - vad -> turn
  - turn -> llm
  - llm -> tts
  - tts -> playout
"""


def write(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path)
    return path, str(caught.value)


def minimal(**extra: Any) -> dict[str, Any]:
    return {"stages": {"vad": {"adapter": "energy-vad"}}, **extra}


# --- loading and round trip ---------------------------------------------------


def test_a_pipeline_file_survives_a_round_trip_through_yaml(tmp_path: Path) -> None:
    config = load_pipeline(write(tmp_path, PIPELINE))
    assert config.name == "round-trip"
    assert (config.sample_rate, config.inbox_size) == (24000, 16)
    assert config.stages["turn"].options == {"min_delay": 0.5, "backchannels": ["yeah"]}
    assert config.stages["tts"].options == {}
    assert ("asr", "turn") in config.edge_pairs()

    again = load_pipeline(write(tmp_path, config.to_yaml(), "again.yaml"))
    assert again == config
    assert again.to_yaml() == config.to_yaml()


def test_to_yaml_leaves_out_unset_edges(tmp_path: Path) -> None:
    config = parse_pipeline(minimal())
    assert "edges" not in config.to_yaml()
    assert load_pipeline(write(tmp_path, config.to_yaml())).edges is None


def test_the_bundled_scripted_pipeline_loads() -> None:
    config = load_pipeline(PIPELINES / "scripted.yaml")
    assert {n: s.adapter for n, s in config.stages.items()} == {
        "vad": "energy-vad", "asr": "scripted-asr", "turn": "turn", "llm": "echo-llm",
        "tts": "tone-tts"}


def test_role_named_stages_get_the_standard_edges() -> None:
    config = load_pipeline(PIPELINES / "scripted.yaml")
    assert config.edges is None
    assert config.edge_pairs() == [
        ("vad", "asr"), ("vad", "turn"), ("asr", "turn"), ("turn", "llm"), ("llm", "tts")]


def test_default_edges_join_only_the_stages_present() -> None:
    config = parse_pipeline({"stages": {"vad": {"adapter": "energy-vad"},
                                        "fused": {"adapter": "echo-llm"},
                                        "extra": {"adapter": "tone-tts"}}})
    assert config.edge_pairs() == [("vad", "fused")]
    assert all(pair in STANDARD_EDGES for pair in config.edge_pairs())


def test_explicit_edges_replace_the_defaults() -> None:
    config = parse_pipeline({
        "stages": {"vad": {"adapter": "energy-vad"}, "asr": {"adapter": "scripted-asr"}},
        "edges": [" vad->asr ", "asr -> playout"],
    })
    assert config.edge_pairs() == [("vad", "asr"), ("asr", "playout")]
    assert parse_pipeline(minimal(edges=[])).edge_pairs() == []


# --- errors -------------------------------------------------------------------


def test_an_unknown_adapter_names_file_field_and_the_installed_adapters(
        tmp_path: Path) -> None:
    path = write(tmp_path, """\
        stages:
          vad: {adapter: energy-vad}
          asr: {adapter: whisper-of-the-future}
        """)
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: stages.asr.adapter: ")
    assert "'whisper-of-the-future'" in message
    installed = re.search(r"installed adapters: ([^.]+)\.", message)
    assert installed is not None
    assert installed.group(1).split(", ") == adapter_names()
    assert {"energy-vad", "scripted-asr", "echo-llm", "tone-tts", "turn"} <= set(
        installed.group(1).split(", "))


def test_an_unknown_adapter_is_an_adapter_not_found_error() -> None:
    with pytest.raises(AdapterNotFound, match=r"stages\.vad\.adapter"):
        parse_pipeline({"stages": {"vad": {"adapter": "no-such-vad"}}})


def test_a_missing_stages_field_says_to_add_it(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "name: nothing here\n")
    assert message.startswith(f"{path}: invalid pipeline")
    assert re.search(r"^  stages: .*\(add this field\)$", message, re.M), message


def test_a_wrongly_typed_field_is_named_with_the_bad_value(tmp_path: Path) -> None:
    _, message = error_of(tmp_path, """\
        sample_rate: fast
        stages: {vad: {adapter: energy-vad}}
        """)
    assert re.search(r"^  sample_rate: .*integer.*'fast'", message, re.M), message
    _, message = error_of(tmp_path, "inbox_size: 0\nstages: {vad: {adapter: energy-vad}}\n")
    assert re.search(r"^  inbox_size: .*greater than or equal to 1", message, re.M), message


def test_an_unknown_top_level_field_is_named(tmp_path: Path) -> None:
    _, message = error_of(tmp_path, """\
        sampel_rate: 8000
        stages: {vad: {adapter: energy-vad}}
        """)
    assert re.search(r"^  sampel_rate: .*check its spelling", message, re.M), message


def test_bad_adapter_options_name_the_option_field(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, """\
        stages:
          turn: {adapter: turn, options: {min_delay: x, max_dealy: 2}}
        """)
    assert message.startswith(f"{path}: invalid pipeline")
    assert re.search(r"^  stages\.turn\.options\.min_delay: .*number.*'x'", message, re.M)
    assert re.search(r"^  stages\.turn\.options\.max_dealy: .*check its spelling", message,
                     re.M), message


def test_an_out_of_range_option_is_named(tmp_path: Path) -> None:
    _, message = error_of(tmp_path, """\
        stages:
          tts: {adapter: tone-tts, options: {level: 2.0}}
        """)
    assert re.search(r"^  stages\.tts\.options\.level: .*1", message, re.M), message


def test_a_misspelt_stage_field_is_named(tmp_path: Path) -> None:
    _, message = error_of(tmp_path, "stages:\n  vad: {adapter: energy-vad, option: {}}\n")
    assert re.search(r"^  stages\.vad\.option: .*check its spelling", message, re.M), message


@pytest.mark.parametrize("edge", ["vad asr", "vad -> asr -> turn", "vad => asr"])
def test_an_edge_without_one_arrow_is_refused(tmp_path: Path, edge: str) -> None:
    _, message = error_of(tmp_path, f"""\
        stages: {{vad: {{adapter: energy-vad}}, asr: {{adapter: scripted-asr}}}}
        edges: ["{edge}"]
        """)
    assert re.search(r"^  edges: .*must look like \"vad -> asr\"", message, re.M), message
    assert f'"{edge}"' in message


def test_an_edge_to_an_unknown_stage_names_it(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, """\
        stages: {vad: {adapter: energy-vad}, asr: {adapter: scripted-asr}}
        edges: [vad -> asr, asr -> tun]
        """)
    assert message == (f"{path}: edges: 'asr -> tun' names no stage 'tun' "
                       "(stages: vad, asr)")


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "stages: {vad: [adapter: energy-vad\n")
    assert message.startswith(f"{path}: not valid YAML")


@pytest.mark.parametrize("text", ["", "- vad\n- asr\n", "just words\n"])
def test_a_document_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str) -> None:
    path, message = error_of(tmp_path, text)
    assert message == f"{path}: a pipeline must be a mapping with a 'stages' key"


def test_a_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: cannot read pipeline file")):
        load_pipeline(path)


def test_parse_pipeline_names_its_source() -> None:
    with pytest.raises(ConfigError, match=r"^inline: invalid pipeline"):
        parse_pipeline({"stages": "vad"}, "inline")


@pytest.mark.parametrize("rate", [0, -16000])
def test_a_sample_rate_that_is_not_positive_is_refused(rate: int) -> None:
    with pytest.raises(ConfigError, match="sample_rate"):
        parse_pipeline(minimal(sample_rate=rate))
