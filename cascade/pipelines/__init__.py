"""Pipeline files that ship with Cascade (``local``: the embedded default; ``scripted``)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

DEFAULT = "local"


def builtin_pipeline(name: str = DEFAULT) -> Path:
    """Path of a pipeline file shipped in this package."""
    return Path(str(files(__name__).joinpath(f"{name}.yaml")))


def builtin_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in files(__name__).iterdir()
                  if p.name.endswith(".yaml"))
