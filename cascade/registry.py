"""Adapters found by name through the ``cascade.adapters`` entry-point group.

Built-in adapters are registered the same way as third-party ones (see
``pyproject.toml``), so a package adds a vendor without touching this repo. An
adapter is a ``Stage`` subclass carrying the class attributes of ``Adapter``.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from cascade.errors import AdapterNotFound, ConfigError, MissingDependency
from cascade.stage import Stage

GROUP = "cascade.adapters"
TURN_MODELS = "cascade.turn_models"
Kind = Literal["vad", "asr", "turn", "llm", "tts", "fused", "other"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an adapter can do, declared up front so pipelines can be checked."""

    streaming: bool = False
    word_timings: bool = False
    languages: tuple[str, ...] = ("en",)
    sample_rates: tuple[int, ...] = (16000,)


class NoOptions(BaseModel):
    """Options of an adapter that takes none."""

    model_config = ConfigDict(extra="forbid")


class Adapter(Stage):
    """A stage that can be named in a pipeline file."""

    kind: ClassVar[Kind] = "other"
    extra: ClassVar[str | None] = None
    requires: ClassVar[tuple[str, ...]] = ()
    capabilities: ClassVar[Capabilities] = Capabilities()
    Options: ClassVar[type[BaseModel]] = NoOptions

    @classmethod
    def missing(cls, options: BaseModel | None = None) -> list[str]:
        """Python modules or model files this adapter needs that are not present."""
        return [m for m in cls.requires if not _importable(m)]

    @classmethod
    def ensure_available(cls, name: str, options: BaseModel | None = None) -> None:
        gaps = cls.missing(options)
        if gaps:
            raise MissingDependency(f"adapter '{name}'", ", ".join(gaps), cls.extra)

    @classmethod
    def create(cls, options: BaseModel) -> Stage:
        """Build the stage for one conversation (shared models are loaded here, once)."""
        return cls(options)  # type: ignore[call-arg]

    @classmethod
    def preload(cls, options: BaseModel) -> None:
        """Load shared models ahead of the first conversation (optional)."""


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a dotted name whose parent package is missing
        return False


@functools.lru_cache(maxsize=1)
def _entry_points() -> dict[str, EntryPoint]:
    """Installed adapters (read once per process: scanning distributions is slow)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def adapter_names() -> list[str]:
    return sorted(_entry_points())


def load_adapter(name: str) -> type[Adapter]:
    """The adapter class registered as ``name``; a clear error if there is none."""
    found = _entry_points().get(name)
    if found is None:
        known = ", ".join(adapter_names()) or "none (is voice-cascade installed with pip?)"
        raise AdapterNotFound(
            f"no adapter named '{name}'; installed adapters: {known}. "
            "Fix the name, or install the package that provides it."
        )
    try:
        cls = found.load()
    except ImportError as exc:
        raise AdapterNotFound(
            f"adapter '{name}' ({found.value}) cannot be imported: {exc}. "
            "Reinstall the package that provides it."
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise AdapterNotFound(f"entry point '{name}' ({found.value}) is not a Cascade adapter")
    return cls


def missing_file(path: str | Path | None, what: str) -> list[str]:
    """For ``Adapter.missing``: [what] when no file is known, the path when it is absent."""
    if path is None:
        return [what]
    if not Path(path).exists():
        return [f"{path} (which does not exist)"]
    return []


def configured_file(path: str, adapter: str, option: str, what: str) -> str:
    """``path`` when it exists; else a ConfigError naming the adapter, option and path."""
    if not Path(path).exists():
        raise ConfigError(f"adapter '{adapter}': option '{option}' is {path}, which does not "
                          f"exist; point it at {what}")
    return path


class TurnModel(Protocol):
    """A semantic end-of-turn model: P(the caller finished) from the turn's audio."""

    def complete_probability(self, audio: Any) -> float: ...


def load_turn_model(name: str, model: str | None = None) -> TurnModel:
    """The end-of-turn model registered as ``name`` (group ``cascade.turn_models``)."""
    found = {ep.name: ep for ep in entry_points(group=TURN_MODELS)}.get(name)
    if found is None:
        known = ", ".join(sorted(ep.name for ep in entry_points(group=TURN_MODELS)))
        raise AdapterNotFound(f"no end-of-turn model named '{name}' (installed: {known})")
    cls = found.load()
    loaded: TurnModel = cls(model) if model else cls()
    return loaded

