"""Pipeline files: the graph as a YAML document, validated by pydantic.

A pipeline names one adapter per stage; swapping a vendor is a one-line change.
When ``edges`` is left out, stages named after their role (echo, vad, asr, turn,
llm, tts, fused) are joined as the standard cascade. Every error names the file, the
field and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cascade.errors import ConfigError
from cascade.registry import Adapter, load_adapter

STANDARD_EDGES = (
    ("echo", "vad"),
    ("vad", "asr"),
    ("vad", "turn"),
    ("asr", "turn"),
    ("turn", "llm"),
    ("llm", "tts"),
    ("vad", "fused"),
    ("turn", "fused"),
)


class StageConfig(BaseModel):
    """One stage of a pipeline: which adapter, with which options."""

    model_config = ConfigDict(extra="forbid")

    adapter: str = Field(description="adapter name, as listed by `cascade adapters`")
    options: dict[str, Any] = Field(default_factory=dict)
    remote: str | None = Field(None, description="run this stage on a worker behind this "
                               "MQTT broker (mqtt://host:1883); see `cascade worker`")


class PipelineConfig(BaseModel):
    """A whole pipeline: stages, how they connect, the audio rate inside."""

    model_config = ConfigDict(extra="forbid")

    name: str = "pipeline"
    sample_rate: int = Field(16000, gt=0, description="PCM rate inside the graph (Hz)")
    inbox_size: int = Field(64, ge=1, description="frames a stage may have queued")
    stages: dict[str, StageConfig] = Field(min_length=1)
    edges: list[str] | None = Field(None, description='"from -> to" pairs')

    @field_validator("stages")
    @classmethod
    def _playout_is_reserved(cls, stages: dict[str, StageConfig]) -> dict[str, StageConfig]:
        if "playout" in stages:
            raise ValueError("'playout' is the graph's output stage, added by Cascade; "
                             "give your stage another name")
        return stages

    @field_validator("edges")
    @classmethod
    def _edges_have_arrows(cls, edges: list[str] | None) -> list[str] | None:
        for edge in edges or []:
            if edge.count("->") != 1:
                raise ValueError(f'edge "{edge}" must look like "vad -> asr"')
        return edges

    def edge_pairs(self) -> list[tuple[str, str]]:
        if self.edges is not None:
            pairs = []
            for edge in self.edges:
                src, dst = (part.strip() for part in edge.split("->"))
                pairs.append((src, dst))
            return pairs
        return [(a, b) for a, b in STANDARD_EDGES if a in self.stages and b in self.stages]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(exclude_none=True), sort_keys=False)


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _explain(error: ValidationError, source: str, prefix: tuple[int | str, ...] = ()) -> str:
    lines = [f"{source}: invalid pipeline"]
    for item in error.errors():
        where = _where(prefix + tuple(item["loc"]))
        kind = item["type"]
        if kind == "missing":
            fix = "add this field"
        elif kind == "extra_forbidden":
            fix = "remove it or check its spelling"
        else:
            fix = f"got {item.get('input')!r}"
        lines.append(f"  {where}: {item['msg']} ({fix})")
    return "\n".join(lines)


def parse_pipeline(data: Any, source: str = "<pipeline>") -> PipelineConfig:
    """Validate a pipeline document and every stage's adapter options."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a pipeline must be a mapping with a 'stages' key")
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, source)) from None
    for name, stage in config.stages.items():
        try:
            adapter = load_adapter(stage.adapter)
        except ConfigError as exc:
            raise type(exc)(f"{source}: stages.{name}.adapter: {exc}") from None
        try:
            adapter.Options.model_validate(stage.options)
        except ValidationError as exc:
            raise ConfigError(_explain(exc, source, ("stages", name, "options"))) from None
    names = set(config.stages)
    for src, dst in config.edge_pairs():
        for end in (src, dst):
            if end not in names and end != "playout":
                raise ConfigError(
                    f"{source}: edges: '{src} -> {dst}' names no stage '{end}' "
                    f"(stages: {', '.join(config.stages)})"
                )
    return config


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read and validate a pipeline YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read pipeline file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_pipeline(data, str(path))


def resolve(config: PipelineConfig) -> dict[str, tuple[type[Adapter], BaseModel]]:
    """Adapter class and validated options of every stage (config already checked)."""
    out: dict[str, tuple[type[Adapter], BaseModel]] = {}
    for name, stage in config.stages.items():
        adapter = load_adapter(stage.adapter)
        out[name] = (adapter, adapter.Options.model_validate(stage.options))
    return out
