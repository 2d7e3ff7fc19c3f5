"""A call as it happened: caller and agent audio placed on one timeline.

``CallRecorder`` is an ``AudioSink`` for the agent side and takes the caller's
frames as they enter the graph. ``render`` gives a stereo array (caller left,
agent right) or a mono mix, where silence, waiting and cut-offs are audible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cascade.audio import resample, write_audio
from cascade.frames import PCM, AgentAudio


class CallRecorder:
    """Collects both sides of a conversation on the pipeline clock."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._user: list[tuple[float, PCM]] = []
        self._agent: list[tuple[float, PCM]] = []
        self._origin: float | None = None

    def add_user(self, pcm: PCM, at: float) -> None:
        if self._origin is None:
            self._origin = at
        self._user.append((at, pcm))

    def play(self, frame: AgentAudio, at: float) -> None:
        pcm = resample(frame.pcm, frame.sample_rate, self.rate)
        self._agent.append((at, pcm))

    def clear(self, at: float) -> None:
        """Cut agent audio that was scheduled past ``at`` (it never played)."""
        kept: list[tuple[float, PCM]] = []
        for start, pcm in self._agent:
            if start >= at:
                continue
            end = start + len(pcm) / self.rate
            if end > at:
                pcm = pcm[: int((at - start) * self.rate)]
            kept.append((start, pcm))
        self._agent = kept

    def agent_seconds(self) -> float:
        return sum(len(p) for _, p in self._agent) / self.rate

    def _track(self, parts: list[tuple[float, PCM]], origin: float, length: int) -> PCM:
        track = np.zeros(length, np.int16)
        for start, pcm in parts:
            offset = round((start - origin) * self.rate)
            if offset < 0:
                pcm, offset = pcm[-offset:], 0
            end = min(length, offset + len(pcm))
            track[offset:end] = pcm[: end - offset]
        return track

    def render(self, mix: bool = False) -> PCM:
        origin = self._origin if self._origin is not None else 0.0
        ends = [s + len(p) / self.rate for s, p in self._user + self._agent]
        length = round((max(ends, default=origin) - origin) * self.rate)
        user = self._track(self._user, origin, length)
        agent = self._track(self._agent, origin, length)
        if mix:
            mixed = user.astype(np.int32) + agent.astype(np.int32)
            out: PCM = np.clip(mixed, -32768, 32767).astype(np.int16)
            return out
        return np.stack([user, agent], axis=1)

    def write(self, path: str | Path, mix: bool = False) -> None:
        write_audio(path, self.render(mix), self.rate)
