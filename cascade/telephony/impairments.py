"""Network impairments for tests and evaluation: loss, jitter, reordering, duplicates, DTX.

A stream is a list of ``Timed`` items (a send time and a packet of any type).
``impair`` returns the stream as a receiver would see it: items dropped
(independent or bursty loss), delayed (jitter, which reorders packets once it
exceeds their spacing), swapped with the next one, duplicated, and silent runs
replaced by one comfort-noise packet (discontinuous transmission, as phones do
in pauses). The result is sorted by arrival time and fully determined by the
seed. ``replay`` sends a stream at its times.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Timed(Generic[T]):
    at: float
    item: T


@dataclass(frozen=True, slots=True)
class Impairment:
    """What the network does to a packet stream (probabilities per packet, seconds)."""

    loss: float = 0.0
    burst: float = 0.0
    """Probability that the packet after a lost one is lost too (bursty loss)."""
    jitter: float = 0.0
    """Extra delay of each packet, uniform in [0, jitter] seconds."""
    reorder: float = 0.0
    """Probability that a packet is held back behind the next one."""
    duplicate: float = 0.0
    dtx: bool = False
    """Silent runs are not sent: one comfort-noise packet replaces each (needs ``silent``)."""
    dtx_hangover: int = 2
    """Silent packets still sent before transmission stops."""
    seed: int = 0


def impair(stream: Sequence[Timed[T]], impairment: Impairment,
           silent: Callable[[T], bool] | None = None,
           comfort_noise: Callable[[Timed[T]], T] | None = None) -> list[Timed[T]]:
    """The stream as received through ``impairment`` (sorted by arrival time)."""
    rng = random.Random(impairment.seed)
    kept = _discontinuous(stream, impairment, silent, comfort_noise)
    out: list[Timed[T]] = []
    lost = False
    for index, packet in enumerate(kept):
        chance = impairment.burst if lost else impairment.loss
        lost = rng.random() < chance
        if lost:
            continue
        at = packet.at + rng.uniform(0.0, impairment.jitter)
        if rng.random() < impairment.reorder and index + 1 < len(kept):
            at = max(at, kept[index + 1].at + 1e-4)
        out.append(replace(packet, at=at))
        if rng.random() < impairment.duplicate:
            out.append(replace(packet, at=at + rng.uniform(0.0, 0.02)))
    out.sort(key=lambda p: p.at)
    return out


def _discontinuous(stream: Sequence[Timed[T]], impairment: Impairment,
                   silent: Callable[[T], bool] | None,
                   comfort_noise: Callable[[Timed[T]], T] | None) -> list[Timed[T]]:
    if not impairment.dtx or silent is None:
        return list(stream)
    out: list[Timed[T]] = []
    run = 0
    for packet in stream:
        run = run + 1 if silent(packet.item) else 0
        if run <= impairment.dtx_hangover:
            out.append(packet)
        elif run == impairment.dtx_hangover + 1 and comfort_noise is not None:
            out.append(Timed(packet.at, comfort_noise(packet)))
    return out


def paced(items: Iterable[T], interval: float = 0.02, start: float = 0.0) -> list[Timed[T]]:
    """Items sent every ``interval`` seconds from ``start``."""
    return [Timed(start + index * interval, item) for index, item in enumerate(items)]


async def replay(stream: Sequence[Timed[T]], send: Callable[[T], None]) -> None:
    """Send each item at its time (seconds from now), in order."""
    loop = asyncio.get_running_loop()
    origin = loop.time()
    for packet in stream:
        delay = origin + packet.at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        send(packet.item)
