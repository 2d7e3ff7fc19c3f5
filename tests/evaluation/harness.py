"""A model-free evaluation: tone voice, scripted cascade and tone-model fused system."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cascade.evaluation.scenarios import Suite, parse_suite
from cascade.evaluation.voices import Voice

TONE_VOICE: dict[str, Any] = {"adapter": "tone-tts", "options": {"first_byte_delay": 0.0}}

SUITE: dict[str, Any] = {
    "name": "model-free",
    "voice": TONE_VOICE,
    "reply_wait": 5.0,
    "tail": 6.0,
    "scenarios": [
        {"id": "book", "description": "two turns",
         "events": [{"say": "book me for tuesday", "expect": {"keywords": ["tuesday"]}},
                    {"say": "thanks a lot"}]},
        {"id": "pause", "description": "a pause mid-sentence",
         "events": [{"say": "my order is [1.5s] four five two one",
                     "expect": {"fact": "4521"}}]},
        {"id": "barge", "description": "barge-in then a backchannel",
         "events": [{"say": "tell me a long story please about dogs"},
                    {"kind": "barge_in", "after": 1.5, "say": "stop now please"},
                    {"kind": "backchannel", "after": 1.0, "say": "mm hmm"}]},
        {"id": "silence", "description": "nobody speaks", "expect_silence": True,
         "tail": 5.0, "noise": {"type": "pink", "level_dbfs": -60}},
    ],
}

SCRIPTED = {"name": "scripted", "stages": {
    "vad": {"adapter": "energy-vad"},
    "asr": {"adapter": "scripted-asr",
            "options": {"script": ["book me for tuesday", "thanks a lot"],
                        "price_per_minute": 0.01}},
    "turn": {"adapter": "turn"},
    "llm": {"adapter": "echo-llm"},
    "tts": {"adapter": "tone-tts", "options": {"price_per_minute": 0.02}},
}}

FUSED = {"name": "fused", "stages": {
    "vad": {"adapter": "energy-vad"},
    "turn": {"adapter": "turn", "options": {"require_transcript": False}},
    "fused": {"adapter": "local-fused", "options": {"price_per_minute": 0.05}},
}}


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def model_free_files(folder: Path) -> tuple[Path, Path, Path]:
    """suite.yaml, scripted.yaml and fused.yaml in ``folder``."""
    return (write_yaml(folder / "suite.yaml", SUITE),
            write_yaml(folder / "scripted.yaml", SCRIPTED),
            write_yaml(folder / "fused.yaml", FUSED))


def suite(**changes: Any) -> Suite:
    return parse_suite({**SUITE, **changes})


def tone_voice(cache: Path, rate: int = 16000) -> Voice:
    return Voice(suite().voice, rate, cache)
