"""The caller's voice: text to speech through any TTS adapter, cached on disk.

Lines are spoken by a TTS adapter from the registry (Piper by default; the
model-free ``tone-tts`` for tests), run outside any graph on a virtual clock,
resampled to the suite's rate and trimmed to the sound, so an event's start and
end on the caller track are where the speech really is. Each line is cached
under its content hash (adapter, options, text, rate), so a suite is
synthesised once and every later run hears the same samples.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from cascade.audio import resample
from cascade.clock import VirtualClock
from cascade.errors import ConfigError
from cascade.evaluation.scenarios import VoiceConfig
from cascade.frames import PCM, Frame
from cascade.registry import load_adapter
from cascade.stage import Stage, StageContext
from cascade.tracing import Tracer

CACHE_FORMAT = 1
EDGE_DBFS = -50.0
MARGIN = 0.01


class Speaker(Protocol):
    """What a TTS adapter offers (``TTSStage.synthesize``), seen from outside a graph."""

    def bind(self, name: str, ctx: StageContext, emit: Any) -> None: ...

    def synthesize(self, text: str) -> AsyncIterator[tuple[PCM, int]]: ...


def default_cache() -> Path:
    """``$CASCADE_CACHE/tts``, else ``$XDG_CACHE_HOME/cascade/tts``, else ``~/.cache/...``."""
    if os.environ.get("CASCADE_CACHE"):
        return Path(os.environ["CASCADE_CACHE"]) / "tts"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cascade" / "tts"


def trim(pcm: PCM, rate: int) -> PCM:
    """Cut leading and trailing silence (below ``EDGE_DBFS``), keeping a 10 ms margin."""
    floor = 32768.0 * 10 ** (EDGE_DBFS / 20.0)
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > floor)
    if len(loud) == 0:
        return pcm[:0]
    margin = int(MARGIN * rate)
    return pcm[max(0, loud[0] - margin): loud[-1] + 1 + margin]


class Voice:
    """Speaks text with one TTS adapter at one sample rate, through a disk cache."""

    def __init__(self, config: VoiceConfig, rate: int, cache: Path | None = None) -> None:
        adapter = load_adapter(config.adapter)
        if adapter.kind != "tts":
            raise ConfigError(f"voice.adapter: '{config.adapter}' is a {adapter.kind} "
                              "adapter; the caller's voice needs a TTS adapter (piper, "
                              "tone-tts, ...)")
        adapter.ensure_available(config.adapter)
        self.config = config
        self.adapter = adapter
        self.options = adapter.Options.model_validate(config.options)
        self.rate = rate
        self.cache = cache if cache is not None else default_cache()
        self._stage: Speaker | None = None
        self.synthesised = 0

    def key(self, text: str) -> str:
        """Content hash of everything that decides the samples of ``text``."""
        identity: dict[str, Any] = {
            "format": CACHE_FORMAT, "adapter": self.config.adapter,
            "class": f"{self.adapter.__module__}.{self.adapter.__qualname__}",
            "options": self.options.model_dump(mode="json"), "rate": self.rate, "text": text,
        }
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def speak(self, text: str) -> PCM:
        """``text`` spoken, PCM16 mono at ``rate``, trimmed to the sound."""
        path = self.cache / (self.key(text) + ".npy")
        if path.exists():
            cached: PCM = np.load(path).astype(np.int16)
            return cached
        pcm = trim(self._synthesise(text), self.rate)
        if len(pcm) == 0:
            raise ConfigError(f"voice '{self.config.adapter}' produced no sound for {text!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(partial, pcm)
        partial.replace(path)
        return pcm

    def _synthesise(self, text: str) -> PCM:
        stage = self._stage
        if stage is None:
            created: Stage = self.adapter.create(self.options)
            stage = self._stage = cast(Speaker, created)
        clock = VirtualClock()
        ctx = StageContext("voice", clock, Tracer("voice", clock), self.rate,
                           logging.getLogger("cascade.evaluation"))

        async def ignore(frame: Frame) -> None:
            pass

        stage.bind("voice", ctx, ignore)

        async def collect() -> list[PCM]:
            return [resample(pcm, rate, self.rate) async for pcm, rate in stage.synthesize(text)]

        chunks = clock.run(collect())
        self.synthesised += 1
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
