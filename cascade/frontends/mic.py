"""Talk to a pipeline through this machine's microphone and speaker (``cascade run --mic``).

``MicrophoneCall`` joins a ``Conversation`` to the sound card: the microphone
is captured at its native rate and resampled to the pipeline rate, 20 ms frames
are *offered* to the graph (a live source never waits: when the pipeline is
behind, a frame is dropped and counted), and the agent's audio plays through a
``Speaker``, whose buffer a barge-in empties at once.

Echo: unless ``--headphones`` is given, each microphone frame first goes
through our ``EchoCanceller`` (adaptive filter plus residual suppression, with
the agent's playback as the reference; see its module for why it is ours). The
in-graph ``echo-gate`` stage is not added: subtracting a second, stale estimate
of an echo the canceller already removed puts a (negated) echo back in. A
pipeline that lists its own echo stage keeps it.

``run_microphone`` is the command: devices are checked before any model loads,
a ``LiveView`` shows the call, Ctrl-C or SIGTERM ends it cleanly, and the trace
and the recording (``CallRecorder``: caller left, agent right) are written.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterable, Sequence
from pathlib import Path

from rich.console import Console, JustifyMethod
from rich.live import Live
from rich.table import Table

from cascade.audio import FRAME_SECONDS
from cascade.clock import RealClock
from cascade.config import PipelineConfig
from cascade.conversation import Conversation, Pipeline
from cascade.frames import PCM, AgentAudio
from cascade.frontends.echo_canceller import EchoCanceller
from cascade.frontends.live_view import LiveView
from cascade.frontends.sound import Device, Microphone, Speaker, all_devices, find_device
from cascade.playout import AudioSink, Playout
from cascade.recording import CallRecorder
from cascade.tracing import MemoryTrace, TraceSink, TraceWriter

PLAYOUT_LEAD = 0.1
"""Agent audio handed to the speaker this far ahead: its jitter buffer."""


def list_devices() -> Table:
    """Every sound device PortAudio sees (``cascade devices``)."""
    table = Table(title="Sound devices (use the index or part of the name with "
                        "--input-device / --output-device)")
    right: JustifyMethod = "right"
    for column in ("#", "name", "host API", "in", "out", "rate", "default"):
        table.add_column(column, justify=right if column in ("#", "in", "out", "rate")
                         else "left")
    for d in all_devices():
        default = ", ".join(k for k, on in (("input", d.default_input),
                                            ("output", d.default_output)) if on)
        table.add_row(str(d.index), d.name, d.host_api, str(d.inputs), str(d.outputs),
                      f"{d.rate} Hz", default)
    return table


class SinkGroup:
    """Several ``AudioSink``s fed the same agent audio."""

    def __init__(self, sinks: Sequence[AudioSink]) -> None:
        self.sinks = list(sinks)

    def play(self, frame: AgentAudio, at: float) -> None:
        for sink in self.sinks:
            sink.play(frame, at)

    def clear(self, at: float) -> None:
        for sink in self.sinks:
            sink.clear(at)


class MicrophoneCall:
    """One live conversation between the sound card and a pipeline."""

    def __init__(
        self,
        pipeline: Pipeline,
        microphone: Device,
        speaker: Device,
        *,
        view: LiveView | None = None,
        recorder: CallRecorder | None = None,
        traces: Iterable[TraceSink] = (),
        conversation_id: str | None = None,
        cancel_echo: bool = True,
    ) -> None:
        self.pipeline = pipeline
        self.clock = RealClock()
        self.rate = pipeline.config.sample_rate
        self.view = view
        self.recorder = recorder
        self.speaker = Speaker(speaker, self.clock)
        self.microphone = Microphone(microphone, self.rate, self._captured)
        self.frames_in = 0
        self.dropped = 0
        sinks: list[AudioSink] = [self.speaker]
        sinks += [s for s in (recorder, view) if s is not None]
        trace_sinks = list(traces) + ([view] if view is not None else [])
        self.conversation: Conversation = pipeline.conversation(
            self.clock, sink=SinkGroup(sinks), traces=trace_sinks,
            conversation_id=conversation_id)
        playout = self.conversation.graph.stages.get("playout")
        if isinstance(playout, Playout):
            playout.lead = PLAYOUT_LEAD
        if view is not None:
            self.conversation.graph.observers.append(view.observe)
        playback = self.conversation.ctx.playback
        self.canceller = (EchoCanceller(playback, int(self.rate * FRAME_SECONDS))
                          if cancel_echo and playback is not None else None)

    def _captured(self, pcm: PCM) -> None:
        """A 20 ms microphone frame, on the event loop: offer it, never wait."""
        conversation = self.conversation
        frame = conversation.audio_frame(pcm)  # what offer_audio does, keeping the frame
        if self.canceller is not None:
            frame.pcm = self.canceller.process(pcm, frame.time)
        self.frames_in += 1
        if not conversation.graph.offer(frame):
            self.dropped += 1
        if self.recorder is not None:
            self.recorder.add_user(pcm, frame.time)  # what the microphone heard

    async def run(self, stop: asyncio.Event) -> None:
        """Listen and speak until ``stop`` is set; always releases the devices."""
        await self.conversation.start()
        try:
            self.speaker.start()
            self.microphone.start()
            await stop.wait()
        finally:
            self.microphone.stop()
            self.speaker.stop()
            await self.conversation.stop()


def run_microphone(
    config: PipelineConfig,
    *,
    input_device: str | int | None = None,
    output_device: str | int | None = None,
    headphones: bool = False,
    record: Path | None = None,
    trace: Path | None = None,
    console: Console | None = None,
) -> int:
    """Hold a live conversation until Ctrl-C/SIGTERM; returns the turns the agent answered."""
    from cascade.metrics import turn_metrics
    from cascade.run_command import load_models
    from cascade.trace_report import summary_table, turn_table

    console = console or Console()
    microphone = find_device(input_device, "input")
    speaker = find_device(output_device, "output")
    echo_note = ("echo: off (headphones)" if headphones
                 else "echo: canceller on (the agent's playback is the reference)")
    pipeline = Pipeline(config)
    load_models(pipeline, console)
    memory = MemoryTrace()
    writer = TraceWriter(trace) if trace is not None else None
    recorder = CallRecorder(config.sample_rate) if record is not None else None
    view = LiveView(f"Cascade · {config.name} · mic {microphone.index} '{microphone.name}' "
                    f"→ speaker {speaker.index} '{speaker.name}'")
    view.note = echo_note
    call = MicrophoneCall(pipeline, microphone, speaker, view=view, recorder=recorder,
                          traces=[memory, *([writer] if writer else [])],
                          cancel_echo=not headphones)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            with Live(view, console=console, refresh_per_second=8,
                      redirect_stderr=False):
                await call.run(stop)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    try:
        call.clock.run(main())
    finally:
        if writer is not None:
            writer.close()
        if recorder is not None and record is not None:
            recorder.write(record)
    console.print(turn_table(memory.spans))
    console.print(summary_table(memory.spans))
    if call.dropped:
        console.print(f"[yellow]{call.dropped} of {call.frames_in} microphone frames were "
                      "dropped: the pipeline fell behind[/]")
    if record is not None:
        console.print(f"call written to {record} (stereo: you left, agent right)")
    if trace is not None:
        console.print(f"trace written to {trace}")
    return sum(1 for m in turn_metrics(memory.spans) if m.turn > 0 and m.reply)
