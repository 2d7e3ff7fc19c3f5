"""API keys for network adapters: read from the environment or a secrets file, never shown.

A key is looked up by name (``OPENAI_API_KEY``): first in the process
environment, then in the file named by ``CASCADE_SECRETS_FILE`` (``NAME=value``
lines, ``#`` comments, or one JSON object). The value comes back wrapped in
``Secret``, whose ``repr``/``str`` are a mask, so a key that reaches a log line,
a span attribute or an exception message shows up as ``***`` instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cascade.errors import ConfigError

SECRETS_FILE = "CASCADE_SECRETS_FILE"
MASK = "***"


class Secret:
    """A value that is only readable through ``reveal()``; everything else sees a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled or copied out of the process")


def _from_file(path: Path, name: str) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{SECRETS_FILE} is {path}, which cannot be read ({exc.strerror}); "
                          "point it at a readable NAME=value file") from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise ConfigError(f"secrets file {path} is not valid JSON; write one object "
                              "of NAME: value, or NAME=value lines") from None
        value = data.get(name) if isinstance(data, dict) else None
        return value if isinstance(value, str) else None
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#") and key.strip() == name:
            return value.strip().strip("'\"")
    return None


def find_secret(name: str) -> Secret | None:
    """The secret called ``name`` from the environment or the secrets file, if set."""
    value = os.environ.get(name)
    if not value:
        file = os.environ.get(SECRETS_FILE)
        value = _from_file(Path(file), name) if file else None
    return Secret(value) if value else None


def require_secret(name: str, adapter: str) -> Secret:
    """``find_secret`` or a ConfigError that says where the key was looked for."""
    found = find_secret(name)
    if found is None:
        where = f"the environment or {os.environ[SECRETS_FILE]}" if os.environ.get(
            SECRETS_FILE) else f"the environment (or a file named by {SECRETS_FILE})"
        raise ConfigError(f"adapter '{adapter}': no API key; set {name} in {where}, "
                          "or set option api_key_env to the variable that holds it")
    return found
