"""Sequenced streams between a caller and a worker: exactly once, in order.

Each direction numbers its messages from 1. A sender keeps what it sent in a
``SendLog`` until it is no longer needed; a receiver's ``Receiver`` accepts
only the next number, drops duplicates and late copies, and reports a gap so the
sender can resend from its log (go-back-N over MQTT QoS 1).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
Verdict = Literal["ok", "duplicate", "gap"]


class Receiver:
    """The receiving end of one stream: which sequence number comes next."""

    __slots__ = ("expected", "gaps")

    def __init__(self, expected: int = 1) -> None:
        self.expected = expected
        self.gaps = 0

    @property
    def last(self) -> int:
        return self.expected - 1

    def check(self, seq: int) -> Verdict:
        if seq < self.expected:
            return "duplicate"
        if seq > self.expected:
            self.gaps += 1
            return "gap"
        self.expected += 1
        return "ok"

    def skip_to(self, seq: int) -> None:
        """The sender no longer has anything before ``seq``: accept from there."""
        self.expected = max(self.expected, seq)


class SendLog(Generic[T]):
    """What a sender sent, by sequence number, bounded in length."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.next_seq = 1
        self._items: deque[tuple[int, T]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T) -> int:
        seq = self.next_seq
        self.next_seq += 1
        self._items.append((seq, item))
        while len(self._items) > self.limit:
            self._items.popleft()
        return seq

    @property
    def first(self) -> int:
        """The oldest sequence number still held (``next_seq`` when empty)."""
        return self._items[0][0] if self._items else self.next_seq

    def after(self, seq: int) -> Iterator[tuple[int, T]]:
        """Everything held with a sequence number above ``seq``, in order."""
        return ((s, item) for s, item in self._items if s > seq)

    def drop_through(self, seq: int) -> None:
        """Forget everything up to and including ``seq``."""
        while self._items and self._items[0][0] <= seq:
            self._items.popleft()

    def drop_while(self, stale: Callable[[T], bool]) -> None:
        """Forget the oldest items while ``stale`` says so."""
        while self._items and stale(self._items[0][1]):
            self._items.popleft()

    def items(self) -> Iterator[tuple[int, T]]:
        return iter(self._items)
