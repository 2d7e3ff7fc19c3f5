"""Embed Cascade in your own program: build a pipeline, feed audio, read the trace.

    python examples/embed.py call.wav

The same few calls serve a phone backend (one ``pipeline.conversation`` per
call, all sharing the loaded models) or a test harness (``VirtualClock``).
"""

from __future__ import annotations

import asyncio
import sys

from cascade import MemoryTrace, Pipeline, RealClock, load_pipeline
from cascade.audio import read_audio
from cascade.metrics import turn_metrics
from cascade.pipelines import builtin_pipeline
from cascade.recording import CallRecorder


async def main(path: str) -> None:
    pipeline = Pipeline(load_pipeline(builtin_pipeline("local")))
    pipeline.preload()  # models load once per process
    clock = RealClock()
    trace = MemoryTrace()
    recorder = CallRecorder(pipeline.config.sample_rate)  # or your own AudioSink
    conversation = pipeline.conversation(clock, sink=recorder, traces=[trace])
    await conversation.start()
    audio = read_audio(path, pipeline.config.sample_rate)
    await conversation.play_recording(audio)  # or conversation.send_audio(pcm) per frame
    await conversation.wait_finished()
    await conversation.stop()
    for turn in turn_metrics(trace.spans):
        print(f"turn {turn.turn}: heard {turn.heard!r} -> replied {turn.reply!r} "
              f"(voice-to-voice {turn.voice_to_voice})")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "call.wav"))
