"""Line audio of many calls converted together, once per pass of the event loop.

Transports whose calls are not ticked together (Twilio: each websocket message
arrives on its own) still see many calls' frames in one pass of the event loop:
callers of one carrier leg send in step, and playouts wake on the same timer
tick. ``ConversionBatch`` collects the resampling asked for during a pass and
runs it at the start of the next one (``loop.call_soon``) as one
``process_batch``, then hands each result to its callback in the order asked.

Order per call is kept: a second chunk for a resampler that already waits
flushes the batch first; what must follow a call's audio either waits in the
batch too (``defer``: a mark) or flushes it first (a clear, a DTMF event,
hang-up).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np

from cascade.frames import PCM
from cascade.telephony.resampler import Resampler, process_batch

log = logging.getLogger("cascade.telephony")

Done = Callable[[PCM], None]
_NOTHING: PCM = np.zeros(0, np.int16)


class ConversionBatch:
    """Resampling requests of one event-loop pass, run together at the next."""

    def __init__(self) -> None:
        self._resamplers: list[Resampler | None] = []
        self._chunks: list[PCM] = []
        self._done: list[Done] = []
        self._waiting: set[int] = set()
        self._scheduled = False

    def __len__(self) -> int:
        return len(self._chunks)

    def add(self, resampler: Resampler, pcm: PCM, done: Done) -> None:
        """Resample ``pcm`` with ``resampler`` soon; ``done`` gets the result."""
        if id(resampler) in self._waiting:
            self.flush()  # its earlier chunk first: the filter state runs in order
        self._resamplers.append(resampler)
        self._chunks.append(pcm)
        self._done.append(done)
        self._waiting.add(id(resampler))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def defer(self, action: Callable[[], None]) -> None:
        """Run ``action`` after the conversions waiting now (at once when none wait)."""
        if not self._chunks:
            action()
            return
        self._resamplers.append(None)
        self._chunks.append(_NOTHING)
        self._done.append(lambda _: action())

    def flush(self) -> None:
        """Run what is waiting now and deliver it (callers do this before ordered events)."""
        self._scheduled = False
        if not self._chunks:
            return
        resamplers, chunks, done = self._resamplers, self._chunks, self._done
        self._resamplers, self._chunks, self._done = [], [], []
        self._waiting.clear()
        results = iter(process_batch([(r, pcm) for r, pcm in zip(resamplers, chunks,
                                                                  strict=True) if r is not None]))
        for resampler, deliver in zip(resamplers, done, strict=True):
            try:
                deliver(_NOTHING if resampler is None else next(results))
            except Exception:  # one call's failure must not cost the others their audio
                log.exception("delivering converted line audio failed")
