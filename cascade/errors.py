"""The one exception hierarchy of Cascade: every message says what, where and the fix."""

from __future__ import annotations


class CascadeError(Exception):
    """Base class of every error Cascade raises on purpose."""


class ConfigError(CascadeError):
    """A pipeline file or option is wrong; the message names the file, field and fix."""


class AdapterNotFound(ConfigError):
    """A pipeline names an adapter that no installed package provides."""


class MissingDependency(CascadeError):
    """An adapter's optional dependency or model file is not installed."""

    def __init__(self, adapter: str, what: str, extra: str | None) -> None:
        """``adapter`` names who needs it: "adapter 'piper'", "trace --png", ..."""
        hint = f"pip install 'voice-cascade[{extra}]'" if extra else f"install {what}"
        super().__init__(f"{adapter} needs {what}, which is not installed: {hint}")
        self.adapter = adapter
        self.what = what
        self.extra = extra


class AudioInputError(CascadeError):
    """An input recording cannot be used (unreadable, empty, silent)."""


class GraphError(CascadeError):
    """The stage graph is malformed (unknown stage in an edge, no entry, ...)."""
