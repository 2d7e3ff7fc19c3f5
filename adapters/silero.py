"""Silero VAD on onnxruntime alone (no torch).

Two ONNX layouts exist and both load: the one in ``faster-whisper``'s assets
(inputs ``input`` of 64 context + 512 samples, ``h`` and ``c`` states) and the
one in the ``silero-vad`` wheel (``input``, one ``state`` tensor, ``sr``). The
session is loaded once per process; each conversation keeps its own state.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

from cascade.adapters import bundled
from cascade.errors import MissingDependency
from cascade.frames import PCM
from cascade.registry import Capabilities, configured_file, missing_file
from cascade.stages.vad import VADOptions, VADStage

CONTEXT = 64


class SileroOptions(VADOptions):
    model: str | None = Field(None, description="path of a Silero VAD .onnx (default: bundled)")


def _model_path(options: SileroOptions) -> str | None:
    if options.model:
        return options.model
    found = bundled.silero_onnx()
    return str(found) if found else None


@functools.lru_cache(maxsize=4)
def load_session(path: str) -> Any:
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 4
    return onnxruntime.InferenceSession(path, sess_options=opts,
                                        providers=["CPUExecutionProvider"])


class SileroVAD(VADStage):
    """Silero VAD (32 ms windows at 16 kHz) run on onnxruntime."""

    Options = SileroOptions
    extra = "local"
    requires = ("onnxruntime",)
    capabilities = Capabilities(streaming=True, languages=("*",), sample_rates=(16000,))
    window = 512

    @classmethod
    def missing(cls, options: BaseModel | None = None) -> list[str]:
        opts = options if isinstance(options, SileroOptions) else SileroOptions()
        return super().missing(options) + missing_file(
            _model_path(opts), "a Silero VAD model (faster-whisper or silero-vad package)")

    @classmethod
    def preload(cls, options: BaseModel) -> None:
        assert isinstance(options, SileroOptions)
        path = _model_path(options)
        if path:
            load_session(path)

    def __init__(self, options: SileroOptions) -> None:
        super().__init__(options)
        path = _model_path(options)
        if path is None:
            raise MissingDependency("adapter 'silero'", "a Silero VAD model file", self.extra)
        configured_file(path, "silero", "model", "a Silero VAD .onnx file")
        self.session = load_session(path)
        names = {i.name for i in self.session.get_inputs()}
        self.split_state = "h" in names
        self.reset_model()

    def reset_model(self) -> None:
        self._context = np.zeros(CONTEXT, np.float32)
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._state = np.zeros((2, 1, 128), np.float32)
        self._sr = np.array(16000, dtype=np.int64)

    def speech_probability(self, window: PCM) -> float:
        samples: npt.NDArray[np.float32] = window.astype(np.float32) / 32768.0
        batch = np.concatenate([self._context, samples])[None, :]
        self._context = samples[-CONTEXT:]
        if self.split_state:
            prob, self._h, self._c = self.session.run(
                None, {"input": batch, "h": self._h, "c": self._c})
        else:
            prob, self._state = self.session.run(
                None, {"input": batch, "state": self._state, "sr": self._sr})
        return float(np.asarray(prob).reshape(-1)[0])
