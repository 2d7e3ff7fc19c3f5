"""Smart Turn v3.2: the probability that the caller has finished their turn, from audio alone.

Smart Turn (Daily, BSD-2-Clause) is a small Whisper-encoder classifier that
hears *how* a phrase ends (intonation, a trailing "and...", a sentence cut
mid-way), which silence timers and word lists cannot. It runs on onnxruntime;
the session is loaded once per process and shared by every conversation.

Input contract of the ONNX file (input ``input_features``, output ``logits``,
which despite its name already holds the sigmoid probability):

* the **last 8 s** of the turn as 16 kHz mono audio: longer audio keeps its
  end, shorter audio is padded with **zeros at the start**, so the moment the
  caller stopped is always the last sample;
* the 128,000 samples normalised to zero mean and unit variance (epsilon 1e-7);
* Whisper's log-mel features of that (``cascade.adapters.log_mel``):
  float32 of shape (batch, 80, 800);
* output (batch, 1): P(turn complete). Above 0.5 means complete.

The model file ships inside the PyPI ``pipecat-ai`` wheel
(``pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx``). Install it
with ``pip install --no-deps pipecat-ai``: its dependencies would downgrade
soxr, soundfile and protobuf in an environment set up for Cascade, and none
of them is needed to read one file. For the same reason Cascade never imports
pipecat (its ``__init__`` imports loguru, one of those dependencies): the file
is found with ``importlib.util.find_spec``. Any other Smart Turn v3 ONNX file
with the same input can be passed as ``model``.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cascade.adapters.bundled import package_dir
from cascade.adapters.log_mel import RATE, log_mel
from cascade.errors import MissingDependency

SECONDS = 8
SAMPLES = SECONDS * RATE
NORMALISE_EPS = 1e-7
INSTALL = "pip install --no-deps pipecat-ai"
MODEL_PARTS = ("audio", "turn", "smart_turn", "data", "smart-turn-v3.2-cpu.onnx")
WHO = "turn model 'smart-turn'"
WHAT = "the Smart Turn v3.2 model (PyPI pipecat-ai, install with --no-deps)"


def smart_turn_onnx() -> Path | None:
    """Smart Turn v3.2 ONNX from the installed ``pipecat-ai`` wheel, without importing it."""
    base = package_dir("pipecat")
    if base is None:
        return None
    path = base.joinpath(*MODEL_PARTS)
    return path if path.exists() else None


def missing(model: str | Path | None = None) -> list[str]:
    """What Smart Turn needs that is absent, each with how to get it; [] when ready."""
    gaps = []
    if importlib.util.find_spec("onnxruntime") is None:
        gaps.append("onnxruntime (pip install 'voice-cascade[local]')")
    if model is not None:
        if not Path(model).exists():
            gaps.append(f"the Smart Turn model file {model} (no such file)")
    elif smart_turn_onnx() is None:
        gaps.append(f"the Smart Turn v3.2 model ({INSTALL})")
    return gaps


@functools.lru_cache(maxsize=4)
def load_session(path: str, threads: int = 1) -> Any:
    """The onnxruntime session for ``path``, created once per process."""
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 4
    return onnxruntime.InferenceSession(path, sess_options=opts,
                                        providers=["CPUExecutionProvider"])


def last_window(audio: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """The last 8 s of 16 kHz audio as float32, zero-padded at the start when shorter.

    Integer samples are read as PCM16 (scaled by 1/32768); floats are taken as they are.
    """
    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"Smart Turn expects 1-D mono audio, got an array of shape {x.shape}")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / 32768.0
    x = x.astype(np.float32, copy=False)[-SAMPLES:]
    return np.pad(x, (SAMPLES - x.size, 0)) if x.size < SAMPLES else x


def features(audio: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """The model input for ``audio`` (16 kHz mono): float32 of shape (1, 80, 800)."""
    x = last_window(audio)
    x = (x - x.mean()) / np.sqrt(x.var() + NORMALISE_EPS)
    batch: npt.NDArray[np.float32] = log_mel(x)[None]
    return batch


class SmartTurnModel:
    """Smart Turn v3.x on onnxruntime: ``complete_probability(audio)`` of a turn so far.

    ``model`` is the path of a Smart Turn ONNX file (default: v3.2 from the
    ``pipecat-ai`` wheel). One inference takes about a tenth of a second on a
    CPU core and blocks: call it from a worker thread (``asyncio.to_thread``)
    in a pipeline. Sessions are shared per process, so instances are cheap.
    """

    def __init__(self, model: str | Path | None = None, threads: int = 1) -> None:
        if importlib.util.find_spec("onnxruntime") is None:
            raise MissingDependency(WHO, "onnxruntime", "local")
        path = model if model is not None else smart_turn_onnx()
        if path is None:
            raise MissingDependency(WHO, WHAT, None)
        if not Path(path).exists():
            raise MissingDependency(WHO, f"the Smart Turn model file {path}", None)
        self.path = str(path)
        self.session = load_session(self.path, threads)
        self.input_name: str = self.session.get_inputs()[0].name

    def complete_probability(self, audio: npt.ArrayLike) -> float:
        """P(the speaker has finished) for 16 kHz mono audio ending now (float or PCM16)."""
        (out,) = self.session.run(None, {self.input_name: features(audio)})
        return float(np.asarray(out).reshape(-1)[0])
