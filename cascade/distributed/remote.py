"""``RemoteStage``: a stage of the local graph whose work happens on a worker.

The proxy forwards the ordered frames its stage accepts and every control frame
to the worker serving the conversation, and pushes whatever the remote stage
pushes (ordered and control frames alike) into the local graph, in order. The
remote stage's spans land in the local trace on the local clock.

Reliability, in short (``docs/mqtt.md`` has the whole protocol):

* every stream is numbered; duplicates and late copies are dropped, a gap makes
  the other side resend from its log (``sync``);
* a new conversation goes to one worker of the shared subscription and sticks to
  it; when that worker dies (last will, goodbye or missing heartbeats) the proxy
  opens the conversation on another worker and replays its log of recent ordered
  frames; outputs the caller already has are recognised by their key and
  dropped, so the interrupted turn continues where it stopped;
* when no worker takes over within ``failover_timeout`` the turn ends with an
  ``error`` span and an ``ErrorFrame``; nothing waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from cascade.config import PipelineConfig
from cascade.distributed.hub import CallerHub
from cascade.distributed.streams import Receiver, SendLog
from cascade.distributed.topics import BrokerAddress, ServiceTopics, reply_topic
from cascade.distributed.wire import Envelope, WireError, decode, encode
from cascade.errors import CascadeError, ConfigError
from cascade.frames import Cancel, EndOfStream, ErrorFrame, Frame, Interrupt, SystemFrame
from cascade.registry import Adapter
from cascade.stage import Stage

log = logging.getLogger("cascade.distributed")


class NoWorker(CascadeError):
    """No worker took a conversation of a remote stage."""


class RemoteStage(Stage):
    """Runs stage ``name`` of ``config`` on a worker behind the broker at ``broker``."""

    open_timeout = 1.0
    """Seconds to wait for a worker to take the conversation, per attempt."""
    failover_timeout = 10.0
    """Seconds a turn may wait for a (new) worker before it ends with an error."""
    heartbeat_timeout = 3.0
    """A worker silent this long is taken for dead."""
    finish_timeout = 60.0
    """Longest wait for the remote stage to finish after the end of input."""
    log_turns = 1
    """Ordered frames of this many turns before the current one are kept for replay."""
    log_limit = 6000
    """Most ordered frames kept for replay (6000 audio frames: two minutes)."""

    def __init__(self, name: str, adapter: type[Adapter], config: PipelineConfig,
                 broker: str) -> None:
        self.adapter = adapter
        self.accepts = adapter.accepts
        self.__dict__["interruptible"] = adapter.interruptible
        self.topics = ServiceTopics.of(config, name)
        self.address = BrokerAddress.parse(broker)
        self.worker: str | None = None
        self.epoch = 0
        self.cut_turn = -1
        self.workers: list[str] = []
        """Every worker that served this conversation, in order."""
        self.inputs: SendLog[Frame] = SendLog(self.log_limit)
        self.controls: SendLog[SystemFrame] = SendLog(256)
        self.received = Receiver()
        self.delivered = (-1, -1)
        self.finished = asyncio.Event()
        self._hub: CallerHub | None = None
        self._reply = ""
        self._incoming: deque[Envelope] = deque()
        self._wake = asyncio.Event()
        self._opened: asyncio.Future[str] | None = None
        self._delivery: asyncio.Task[None] | None = None
        self._failover: asyncio.Task[None] | None = None
        self._gave_up = asyncio.Event()
        self._sync_asked = -1

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self.ctx.clock.virtual:
            raise ConfigError(f"stage '{self.name}' runs on a remote worker, which needs the "
                              "real clock; run without --fast, or make the stage local")
        self._hub = hub = await CallerHub.acquire(self.address)
        self._reply = reply_topic(hub.caller, self.ctx.conversation, self.name)
        hub.register(self, self._reply)
        await hub.watch(self.topics)
        self._delivery = asyncio.create_task(self._deliver(), name=f"remote:{self.name}")
        if not await self._open_within(self.failover_timeout):
            raise NoWorker(
                f"stage '{self.name}': no worker took conversation {self.ctx.conversation} "
                f"within {self.failover_timeout:g} s at {self.address} (topics "
                f"{self.topics.base}); start one with `cascade worker --stage {self.name} "
                f"--pipeline PIPELINE.yaml --broker {self.address}` using the same pipeline file")

    async def process(self, frame: Frame) -> None:
        turn_floor = self.ctx.turn - self.log_turns
        self.inputs.drop_while(lambda f: f.turn < turn_floor)
        seq = self.inputs.add(frame)
        if self.worker is not None:
            self._send_input(seq, frame)
        elif self._failover is None or self._failover.done():
            self._start_failover("no worker")

    async def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, Interrupt | Cancel):
            self.cut_turn = max(self.cut_turn, frame.turn)
        seq = self.controls.add(frame)
        if self.worker is not None:
            self._send_control(seq, frame)

    async def finish(self) -> None:
        """Send the end of input; return when the remote stage finished (or gave up)."""
        ctx = self.ctx
        await self.process(EndOfStream(conversation=ctx.conversation, turn=ctx.turn,
                                       time=self.now()))
        done = asyncio.create_task(self.finished.wait())
        gave_up = asyncio.create_task(self._gave_up.wait())
        try:
            await asyncio.wait({done, gave_up}, timeout=self.finish_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
            gave_up.cancel()
        if not self.finished.is_set() and not self._gave_up.is_set():
            await self._fail(self.now(), f"the remote stage did not finish within "
                                         f"{self.finish_timeout:g} s")

    async def stop(self) -> None:
        hub = self._hub
        if hub is None:
            return
        if self.worker is not None:
            hub.link.publish(self.topics.control(self.worker, hub.caller, self.ctx.conversation),
                             self._envelope("close"))
        hub.unregister(self._reply)
        for task in (self._delivery, self._failover):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._hub = None
        await hub.release()

    # --- sending ------------------------------------------------------------------

    def _envelope(self, kind: str, seq: int = 0, frame: Frame | None = None,
                  **meta: object) -> bytes:
        meta["a"] = self.received.last
        return encode(Envelope(kind, self.ctx.conversation, self.name, seq=seq,
                               epoch=self.epoch, turn=self.ctx.turn, time=self.now(),
                               meta=meta, frame=frame))

    def _send_input(self, seq: int, frame: Frame) -> None:
        assert self._hub is not None and self.worker is not None
        self._hub.link.publish(self.topics.inbound(self.worker, self._hub.caller,
                                                   self.ctx.conversation),
                               self._envelope("frame", seq, frame))

    def _send_control(self, seq: int, frame: SystemFrame) -> None:
        assert self._hub is not None and self.worker is not None
        self._hub.link.publish(self.topics.control(self.worker, self._hub.caller,
                                                   self.ctx.conversation),
                               self._envelope("frame", seq, frame))

    def resync(self) -> None:
        """Tell the worker what we have; it answers with what it has (after reconnects)."""
        hub = self._hub
        if hub is None or self.worker is None:
            return
        self._sync_asked = self.received.expected
        hub.link.publish(self.topics.control(self.worker, hub.caller, self.ctx.conversation),
                         self._envelope("sync", out=self.received.last,
                                        in_first=self.inputs.first,
                                        ctl_first=self.controls.first))

    # --- receiving ----------------------------------------------------------------

    def on_reply(self, topic: str, payload: bytes) -> None:
        """A message from a worker (called by the hub, on the event loop)."""
        try:
            env = decode(payload)
        except WireError as exc:
            log.warning("stage '%s': dropped a bad reply on %s: %s", self.name, topic, exc)
            return
        if env.epoch != self.epoch:
            return  # from a worker this conversation has left
        kind = env.kind
        if kind == "opened":
            worker = env.meta.get("worker")
            if isinstance(worker, str) and self._opened is not None \
                    and not self._opened.done():
                self._assign(worker)
                self._opened.set_result(worker)
            return
        if self.worker is None:
            return
        assert self._hub is not None
        self._hub.seen(self.topics.base, self.worker)
        if kind == "unknown":
            self.worker_lost(f"worker {self.worker} no longer has the conversation")
        elif kind == "synced":
            self._resend(int(env.meta.get("in", 0)), int(env.meta.get("ctl", 0)))
        elif kind in ("frame", "span", "finished"):
            verdict = self.received.check(env.seq)
            if verdict == "gap" and self._sync_asked != self.received.expected:
                self.resync()
            if verdict != "ok" or env.key <= self.delivered:
                return  # a repeat: a duplicate, or output of a replayed input
            self.delivered = env.key
            self._incoming.append(env)
            self._wake.set()

    def _resend(self, inputs_after: int, controls_after: int) -> None:
        for seq, frame in self.inputs.after(inputs_after):
            self._send_input(seq, frame)
        for seq, control in self.controls.after(controls_after):
            self._send_control(seq, control)

    async def _deliver(self) -> None:
        """Push what the worker sent into the local graph, in order."""
        while True:
            while not self._incoming:
                self._wake.clear()
                await self._wake.wait()
            env = self._incoming.popleft()
            await self._handle(env)

    async def _handle(self, env: Envelope) -> None:
        ctx = self.ctx
        ctx.turn = max(ctx.turn, env.turn)
        if env.kind == "finished":
            self.finished.set()
        elif env.kind == "span" and env.span is not None:
            span = env.span
            ctx.tracer.record(span.name, span.stage, span.turn, span.start, span.end,
                              **{**span.attrs, "worker": self.worker})
        elif env.frame is not None:
            await self.push(env.frame)

    # --- assignment and failover ------------------------------------------------------

    async def _open_once(self, timeout: float) -> bool:
        hub = self._hub
        assert hub is not None
        self.epoch += 1
        self.worker = None
        self.received = Receiver()
        self._opened = asyncio.get_running_loop().create_future()
        first_control = self.controls.next_seq
        hub.link.publish(self.topics.new, self._envelope(
            "open", caller=hub.caller, first_in=self.inputs.first, first_ctl=first_control,
            cut=self.cut_turn))
        try:
            await asyncio.wait_for(self._opened, timeout)
        except TimeoutError:
            return False
        self._resend(self.inputs.first - 1, first_control - 1)
        return True

    def _assign(self, worker: str) -> None:
        assert self._hub is not None
        self.worker = worker
        self.workers.append(worker)
        self._gave_up.clear()
        self._hub.seen(self.topics.base, worker)

    async def _open_within(self, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            if not self._hub or not self._hub.link.connected.is_set():
                await asyncio.sleep(min(0.05, left))
                continue
            if await self._open_once(min(self.open_timeout, left)):
                return True
        return False

    def worker_lost(self, reason: str) -> None:
        """The assigned worker is gone: move the conversation to another one."""
        if self.worker is None:
            return
        log.warning("stage '%s', conversation %s: %s; moving it to another worker",
                    self.name, self.ctx.conversation, reason)
        self.worker = None
        self._start_failover(reason)

    def _start_failover(self, reason: str) -> None:
        if self._failover is not None and not self._failover.done():
            return
        self._gave_up.clear()  # finish() now waits for this attempt
        self._failover = asyncio.create_task(self._move(reason))

    async def _move(self, reason: str) -> None:
        lost_at = self.now()
        if await self._open_within(self.failover_timeout):
            log.info("stage '%s', conversation %s: now on worker %s", self.name,
                     self.ctx.conversation, self.worker)
            return
        await self._fail(lost_at, f"{reason}; no worker took over within "
                                  f"{self.failover_timeout:g} s")

    async def _fail(self, since: float, message: str) -> None:
        """End the turn in flight with an error span and an ``ErrorFrame``."""
        ctx = self.ctx
        turn = max((f.turn for _, f in self.inputs.items() if not isinstance(f, EndOfStream)),
                   default=ctx.turn)
        now = self.now()
        ctx.log.error("stage '%s' (remote) failed on turn %d of conversation %s: %s",
                      self.name, turn, ctx.conversation, message)
        ctx.tracer.record("error", self.name, turn, since, now, error=message, remote=True)
        self._gave_up.set()
        await self.push(ErrorFrame(conversation=ctx.conversation, turn=turn, time=now,
                                   stage=self.name, message=message))
