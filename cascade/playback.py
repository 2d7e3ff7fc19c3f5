"""What the agent actually played, kept for a few seconds on the pipeline clock.

``Playout`` writes every chunk it plays (and erases what an interruption cut),
so stages that need the far-end reference — the echo gate, an echo canceller —
can read exactly what went out, at the time it went out.
"""

from __future__ import annotations

import numpy as np

from cascade.frames import PCM


class PlaybackHistory:
    """A ring buffer of played agent audio addressed by pipeline-clock time."""

    def __init__(self, rate: int, seconds: float = 8.0) -> None:
        self.rate = rate
        self.size = int(rate * seconds)
        self._ring = np.zeros(self.size, np.int16)
        self._end = 0  # absolute sample index one past the newest written sample
        self.last_played = float("-inf")  # pipeline time when played audio last ended

    def _index(self, at: float) -> int:
        return round(at * self.rate)

    def write(self, pcm: PCM, at: float) -> None:
        """Record ``pcm`` as played from pipeline time ``at``."""
        start = self._index(at)
        n = len(pcm)
        if n == 0:
            return
        if start > self._end:  # silence between replies: clear the gap
            self._zero(self._end, min(start, self._end + self.size))
        if n > self.size:
            pcm, start = pcm[-self.size :], start + n - self.size
            n = self.size
        offset = start % self.size
        first = min(n, self.size - offset)
        self._ring[offset : offset + first] = pcm[:first]
        self._ring[: n - first] = pcm[first:]
        self._end = max(self._end, start + n)
        self.last_played = max(self.last_played, (start + n) / self.rate)

    def _zero(self, begin: int, end: int) -> None:
        for index in range(begin, end, self.size):
            stop = min(end, index + self.size)
            offset = index % self.size
            first = min(stop - index, self.size - offset)
            self._ring[offset : offset + first] = 0
            self._ring[: stop - index - first] = 0

    def erase_after(self, at: float) -> None:
        """Forget audio scheduled after ``at`` (an interruption cut it: it never played)."""
        cut = self._index(at)
        if cut < self._end:
            self._zero(max(cut, self._end - self.size), self._end)
            self._end = max(cut, self._end - self.size)
            self.last_played = min(self.last_played, at)

    def read(self, at: float, n: int) -> PCM:
        """``n`` samples played from time ``at`` (zeros where nothing was played)."""
        out = np.zeros(n, np.int16)
        start = self._index(at)
        lo = max(start, self._end - self.size)
        hi = min(start + n, self._end)
        for index in range(lo, hi, self.size):
            stop = min(hi, index + self.size)
            offset = index % self.size
            first = min(stop - index, self.size - offset)
            out[index - start : index - start + first] = self._ring[offset : offset + first]
            out[index - start + first : stop - start] = self._ring[: stop - index - first]
        return out

    def playing_near(self, begin: float) -> bool:
        """True when agent audio was played at or after ``begin``."""
        return self.last_played > begin
