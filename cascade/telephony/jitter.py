"""A jitter buffer: RTP packets in any order and timing in, one 20 ms frame out per tick.

Packets are placed by RTP timestamp, so reordering and duplicates need no
special case. While every packet is exactly one frame on the playout grid (the
usual 20 ms packetisation) they are kept whole and handed out as they are;
the first packet of another length switches the stream to a ring of samples,
which takes any length (10, 30 ms ...) and partial overlaps.
Playout starts ``delay`` frames after the first packet and then advances one
frame per ``pop``, whatever arrives:

* every sample present: the audio;
* nothing there but later audio has arrived: a lost packet, concealed by
  repeating the previous frame at half level once, then silence;
* nothing there and nothing later: the sender paused (silence suppression,
  comfort noise) or is late: silence, so downstream VAD still hears the pause.

A packet older than the playout point is late and dropped; one too far ahead
(a timestamp jump, a new sender) or a new SSRC restarts playout from it. When
the buffer holds more than ``max_delay`` frames (the sender's clock runs fast)
a frame is skipped to catch up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cascade.frames import PCM


@dataclass(slots=True)
class JitterStats:
    received: int = 0
    late: int = 0
    duplicate: int = 0
    reordered: int = 0
    concealed: int = 0
    silent: int = 0
    played: int = 0
    skipped: int = 0
    restarts: int = 0


class JitterBuffer:
    """Reorders by timestamp and releases ``frame`` samples per ``pop`` after ``delay`` frames."""

    def __init__(self, frame: int = 160, delay: int = 3, max_delay: int = 10,
                 capacity: int = 50) -> None:
        self.frame = frame
        self.delay = delay
        self.max_delay = max_delay
        self.size = capacity * frame
        self._ring = np.zeros(self.size, np.int16)
        self._filled = np.zeros(self.size, bool)
        self._whole: dict[int, PCM] = {}  # extended timestamp -> one whole frame
        self._ring_used = False
        self.stats = JitterStats()
        self._ssrc: int | None = None
        self._next: int | None = None  # extended timestamp of the next sample to play
        self._newest = 0  # extended timestamp one past the newest sample held
        self._reference = 0  # last extended timestamp seen, to unwrap 32-bit ones
        self._highest_sequence: int | None = None
        self._wait = 0
        self._previous: PCM | None = None
        self.played: int | None = None
        """The (unwrapped) RTP timestamp where the frame ``pop`` last returned starts."""

    @property
    def started(self) -> bool:
        return self._next is not None

    def _extend(self, timestamp: int) -> int:
        delta = (timestamp - self._reference + 2**31) % 2**32 - 2**31
        self._reference += delta
        return self._reference

    def _restart(self, ssrc: int, timestamp: int) -> None:
        if self._next is not None:
            self.stats.restarts += 1
        self._ssrc = ssrc
        self._reference = timestamp
        self._next = timestamp
        self._newest = timestamp
        self._highest_sequence = None
        self._filled[:] = False
        self._whole.clear()
        self._ring_used = False
        self._wait = self.delay
        self._previous = None

    def push(self, sequence: int, timestamp: int, ssrc: int, pcm: PCM) -> None:
        """Place one packet's decoded samples (8 kHz PCM) at its timestamp."""
        n = len(pcm)
        if n == 0 or n > self.size // 2:
            return
        self.stats.received += 1
        if self._next is None or ssrc != self._ssrc:
            self._restart(ssrc, timestamp)
        assert self._next is not None
        start = self._extend(timestamp)
        if start + n <= self._next:
            if start < self._next - self.size:
                self._restart(ssrc, timestamp)
                start = self._reference
            else:
                self.stats.late += 1
                return
        if start + n > self._next + self.size:  # far ahead: a jump, not jitter
            self._restart(ssrc, timestamp)
            start = self._reference
        if self._highest_sequence is not None and (
                (sequence - self._highest_sequence) & 0xFFFF) >= 0x8000:
            self.stats.reordered += 1
        else:
            self._highest_sequence = sequence
        assert self._next is not None
        if not self._ring_used:
            if n == self.frame and (start - self._next) % self.frame == 0:
                if start in self._whole:
                    self.stats.duplicate += 1
                    return
                self._whole[start] = pcm
                self._newest = max(self._newest, start + n)
                return
            self._use_ring()
        skip = max(0, self._next - start)  # the part already played is late
        regions = self._regions(start + skip, n - skip)
        if all(self._filled[ring].all() for ring, _ in regions):
            self.stats.duplicate += 1
            return
        for ring, part in regions:
            self._ring[ring] = pcm[skip:][part]
            self._filled[ring] = True
        self._newest = max(self._newest, start + n)

    def _use_ring(self) -> None:
        """From now on keep samples in the ring (a packet that is not one whole frame)."""
        self._ring_used = True
        for start, pcm in self._whole.items():
            for ring, part in self._regions(start, len(pcm)):
                self._ring[ring] = pcm[part]
                self._filled[ring] = True
        self._whole.clear()

    def _regions(self, start: int, n: int) -> list[tuple[slice, slice]]:
        """Where ``n`` samples from timestamp ``start`` sit in the ring: one or two slices."""
        offset = start % self.size
        first = min(n, self.size - offset)
        regions = [(slice(offset, offset + first), slice(0, first))]
        if first < n:
            regions.append((slice(0, n - first), slice(first, n)))
        return regions

    def pop(self) -> PCM | None:
        """The next frame, or None before playout starts (no packet yet, or filling up)."""
        if self._next is None:
            return None
        if self._wait > 0:
            self._wait -= 1
            return None
        if self._newest - self._next > self.max_delay * self.frame:
            self._take()
            self.stats.skipped += 1
        self.played = self._next
        frame, present = self._take()
        if frame is not None:
            self.stats.played += 1
            if present is not None:
                frame[~present] = 0
            self._previous = frame
            return frame
        if self._newest > self._next:
            self.stats.concealed += 1
            previous, self._previous = self._previous, None
            return (previous // 2) if previous is not None else np.zeros(self.frame, np.int16)
        self.stats.silent += 1
        self._previous = None
        return np.zeros(self.frame, np.int16)

    def _take(self) -> tuple[PCM | None, npt.NDArray[np.bool_] | None]:
        """The frame at the playout point (None: none of it arrived) and, when only part
        of it did, which samples (None: all of them); playout moves on one frame."""
        assert self._next is not None
        if not self._ring_used:
            whole = self._whole.pop(self._next, None)
            self._next += self.frame
            return whole, None
        frame = np.empty(self.frame, np.int16)
        present = np.empty(self.frame, bool)
        for ring, part in self._regions(self._next, self.frame):
            frame[part] = self._ring[ring]
            present[part] = self._filled[ring]
            self._filled[ring] = False
        self._next += self.frame
        if present.all():
            return frame, None
        return (frame, present) if present.any() else (None, None)
