"""One conversation served on a worker: a small graph-like runner around one stage.

``Session`` mirrors what the caller's graph does for a local stage: ordered
frames are handled one at a time by ``process``, control frames go straight to
``on_system`` ahead of queued work, an ``Interrupt`` drops stale queued data and
cancels an interruptible stage's current frame, ``EndOfStream`` runs ``finish``.
Whatever the stage pushes or records goes back to the caller as one sequenced
output stream; each output carries the key ``(input it came from, index)`` so a
caller that replays its inputs to a new worker can tell repeats from news.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from cascade.clock import RealClock
from cascade.distributed.streams import Receiver, SendLog
from cascade.distributed.wire import Envelope, encode
from cascade.frames import (
    Cancel,
    DataFrame,
    EndOfStream,
    ErrorFrame,
    Frame,
    Interrupt,
    SystemFrame,
)
from cascade.stage import Stage, StageContext
from cascade.tracing import Span, Tracer

OUTPUT_LOG = 4096


class CallerClock(RealClock):
    """The caller's pipeline clock, estimated from the send times its messages carry.

    The offset is the largest (send time - local monotonic time) seen: the message
    that travelled fastest bounds it best, so spans land on the caller's time line
    within one broker hop.
    """

    def __init__(self) -> None:
        super().__init__()
        self.offset: float | None = None

    def observe(self, caller_time: float) -> None:
        candidate = caller_time - time.monotonic()
        if self.offset is None or candidate > self.offset:
            self.offset = candidate

    def now(self) -> float:
        return time.monotonic() + (self.offset or 0.0)


class _SpanSink:
    def __init__(self, session: Session) -> None:
        self.session = session

    def write(self, span: Span) -> None:
        self.session.output("span", span=span)

    def close(self) -> None:
        pass


class Session:
    """A stage instance serving one caller's conversation on this worker."""

    def __init__(
        self, *, stage: Stage, name: str, caller: str, conversation: str, epoch: int,
        sample_rate: int, publish: Callable[[bytes], None], first_input: int,
        first_control: int, cut: int, log: logging.Logger,
    ) -> None:
        self.stage = stage
        self.name = name
        self.caller = caller
        self.conversation = conversation
        self.epoch = epoch
        self.clock = CallerClock()
        self.ctx = StageContext(conversation, self.clock, Tracer(conversation, self.clock,
                                                                 [_SpanSink(self)]),
                                sample_rate, log)
        self._publish = publish
        self.inputs = Receiver(first_input)
        self.controls = Receiver(first_control)
        self.outputs: SendLog[bytes] = SendLog(OUTPUT_LOG)
        self.cut_turn = cut
        self.last_input = time.monotonic()
        self._queue: deque[tuple[int, Frame]] = deque()
        self._wake = asyncio.Event()
        self._control_queue: asyncio.Queue[SystemFrame] = asyncio.Queue()
        self._cause = 0
        self._index = 0
        self._current: Frame | None = None
        self._task: asyncio.Task[None] | None = None
        self._control_task: asyncio.Task[None] | None = None
        self._gap_reported = -1
        stage.bind(name, self.ctx, self._emit)

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.stage.start()
        except Exception as exc:
            await self._report_error(EndOfStream(conversation=self.conversation,
                                                 turn=self.ctx.turn, time=self.clock.now()),
                                     exc)
        self._task = asyncio.create_task(self._work(None), name=f"session:{self.conversation}")
        self._control_task = asyncio.create_task(self._control())

    async def stop(self) -> None:
        for task in (self._task, self._control_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            await self.stage.stop()
        except Exception as exc:
            self.ctx.log.error("stage '%s' failed to stop: %s", self.name, exc)

    # --- input -------------------------------------------------------------------

    def observe(self, env: Envelope) -> None:
        """Trace context and acknowledgements that every caller message carries."""
        self.clock.observe(env.time)
        self.last_input = time.monotonic()
        self.ctx.turn = max(self.ctx.turn, env.turn)
        acked = env.meta.get("a")
        if isinstance(acked, int):
            self.outputs.drop_through(acked)

    def accept_input(self, env: Envelope) -> None:
        """An ordered frame from the caller; a gap asks the caller to resend."""
        assert env.frame is not None
        self.observe(env)
        verdict = self.inputs.check(env.seq)
        if verdict == "ok":
            self._queue.append((env.seq, env.frame))
            self._wake.set()
        elif verdict == "gap" and self._gap_reported != self.inputs.expected:
            self._gap_reported = self.inputs.expected
            self.send_synced()

    def accept_control(self, env: Envelope) -> None:
        """A control frame: applied now, ahead of every queued ordered frame."""
        frame = env.frame
        assert isinstance(frame, SystemFrame)
        self.observe(env)
        verdict = self.controls.check(env.seq)
        if verdict == "gap":
            self.send_synced()
            return
        if verdict == "duplicate":
            return
        if isinstance(frame, Interrupt | Cancel):
            self.cut(frame.turn)
        self._control_queue.put_nowait(frame)

    def sync(self, env: Envelope) -> None:
        """The caller says what it has; answer with what we have, resend what it missed."""
        self.observe(env)
        meta = env.meta
        self.inputs.skip_to(int(meta.get("in_first", 0)))
        self.controls.skip_to(int(meta.get("ctl_first", 0)))
        self.send_synced()
        for _, payload in self.outputs.after(int(meta.get("out", 0))):
            self._publish(payload)

    def send_synced(self) -> None:
        self._publish(encode(Envelope(
            "synced", self.conversation, self.name, epoch=self.epoch, turn=self.ctx.turn,
            time=self.clock.now(), meta={"in": self.inputs.last, "ctl": self.controls.last},
        )))

    # --- output ------------------------------------------------------------------

    def output(self, kind: str, frame: Frame | None = None, span: Span | None = None,
               meta: dict[str, Any] | None = None) -> None:
        key = (self._cause, self._index)
        self._index += 1
        env = Envelope(kind, self.conversation, self.name, seq=self.outputs.next_seq, key=key,
                       epoch=self.epoch, turn=self.ctx.turn, time=self.clock.now(),
                       meta=meta or {}, frame=frame, span=span)
        payload = encode(env)
        self.outputs.add(payload)
        self._publish(payload)

    async def _emit(self, frame: Frame) -> None:
        self.output("frame", frame=frame)

    # --- the runner ----------------------------------------------------------------

    def cut(self, turn: int) -> None:
        """An interruption of ``turn``: drop stale queued data, cancel stale work."""
        if turn <= self.cut_turn:
            return
        self.cut_turn = turn
        self._queue = deque(item for item in self._queue
                            if not (isinstance(item[1], DataFrame) and item[1].turn <= turn))
        current = self._current
        if (self.stage.interruptible and current is not None and current.turn <= turn
                and self._task is not None):
            old = self._task
            old.cancel()
            self._current = None
            self._task = asyncio.create_task(self._work(old))

    async def _work(self, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await previous
        stage = self.stage
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            seq, frame = self._queue.popleft()
            self._cause, self._index = seq, 0
            if isinstance(frame, EndOfStream):
                try:
                    await stage.finish()
                except Exception as exc:
                    await self._report_error(frame, exc)
                self.output("finished")
                continue
            if frame.turn <= self.cut_turn and (
                    stage.interruptible or isinstance(frame, DataFrame)):
                continue
            self._current = frame
            try:
                await stage.process(frame)
            except Exception as exc:
                await self._report_error(frame, exc)
            finally:
                self._current = None

    async def _control(self) -> None:
        while True:
            frame = await self._control_queue.get()
            try:
                await self.stage.on_system(frame)
            except Exception as exc:
                await self._report_error(frame, exc)

    async def _report_error(self, frame: Frame, exc: BaseException) -> None:
        now = self.clock.now()
        message = f"{type(exc).__name__}: {exc}"
        self.ctx.log.error("stage '%s' failed on turn %d of conversation %s while handling "
                           "%s: %s", self.name, frame.turn, self.conversation,
                           type(frame).__name__, message)
        self.ctx.tracer.record("error", self.name, frame.turn, now, now, error=message,
                               frame=type(frame).__name__)
        if not isinstance(frame, ErrorFrame):
            self.output("frame", frame=ErrorFrame(conversation=self.conversation,
                                                  turn=frame.turn, time=now, stage=self.name,
                                                  message=message))
