"""The caller's side of the broker: one connection per process and event loop.

Every ``RemoteStage`` of every conversation in a process shares one ``CallerHub``:
its ``BrokerLink`` (with the caller's last will), the routing of replies to the
stage they are for, and the liveness table of workers built from their
heartbeats. The hub's watchdog tells a stage when its worker went quiet; a
worker's last will (or goodbye) tells it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from typing import TYPE_CHECKING, ClassVar

from cascade.distributed.link import BrokerLink
from cascade.distributed.topics import ROOT, BrokerAddress, ServiceTopics, caller_topic
from cascade.distributed.wire import Envelope, WireError, decode, encode

if TYPE_CHECKING:
    from cascade.distributed.remote import RemoteStage

log = logging.getLogger("cascade.distributed")
WATCH_SECONDS = 0.25
STALL_SECONDS = 0.5
OFFLINE_GRACE = 1.0
"""Seconds a worker whose last will came has to reappear before its conversations move."""


class CallerHub:
    """Shared connection, reply routing and worker liveness for one caller process."""

    _hubs: ClassVar[dict[tuple[str, int], asyncio.Task[CallerHub]]] = {}

    def __init__(self, address: BrokerAddress) -> None:
        self.address = address
        self.caller = f"c{os.getpid()}-{secrets.token_hex(3)}"
        def farewell(generation: int, goodbye: bool) -> bytes:
            return encode(Envelope("offline", meta={"caller": self.caller,
                                                    "generation": generation,
                                                    "goodbye": goodbye}))

        self.link = BrokerLink(address, self.caller, will=(caller_topic(self.caller), farewell))
        self.suspects: dict[tuple[str, str], tuple[float, int]] = {}
        """Workers whose last will came: (when, its connection generation then)."""
        self.users = 0
        self.stages: dict[str, RemoteStage] = {}
        self.last_seen: dict[tuple[str, str], float] = {}
        self.generations: dict[tuple[str, str], int] = {}
        self._watched: set[str] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._stalled_at = 0.0

    # --- sharing -------------------------------------------------------------------

    @classmethod
    async def acquire(cls, address: BrokerAddress) -> CallerHub:
        """The hub for ``address`` in this event loop, connecting it on first use."""
        key = (str(address) + str(address.password), id(asyncio.get_running_loop()))
        task = cls._hubs.get(key)
        if task is None or (task.done() and (task.cancelled() or task.exception())):
            task = asyncio.create_task(cls._connect(address))
            cls._hubs[key] = task
        try:
            hub = await asyncio.shield(task)
        except Exception:
            cls._hubs.pop(key, None)
            raise
        hub.users += 1
        return hub

    @classmethod
    async def _connect(cls, address: BrokerAddress) -> CallerHub:
        hub = cls(address)
        hub.link.on_connect(hub._reconnected)
        await hub.link.subscribe(f"{ROOT}/reply/{hub.caller}/#")
        await hub.link.start()
        hub._watchdog = asyncio.create_task(hub._watch())
        return hub

    async def release(self) -> None:
        self.users -= 1
        if self.users > 0:
            return
        for key, task in list(self._hubs.items()):
            if task.done() and not task.cancelled() and task.exception() is None \
                    and task.result() is self:
                del self._hubs[key]
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await self.link.close()

    # --- stages and workers -------------------------------------------------------

    def register(self, stage: RemoteStage, topic: str) -> None:
        self.stages[topic] = stage
        self.link.route(topic, stage.on_reply)

    def unregister(self, topic: str) -> None:
        self.stages.pop(topic, None)
        self.link.unroute(topic)

    async def watch(self, topics: ServiceTopics) -> None:
        """Follow the heartbeats of the workers serving ``topics``."""
        if topics.base in self._watched:
            return
        self._watched.add(topics.base)
        await self.link.subscribe(topics.alive(), self._on_alive)

    def seen(self, base: str, worker: str) -> None:
        self.last_seen[(base, worker)] = asyncio.get_running_loop().time()

    def quiet_for(self, base: str, worker: str) -> float:
        """Seconds since the last sign of life of ``worker`` while we were connected and
        our own event loop kept up (a stalled loop has not read the heartbeats yet)."""
        now = asyncio.get_running_loop().time()
        since = max(self.last_seen.get((base, worker), 0.0), self.link.connected_since,
                    self._stalled_at)
        return now - since if self.link.connected.is_set() else 0.0

    def _assigned(self, base: str, worker: str) -> list[RemoteStage]:
        return [s for s in self.stages.values()
                if s.worker == worker and s.topics.base == base]

    def _on_alive(self, topic: str, payload: bytes) -> None:
        try:
            env = decode(payload)
        except WireError as exc:
            log.warning("dropped a bad heartbeat on %s: %s", topic, exc)
            return
        base, _, worker = topic.rpartition("/alive/")
        generation = env.meta.get("generation")
        if not isinstance(generation, int):
            return
        if env.kind == "offline":
            if env.meta.get("goodbye") is True:
                for stage in self._assigned(base, worker):
                    stage.worker_lost(f"worker {worker} stopped")
            else:  # a crash, or the broker going down: wait to see whether it comes back
                loop = asyncio.get_running_loop()
                self.suspects[(base, worker)] = (loop.time(), generation)
            return
        if env.kind != "heartbeat":
            return
        self.seen(base, worker)
        suspect = self.suspects.get((base, worker))
        if suspect is not None and generation > suspect[1]:
            del self.suspects[(base, worker)]
        before = self.generations.get((base, worker))
        self.generations[(base, worker)] = generation
        if before is not None and before != generation:
            for stage in self._assigned(base, worker):
                stage.resync()  # the worker reconnected: messages may have been lost

    def _reconnected(self) -> None:
        for stage in list(self.stages.values()):
            stage.resync()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(WATCH_SECONDS)
            if loop.time() - before > WATCH_SECONDS + STALL_SECONDS:
                self._stalled_at = loop.time()  # we were too busy to hear anyone
            for (base, gone), (since, _) in list(self.suspects.items()):
                since = max(since, self.link.connected_since)
                if self.link.connected.is_set() and loop.time() - since > OFFLINE_GRACE:
                    del self.suspects[(base, gone)]
                    for stage in self._assigned(base, gone):
                        stage.worker_lost(f"worker {gone} went offline (its last will)")
            for stage in list(self.stages.values()):
                worker = stage.worker
                if worker is None:
                    continue
                quiet = self.quiet_for(stage.topics.base, worker)
                if quiet > stage.heartbeat_timeout:
                    stage.worker_lost(f"no heartbeat from worker {worker} for {quiet:.1f} s")
