"""One call's audio both ways: G.711 at 8 kHz on the line, PCM16 at the pipeline rate inside.

``PhoneLine`` is what every transport (Twilio websocket, RTP) shares: decode
and upsample what the caller sends, downsample and encode what the agent says.
Both directions stream 20 ms at a time through resamplers that keep their
state, so chunk edges leave no clicks; ``reset_agent`` forgets the agent side's
state when a reply is cut. A server moving many calls on one clock converts
them together (``callers_pcm``, ``agents_line``): one matrix product per tick
instead of several numpy calls per call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cascade.audio import resample
from cascade.frames import PCM
from cascade.telephony import g711
from cascade.telephony.resampler import LINE_RATE, process_batch, resampler

FRAME_SAMPLES = 160
"""Samples in 20 ms at 8 kHz: one packet, one Twilio media message."""


class PhoneLine:
    """Codec and resampling state of one call."""

    def __init__(self, pipeline_rate: int, codec: g711.Codec = "PCMU") -> None:
        self.rate = pipeline_rate
        self.codec: g711.Codec = codec
        self._up = resampler(LINE_RATE, pipeline_rate)
        self._down = resampler(pipeline_rate, LINE_RATE)

    def caller_pcm(self, payload: bytes) -> PCM:
        """Line bytes from the caller -> PCM16 at the pipeline rate."""
        return self._up.process(g711.decode(payload, self.codec))

    def caller_silence(self, samples: int = FRAME_SAMPLES) -> PCM:
        """Silence standing in for ``samples`` of missing line audio, at the pipeline rate."""
        return self._up.process(np.zeros(samples, np.int16))

    def agent_line(self, pcm: PCM, rate: int) -> PCM:
        """Agent PCM16 at ``rate`` -> PCM16 at 8 kHz for the line."""
        if rate != self.rate:  # a stage produced another rate: convert it on its own
            return resample(pcm, rate, LINE_RATE)
        return self._down.process(pcm)

    def encode(self, pcm: PCM) -> bytes:
        return g711.encode(pcm, self.codec)

    def reset_agent(self) -> None:
        self._down.reset()


def callers_pcm(lines: Sequence[PhoneLine], pcms: Sequence[PCM]) -> list[PCM]:
    """Caller PCM16 already decoded at 8 kHz -> the pipeline rate, for several calls at once
    (each line at most once)."""
    return process_batch([(line._up, pcm) for line, pcm in zip(lines, pcms, strict=True)])


def agents_line(lines: Sequence[PhoneLine], pcms: Sequence[PCM]) -> list[PCM]:
    """``agent_line`` for several calls' pipeline-rate audio at once (each line at most once)."""
    return process_batch([(line._down, pcm) for line, pcm in zip(lines, pcms, strict=True)])
