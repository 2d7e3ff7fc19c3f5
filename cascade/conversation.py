"""One conversation: a graph built from a pipeline, with its clock, tracer and audio ends.

``Pipeline`` resolves a pipeline config once (adapters, validated options,
shared models); ``Pipeline.conversation()`` builds an independent graph for each
call, all sharing the loaded models. A ``Conversation`` is fed caller audio and
plays agent audio into an ``AudioSink``.
"""

from __future__ import annotations

import importlib
import itertools
import logging
from collections.abc import Iterable

from pydantic import BaseModel

from cascade.audio import FRAME_SECONDS, split_frames
from cascade.clock import Clock
from cascade.config import PipelineConfig, resolve
from cascade.errors import MissingDependency
from cascade.frames import PCM, EndOfStream, Frame, SystemFrame, UserAudio
from cascade.graph import Graph
from cascade.playback import PlaybackHistory
from cascade.playout import AudioSink, Playout
from cascade.registry import Adapter
from cascade.stage import Stage, StageContext
from cascade.tracing import Tracer, TraceSink

log = logging.getLogger("cascade")
_ids = itertools.count(1)


def remote_stage(name: str, adapter: type[Adapter], config: PipelineConfig,
                 broker: str) -> Stage:
    """A proxy that runs stage ``name`` on a worker behind ``broker`` (the [mqtt] extra)."""
    try:
        module = importlib.import_module("cascade.distributed.remote")
    except ModuleNotFoundError as exc:
        raise MissingDependency(f"remote stage '{name}'", exc.name or "aiomqtt", "mqtt") from None
    stage: Stage = module.RemoteStage(name, adapter, config, broker)
    return stage


class Pipeline:
    """A validated pipeline whose adapters and shared models are ready to use."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.adapters: dict[str, tuple[type[Adapter], BaseModel]] = resolve(config)

    def check(self) -> None:
        """Raise ``MissingDependency`` naming the extra when an adapter cannot run here."""
        for adapter, options in self.adapters.values():
            adapter.ensure_available(adapter.__name__, options)

    def preload(self) -> None:
        """Load every shared model now rather than at the first conversation."""
        self.check()
        for adapter, options in self.adapters.values():
            adapter.preload(options)

    def build_stages(self) -> dict[str, Stage]:
        stages: dict[str, Stage] = {}
        for name, (adapter, options) in self.adapters.items():
            remote = self.config.stages[name].remote
            if remote:
                stages[name] = remote_stage(name, adapter, self.config, remote)
            else:
                stages[name] = adapter.create(options)
        return stages

    def output_stages(self) -> list[str]:
        return [n for n, (a, _) in self.adapters.items() if a.kind in ("tts", "fused")]

    def conversation(
        self,
        clock: Clock,
        *,
        sink: AudioSink | None = None,
        traces: Iterable[TraceSink] = (),
        conversation_id: str | None = None,
    ) -> Conversation:
        cid = conversation_id or f"c{next(_ids)}"
        tracer = Tracer(cid, clock, traces)
        rate = self.config.sample_rate
        ctx = StageContext(cid, clock, tracer, rate, log, playback=PlaybackHistory(rate, 4.0))
        stages = self.build_stages()
        stages["playout"] = Playout(sink)
        edges = self.config.edge_pairs()
        if not any(dst == "playout" for _, dst in edges):
            edges += [(name, "playout") for name in self.output_stages()]
        graph = Graph(stages, edges, ctx, self.config.inbox_size)
        return Conversation(graph, ctx)


class Conversation:
    """A running graph for one caller: feed audio in, agent audio comes out."""

    def __init__(self, graph: Graph, ctx: StageContext) -> None:
        self.graph = graph
        self.ctx = ctx
        self.id = ctx.conversation
        self.rate = ctx.sample_rate
        self._media_time: float | None = None

    @property
    def clock(self) -> Clock:
        return self.ctx.clock

    async def start(self) -> None:
        await self.graph.start()

    def audio_frame(self, pcm: PCM, at: float | None = None) -> UserAudio:
        """Wrap caller PCM as a frame stamped with its media time on the pipeline clock.

        Without ``at``, frames of a live source are stamped back to back (network and
        device jitter do not bend the caller's timeline), restarting at the clock after
        a gap of over half a second, and never later than now."""
        if at is None:
            now = self.clock.now()
            duration = len(pcm) / self.rate
            at = now - duration if self._media_time is None else self._media_time
            at = min(max(at, now - 0.5), now)
        self._media_time = at + len(pcm) / self.rate
        return UserAudio(
            conversation=self.id, turn=self.ctx.turn, time=at, pcm=pcm, sample_rate=self.rate
        )

    async def send_audio(self, pcm: PCM, at: float | None = None) -> UserAudio:
        frame = self.audio_frame(pcm, at)
        await self.graph.send(frame)
        return frame

    def offer_audio(self, pcm: PCM) -> bool:
        """Live sources: never wait; False when the pipeline is behind (frame dropped)."""
        return self.graph.offer(self.audio_frame(pcm))

    async def send(self, frame: Frame | SystemFrame) -> None:
        await self.graph.send(frame)

    async def end_input(self) -> None:
        await self.graph.send(
            EndOfStream(conversation=self.id, turn=self.ctx.turn, time=self.clock.now())
        )

    async def play_recording(self, pcm: PCM, realtime: bool = True) -> list[UserAudio]:
        """Stream a whole recording in 20 ms frames at caller pace, then end input."""
        sent = []
        start = self.clock.now()
        for index, chunk in enumerate(split_frames(pcm, self.rate, FRAME_SECONDS)):
            at = start + index * FRAME_SECONDS  # the caller's own timeline, whatever the lag
            if realtime:
                await self.clock.sleep_until(at + FRAME_SECONDS)  # a frame exists once spoken
            sent.append(await self.send_audio(chunk, at))
        if realtime:
            await self.clock.sleep_until(start + len(sent) * FRAME_SECONDS)
        await self.end_input()
        return sent

    async def wait_finished(self) -> None:
        await self.graph.wait_finished()

    async def stop(self) -> None:
        await self.graph.stop()
