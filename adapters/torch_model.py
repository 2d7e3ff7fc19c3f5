"""What the in-process PyTorch adapters (Coqui TTS, transformers LLM) share: one loaded
model per process that conversations use one at a time, and the ``device`` option.

Conversations wait their turn on their event loop (``turn()``), not in a worker thread,
so no thread of the loop's executor sits parked on the model's ``lock``; whoever has the
turn then holds ``lock`` while the model runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from dataclasses import dataclass, field

from cascade.errors import ConfigError


@dataclass(kw_only=True)
class TurnTakingModel:
    """A model shared by every conversation, with the locks that make its users take turns."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = field(
        default_factory=weakref.WeakKeyDictionary)

    def turn(self) -> asyncio.Lock:
        """The running event loop's queue for the model."""
        return self.turns.setdefault(asyncio.get_running_loop(), asyncio.Lock())


def torch_device(option: str, where: str) -> str:
    """The device for option 'device' (``auto`` picks CUDA when PyTorch sees a GPU)."""
    import torch

    if option == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if option == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{where}: option 'device' is cuda, but PyTorch {torch.__version__} "
                          "sees no CUDA GPU here; set device: cpu (or auto)")
    return option
