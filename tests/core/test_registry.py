"""Adapters by name: entry points, clear errors, missing optional dependencies."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from cascade import Adapter, AdapterNotFound, ConfigError, MissingDependency, load_adapter, registry
from cascade.adapters.scripted import EchoLLM, EnergyVAD, ScriptedASR, ToneTTS
from cascade.registry import GROUP, adapter_names, missing_file
from cascade.stages.turn import TurnController

BUILT_IN = {
    "energy-vad": EnergyVAD,
    "scripted-asr": ScriptedASR,
    "turn": TurnController,
    "echo-llm": EchoLLM,
    "tone-tts": ToneTTS,
}


class NeedsModule(Adapter):
    """A throwaway adapter whose engine is not installed."""

    requires = ("no_such_module_xyz", "json")
    extra = "local"


class NeedsTwo(Adapter):
    requires = ("no_such_module_xyz", "another_missing_module_xyz")


class NeedsDotted(Adapter):
    requires = ("no_such_package_xyz.engine",)
    extra = "local"


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, **targets: str) -> None:
    points = {name: EntryPoint(name=name, value=value, group=GROUP)
              for name, value in targets.items()}
    monkeypatch.setattr(registry, "_entry_points", lambda: points)


def test_built_in_adapters_are_found_through_entry_points() -> None:
    names = adapter_names()
    assert names == sorted(names)
    assert set(BUILT_IN) <= set(names)
    for name, cls in BUILT_IN.items():
        assert load_adapter(name) is cls
        assert issubclass(load_adapter(name), Adapter)


def test_built_in_adapters_declare_their_kind() -> None:
    kinds = {name: load_adapter(name).kind for name in BUILT_IN}
    assert kinds == {"energy-vad": "vad", "scripted-asr": "asr", "turn": "turn",
                     "echo-llm": "llm", "tone-tts": "tts"}


def test_an_unknown_adapter_lists_the_installed_ones() -> None:
    with pytest.raises(AdapterNotFound) as caught:
        load_adapter("energy-vda")
    message = str(caught.value)
    assert "no adapter named 'energy-vda'" in message
    assert f"installed adapters: {', '.join(adapter_names())}." in message
    assert "Fix the name" in message
    assert isinstance(caught.value, ConfigError)


def test_with_no_adapters_installed_the_error_says_how_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch)
    assert adapter_names() == []
    with pytest.raises(AdapterNotFound, match=r"installed adapters: none \(is voice-cascade"):
        load_adapter("energy-vad")


def test_an_entry_point_that_is_not_an_adapter_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, playout="cascade.playout:Playout", dumps="json:dumps")
    with pytest.raises(AdapterNotFound, match=r"'playout' \(cascade.playout:Playout\) is not"):
        load_adapter("playout")
    with pytest.raises(AdapterNotFound, match=r"'dumps'.*not a Cascade adapter"):
        load_adapter("dumps")


def test_an_entry_point_that_cannot_be_imported_is_a_config_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, broken="no_such_module_xyz.adapter:Broken")
    with pytest.raises(ConfigError, match="broken"):
        load_adapter("broken")


def test_missing_dependency_names_the_extra_to_install() -> None:
    assert NeedsModule.missing() == ["no_such_module_xyz"]
    with pytest.raises(MissingDependency) as caught:
        NeedsModule.ensure_available("needs-module")
    error = caught.value
    assert str(error) == ("adapter 'needs-module' needs no_such_module_xyz, which is not "
                          "installed: pip install 'voice-cascade[local]'")
    assert "needs-module" in error.adapter
    assert (error.what, error.extra) == ("no_such_module_xyz", "local")


def test_missing_dependency_without_an_extra_names_every_module() -> None:
    with pytest.raises(MissingDependency) as caught:
        NeedsTwo.ensure_available("needs-two")
    assert str(caught.value).endswith(
        "needs no_such_module_xyz, another_missing_module_xyz, which is not installed: "
        "install no_such_module_xyz, another_missing_module_xyz")


def test_a_missing_dotted_module_is_a_missing_dependency() -> None:
    with pytest.raises(MissingDependency, match=r"voice-cascade\[local\]"):
        NeedsDotted.ensure_available("needs-dotted")


def test_an_adapter_whose_needs_are_met_is_available() -> None:
    for cls in BUILT_IN.values():
        assert cls.missing() == []
        cls.ensure_available(cls.__name__)


def test_missing_file_reports_unset_and_absent_paths(tmp_path: Path) -> None:
    present = tmp_path / "model.onnx"
    present.write_bytes(b"\0")
    assert missing_file(None, "the model") == ["the model"]
    absent = tmp_path / "absent.onnx"
    assert missing_file(absent, "the model") == [f"{absent} (which does not exist)"]
    assert missing_file(present, "the model") == []
    assert missing_file(str(present), "the model") == []
