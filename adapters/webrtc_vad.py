"""WebRTC VAD through ``webrtcvad-wheels``: a fast classic VAD, 20 ms frames.

It answers speech / not speech per frame; the shared hysteresis in
``VADStage`` turns that into speech start and stop events.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cascade.frames import PCM
from cascade.registry import Capabilities
from cascade.stages.vad import VADOptions, VADStage


class WebRTCOptions(VADOptions):
    aggressiveness: int = Field(2, ge=0, le=3, description="0 (lenient) .. 3 (strict)")
    min_speech: float = 0.1


class WebRTCVAD(VADStage):
    """Google's WebRTC voice activity detector (GMM based), 20 ms windows at 16 kHz."""

    Options = WebRTCOptions
    extra = "local"
    requires = ("webrtcvad",)
    capabilities = Capabilities(streaming=True, languages=("*",),
                                sample_rates=(8000, 16000, 32000, 48000))
    window = 320

    def __init__(self, options: WebRTCOptions) -> None:
        super().__init__(options)
        import webrtcvad

        self._vad: Any = webrtcvad.Vad(options.aggressiveness)

    def speech_probability(self, window: PCM) -> float:
        return 1.0 if self._vad.is_speech(window.tobytes(), self.rate) else 0.0
