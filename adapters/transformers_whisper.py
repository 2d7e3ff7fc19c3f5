"""Whisper through Hugging Face ``transformers`` (PyTorch, CPU by default).

Any Whisper checkpoint that ``WhisperForConditionalGeneration`` and
``WhisperProcessor`` load works: a hub id (downloaded once by ``transformers``)
or a local directory. One model per process is shared by every conversation;
generation runs in the ASR worker thread under a lock.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

from cascade.registry import Capabilities
from cascade.stages.asr import ASROptions, ASRStage, Recognition


class TransformersWhisperOptions(ASROptions):
    model: str = Field("openai/whisper-tiny.en", description="hub id or local directory")
    device: str = "cpu"
    threads: int = Field(2, ge=1)
    max_new_tokens: int = Field(96, ge=1, le=440)
    partial_interval: float = Field(0.0, ge=0.0)


@dataclass
class SharedWhisper:
    model: Any
    processor: Any
    lock: threading.Lock = field(default_factory=threading.Lock)


@functools.lru_cache(maxsize=2)
def load_model(name: str, device: str, threads: int) -> SharedWhisper:
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    torch.set_num_threads(threads)
    model: Any = WhisperForConditionalGeneration.from_pretrained(name)
    model = model.to(device).eval()
    return SharedWhisper(model, WhisperProcessor.from_pretrained(name))


class TransformersWhisperASR(ASRStage):
    """A Whisper checkpoint on PyTorch via ``transformers``."""

    Options = TransformersWhisperOptions
    extra = "transformers"
    requires = ("transformers", "torch")
    capabilities = Capabilities(streaming=False, languages=("*",))

    @classmethod
    def preload(cls, options: BaseModel) -> None:
        assert isinstance(options, TransformersWhisperOptions)
        load_model(options.model, options.device, options.threads)

    def __init__(self, options: TransformersWhisperOptions) -> None:
        super().__init__(options)
        self.whisper = options
        self.shared = load_model(options.model, options.device, options.threads)

    def recognize(self, audio: npt.NDArray[np.float32]) -> Recognition:
        import torch

        shared = self.shared
        features = shared.processor(audio, sampling_rate=self.rate, return_tensors="pt")
        with shared.lock, torch.inference_mode():
            out = shared.model.generate(
                features.input_features.to(self.whisper.device),
                max_new_tokens=self.whisper.max_new_tokens, return_dict_in_generate=True,
                output_scores=True)
        logprob = 0.0
        if getattr(out, "scores", None):
            steps = shared.model.compute_transition_scores(out.sequences, out.scores,
                                                           normalize_logits=True)
            logprob = float(steps[0].float().mean())
        text = shared.processor.batch_decode(out.sequences, skip_special_tokens=True)[0]
        return Recognition(str(text).strip(), avg_logprob=logprob)
