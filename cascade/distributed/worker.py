"""A worker process: serves one stage of a pipeline to callers behind an MQTT broker.

The worker loads the stage's adapter (and its shared models) once, joins the
shared subscription for new conversations of that stage, and runs one
``Session`` (one stage instance) per conversation it is handed. It announces
itself with heartbeats and leaves a last will, so callers move its
conversations elsewhere when it dies. Payloads that are not valid Cascade
messages are logged and dropped; they never stop the worker.

Run it with ``cascade worker --stage asr --pipeline p.yaml --broker mqtt://host:1883``
or ``python -m cascade.distributed.worker`` with the same options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

from rich.console import Console

from cascade.config import PipelineConfig, resolve
from cascade.distributed.link import BrokerLink
from cascade.distributed.session import Session
from cascade.distributed.topics import (
    BrokerAddress,
    ServiceTopics,
    caller_topic,
    reply_topic,
    topic_id,
)
from cascade.distributed.wire import Envelope, WireError, decode, encode
from cascade.frames import SystemFrame

log = logging.getLogger("cascade.distributed")
HEARTBEAT_SECONDS = 0.5
IDLE_SECONDS = 600.0
ORPHAN_SECONDS = 10.0


def _meta_int(env: Envelope, key: str) -> int:
    value = env.meta.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise WireError(f"'{env.kind}' message needs an integer '{key}', got {value!r}")
    return value


def _meta_str(env: Envelope, key: str) -> str:
    value = env.meta.get(key)
    if not isinstance(value, str) or not value:
        raise WireError(f"'{env.kind}' message needs a text '{key}', got {value!r}")
    return value


class Worker:
    """Serves stage ``stage`` of ``config`` through the broker at ``broker``."""

    def __init__(self, config: PipelineConfig, stage: str, broker: str,
                 worker_id: str | None = None) -> None:
        self.config = config
        self.stage_name = stage
        self.topics = ServiceTopics.of(config, stage)
        self.address = BrokerAddress.parse(broker)
        self.adapter, self.options = resolve(config)[stage]
        self.id = topic_id(worker_id or f"{socket.gethostname()}-{os.getpid()}-"
                                        f"{secrets.token_hex(2)}")
        self.sessions: dict[tuple[str, str], Session] = {}
        self.rejected = 0
        self.link: BrokerLink | None = None
        self._stopping = asyncio.Event()
        self._told_unknown: set[tuple[str, str, int]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._orphaned: dict[str, float] = {}

    def describe(self) -> str:
        adapter = self.config.stages[self.stage_name].adapter
        return (f"worker {self.id}: stage '{self.stage_name}' ({adapter}) of pipeline "
                f"'{self.config.name}' at {self.address}, topics {self.topics.base}")

    async def serve(self, ready: Callable[[], None] | None = None) -> None:
        """Load the models, connect, serve until ``stop()``."""
        self.adapter.ensure_available(self.stage_name, self.options)
        await asyncio.to_thread(self.adapter.preload, self.options)
        def farewell(generation: int, goodbye: bool) -> bytes:
            return encode(Envelope("offline", meta={"worker": self.id, "generation": generation,
                                                    "goodbye": goodbye}))

        link = BrokerLink(self.address, self.id, will=(self.topics.alive(self.id), farewell))
        self.link = link
        await link.subscribe(self.topics.shared_new, self._on_open)
        await link.subscribe(self.topics.inbound(self.id),
                             self._on_input)
        await link.subscribe(self.topics.control(self.id),
                             self._on_control)
        await link.subscribe(caller_topic(), self._on_caller)
        await link.start()
        heartbeat = asyncio.create_task(self._heartbeat())
        if ready is not None:
            ready()
        try:
            await self._stopping.wait()
        finally:
            heartbeat.cancel()
            for key in list(self.sessions):
                await self._close(key)
            await link.close()

    def stop(self) -> None:
        self._stopping.set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- incoming ----------------------------------------------------------------

    def _decode(self, topic: str, payload: bytes) -> Envelope | None:
        try:
            return decode(payload)
        except WireError as exc:
            self.rejected += 1
            log.warning("dropped a bad message on %s: %s", topic, exc)
            return None

    def _reject(self, topic: str, why: str) -> None:
        self.rejected += 1
        log.warning("dropped a message on %s: %s", topic, why)

    def _on_open(self, topic: str, payload: bytes) -> None:
        env = self._decode(topic, payload)
        if env is None:
            return
        try:
            if env.kind != "open" or not env.conversation or env.epoch < 1:
                raise WireError(f"expected an 'open' with a conversation and an epoch, got "
                                f"'{env.kind}'")
            caller = topic_id(_meta_str(env, "caller"))
            first_input = _meta_int(env, "first_in")
            first_control = _meta_int(env, "first_ctl")
            cut = _meta_int(env, "cut")
        except WireError as exc:
            self._reject(topic, str(exc))
            return
        self._spawn(self._open(env, caller, first_input, first_control, cut))

    async def _open(self, env: Envelope, caller: str, first_input: int, first_control: int,
                    cut: int) -> None:
        key = (caller, env.conversation)
        if key in self.sessions:
            await self._close(key)
        link = self.link
        assert link is not None
        reply = reply_topic(caller, env.conversation, self.stage_name)

        def publish(payload: bytes) -> None:
            link.publish(reply, payload)

        session = Session(
            stage=self.adapter.create(self.options), name=self.stage_name, caller=caller,
            conversation=env.conversation, epoch=env.epoch, sample_rate=self.config.sample_rate,
            publish=publish,
            first_input=first_input, first_control=first_control, cut=cut, log=log,
        )
        session.observe(env)
        self.sessions[key] = session
        link.publish(reply, encode(Envelope("opened", env.conversation, self.stage_name,
                                            epoch=env.epoch, meta={"worker": self.id})))
        log.info("serving conversation %s of caller %s (epoch %d)", env.conversation, caller,
                 env.epoch)
        await session.start()

    def _session(self, topic: str, env: Envelope) -> Session | None:
        caller = topic.split("/")[-3]
        session = self.sessions.get((caller, env.conversation))
        if session is not None and session.epoch == env.epoch:
            return session
        if session is not None and env.epoch < session.epoch:
            return None  # a late message from before the conversation was reopened
        told = (caller, env.conversation, env.epoch)
        if told not in self._told_unknown and self.link is not None:
            self._told_unknown.add(told)
            self.link.publish(reply_topic(caller, env.conversation, self.stage_name),
                              encode(Envelope("unknown", env.conversation, self.stage_name,
                                              epoch=env.epoch)))
        return None

    def _on_input(self, topic: str, payload: bytes) -> None:
        env = self._decode(topic, payload)
        if env is None:
            return
        if env.kind != "frame" or env.frame is None or isinstance(env.frame, SystemFrame):
            self._reject(topic, f"expected an ordered frame, got '{env.kind}'")
            return
        session = self._session(topic, env)
        if session is not None:
            session.accept_input(env)

    def _on_control(self, topic: str, payload: bytes) -> None:
        env = self._decode(topic, payload)
        if env is None:
            return
        if env.kind not in ("frame", "sync", "close") or (
                env.kind == "frame" and not isinstance(env.frame, SystemFrame)):
            self._reject(topic, f"expected a control frame, sync or close, got '{env.kind}'")
            return
        session = self._session(topic, env)
        if session is None:
            return
        try:
            if env.kind == "frame":
                session.accept_control(env)
            elif env.kind == "sync":
                session.sync(env)
            else:
                self._spawn(self._close((session.caller, session.conversation)))
        except (TypeError, ValueError) as exc:
            self._reject(topic, str(exc))

    def _on_caller(self, topic: str, payload: bytes) -> None:
        """A caller left: close its conversations now if it said goodbye; after a grace
        if it was its last will (a broker restarting may send wills of live clients)."""
        env = self._decode(topic, payload)
        if env is None or env.kind != "offline":
            return
        caller = topic.rsplit("/", 1)[-1]
        if env.meta.get("goodbye") is True:
            for key in [k for k in self.sessions if k[0] == caller]:
                self._spawn(self._close(key))
        else:
            self._orphaned[caller] = time.monotonic()

    async def _close_orphans(self) -> None:
        now = time.monotonic()
        for caller, since in list(self._orphaned.items()):
            if now - since < ORPHAN_SECONDS:
                continue
            del self._orphaned[caller]
            for key, session in list(self.sessions.items()):
                if key[0] == caller and session.last_input < since:
                    await self._close(key)

    async def _close(self, key: tuple[str, str]) -> None:
        session = self.sessions.pop(key, None)
        if session is not None:
            await session.stop()
            log.info("closed conversation %s of caller %s", key[1], key[0])

    # --- liveness ------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        link = self.link
        assert link is not None
        topic = self.topics.alive(self.id)
        while True:
            link.publish(topic, encode(Envelope("heartbeat", meta={
                "worker": self.id, "generation": link.generation,
                "sessions": len(self.sessions)})), qos=0)
            await self._close_orphans()
            idle = time.monotonic() - IDLE_SECONDS
            for key, session in list(self.sessions.items()):
                if session.last_input < idle:
                    await self._close(key)
            if len(self._told_unknown) > 10000:
                self._told_unknown.clear()
            await asyncio.sleep(HEARTBEAT_SECONDS)


def run_worker(config: PipelineConfig, stage: str, broker: str, *,
               console: Console | None = None, worker_id: str | None = None) -> None:
    """Serve ``stage`` until interrupted (Ctrl-C or SIGTERM); the ``cascade worker`` command."""
    console = console or Console(stderr=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    worker = Worker(config, stage, broker, worker_id)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, worker.stop)
        console.print(f"starting {worker.describe()}", highlight=False)

        def ready() -> None:
            console.print(f"ready: {worker.id}", highlight=False)

        await worker.serve(ready)

    asyncio.run(main())


def _arguments(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(prog="python -m cascade.distributed.worker",
                                     description="Serve one stage of a pipeline over MQTT.")
    parser.add_argument("--stage", required=True)
    parser.add_argument("--pipeline", default=None, help="pipeline YAML or built-in name")
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--id", default=None, help="worker id (default: host-pid-random)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from cascade.errors import CascadeError
    from cascade.run_command import find_pipeline

    args = _arguments(argv)
    console = Console(stderr=True)
    try:
        run_worker(find_pipeline(args.pipeline), args.stage, args.broker, console=console,
                   worker_id=args.id)
    except CascadeError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
