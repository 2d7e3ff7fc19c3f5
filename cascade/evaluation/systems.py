"""The systems under test: ``NAME=pipeline.yaml`` specs, their prices and config hashes.

A pipeline file may declare ``price_per_minute`` in any stage's options (fused
adapters have it as a real option; for the others it is taken out before the
pipeline is validated). What a minute means depends on the stage's kind:

==================  =============================================
kind                minutes billed
==================  =============================================
vad, asr, turn      caller audio (the whole track)
tts                 agent audio played
fused               caller audio + agent audio played
llm, other          the call (the whole track)
==================  =============================================
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cascade.config import PipelineConfig, parse_pipeline
from cascade.conversation import Pipeline
from cascade.errors import ConfigError
from cascade.pipelines import builtin_names, builtin_pipeline
from cascade.registry import load_adapter

PRICE = "price_per_minute"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(slots=True)
class System:
    """One pipeline under test, as named on the command line."""

    name: str
    source: str
    config: PipelineConfig
    prices: dict[str, float] = field(default_factory=dict)
    _pipeline: Pipeline | None = None

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            self._pipeline = Pipeline(self.config)
        return self._pipeline

    @property
    def config_sha256(self) -> str:
        """Hash of the validated pipeline and its prices (not of the file's formatting)."""
        blob = json.dumps({"pipeline": self.config.model_dump(mode="json"),
                           "prices": self.prices}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def cost(self, caller_seconds: float, agent_seconds: float) -> float:
        """What one call cost, from the declared prices (see the module docstring)."""
        total = 0.0
        for stage, price in self.prices.items():
            kind = load_adapter(self.config.stages[stage].adapter).kind
            if kind == "tts":
                seconds = agent_seconds
            elif kind == "fused":
                seconds = caller_seconds + agent_seconds
            else:
                seconds = caller_seconds
            total += price * seconds / 60.0
        return total


def split_spec(spec: str) -> tuple[str, str]:
    """``"a=cascade.yaml"`` -> ``("a", "cascade.yaml")``."""
    name, sep, path = spec.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise ConfigError(f"--system '{spec}': write it as NAME=pipeline.yaml "
                          "(for example a=cascade.yaml)")
    if not _NAME.match(name):
        raise ConfigError(f"--system '{spec}': the name '{name}' may only hold letters, "
                          "digits, '_', '.' and '-'")
    return name, path


def find_file(path: str, near: Path | None) -> Path:
    """The pipeline file: as given, else next to the suite, else a built-in pipeline."""
    candidates = [Path(path)]
    if near is not None and not Path(path).is_absolute():
        candidates.append(near / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if path in builtin_names():
        return builtin_pipeline(path)
    tried = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"pipeline '{path}': no such file (tried {tried}), and not a built-in "
                      f"pipeline ({', '.join(builtin_names())})")


def take_prices(data: dict[str, Any], source: str) -> dict[str, float]:
    """Read every stage's ``price_per_minute``; remove it where the adapter has no such option."""
    prices: dict[str, float] = {}
    stages = data.get("stages")
    if not isinstance(stages, dict):
        return prices
    for name, stage in stages.items():
        options = stage.get("options") if isinstance(stage, dict) else None
        if not isinstance(options, dict) or PRICE not in options:
            continue
        try:
            price = float(options[PRICE])
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: stages.{name}.options.{PRICE}: must be a number, "
                              f"got {options[PRICE]!r}") from None
        if price < 0:
            raise ConfigError(f"{source}: stages.{name}.options.{PRICE}: must be >= 0")
        prices[name] = price
        adapter = stage.get("adapter")
        if isinstance(adapter, str) and PRICE not in load_adapter(adapter).Options.model_fields:
            del options[PRICE]
    return prices


def load_system(spec: str, near: Path | None = None) -> System:
    """Parse ``NAME=pipeline.yaml`` and validate the pipeline (prices taken out)."""
    name, path = split_spec(spec)
    file = find_file(path, near)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{file}: cannot read pipeline ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: a pipeline must be a mapping with a 'stages' key")
    prices = take_prices(data, str(file))
    return System(name, str(file), parse_pipeline(data, str(file)), prices)


def load_systems(specs: list[str], near: Path | None = None) -> list[System]:
    if not specs:
        raise ConfigError("no system to evaluate: give --system NAME=pipeline.yaml "
                          "(twice to compare two)")
    systems = [load_system(spec, near) for spec in specs]
    names = [s.name for s in systems]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"--system name '{name}' is used twice; names must differ")
    return systems
