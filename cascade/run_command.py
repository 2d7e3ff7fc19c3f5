"""``cascade run``: a recorded caller in, the agent's side and every turn's latency out."""

from __future__ import annotations

import gc
import time
from pathlib import Path

from rich.console import Console
from rich.text import Text

from cascade.audio import read_audio
from cascade.clock import Clock, RealClock, VirtualClock
from cascade.config import PipelineConfig, load_pipeline
from cascade.conversation import Pipeline
from cascade.errors import ConfigError
from cascade.metrics import turn_metrics
from cascade.pipelines import builtin_names, builtin_pipeline
from cascade.runner import run_call
from cascade.tracing import Span, TraceSink, TraceWriter


def find_pipeline(name: str | None) -> PipelineConfig:
    """A pipeline from a file path, or one of the built-in names."""
    if name is None:
        return load_pipeline(builtin_pipeline())
    path = Path(name)
    if path.exists():
        return load_pipeline(path)
    if name in builtin_names():
        return load_pipeline(builtin_pipeline(name))
    raise ConfigError(f"{name}: no such pipeline file, and not a built-in pipeline "
                      f"({', '.join(builtin_names())})")


def load_models(pipeline: Pipeline, console: Console) -> None:
    """Load every shared model once, showing what is loading and how long it took."""
    pipeline.check()
    for stage, (adapter, options) in pipeline.adapters.items():
        started = time.perf_counter()
        with console.status(f"loading {stage} ({pipeline.config.stages[stage].adapter})…"):
            adapter.preload(options)
        took = time.perf_counter() - started
        if took > 0.05:
            console.print(f"[green]✓[/] {stage}: {pipeline.config.stages[stage].adapter} "
                          f"loaded in {took:.1f} s")


def load_for_serving(pipeline: Pipeline, console: Console | None) -> None:
    """A server's start: load every shared model (shown on ``console`` when given), then
    ``freeze_heap``."""
    if console is not None:
        load_models(pipeline, console)
    else:
        pipeline.preload()
    freeze_heap()


def freeze_heap() -> None:
    """Take everything alive now (models, modules) out of the garbage collector's sight.

    A full collection otherwise walks every object the loaded models left: ~30 ms with
    the local stack, more with torch, during which no call in the process gets audio.
    After this it walks only what the calls allocate. Servers call it once models are in.
    """
    gc.collect()
    gc.freeze()


def run_recording(
    input: Path,
    *,
    output: Path | None = None,
    trace: Path | None = None,
    pipeline: str | None = None,
    fast: bool = False,
    mix: bool = False,
    greeting: str | None = None,
    console: Console | None = None,
) -> int:
    """Run one recorded call; returns the number of caller turns the agent answered."""
    from cascade.trace_report import turn_table

    console = console or Console()
    config = find_pipeline(pipeline)
    if greeting is not None:
        llm = next((s for s in config.stages.values() if s.adapter in _llm_names(config)), None)
        if llm is None:
            raise ConfigError("--greeting needs a pipeline with an LLM stage")
        llm.options["greeting"] = greeting
    audio = read_audio(input, config.sample_rate)
    ready = Pipeline(config)
    load_models(ready, console)
    clock: Clock = VirtualClock() if fast else RealClock()
    sinks: list[TraceSink] = [TraceWriter(trace)] if trace else []
    seconds = len(audio) / config.sample_rate
    try:
        with console.status(f"talking: {seconds:.1f} s of caller audio"
                            f"{' (virtual clock)' if fast else ' at real-time pace'}…"):
            result = run_call(ready, audio, clock, sinks)
    finally:
        for sink in sinks:
            sink.close()
    if output is not None:
        result.recorder.write(output, mix=mix)
    print_dialogue(result.spans, console)
    console.print(turn_table(result.spans))
    if output is not None:
        console.print(f"call written to {output} "
                      f"({'mono mix' if mix else 'stereo: caller left, agent right'})")
    if trace is not None:
        console.print(f"trace written to {trace}")
    return sum(1 for m in turn_metrics(result.spans) if m.turn > 0 and m.reply)


def print_dialogue(spans: list[Span], console: Console) -> None:
    """What each side said, turn by turn (the table below has the latencies)."""
    for m in turn_metrics(spans):
        if m.heard:
            console.print(Text.assemble((f"{m.turn:>3} caller: ", "bold cyan"), m.heard))
        if m.reply:
            cut = " [cut off]" if m.interrupted else ""
            console.print(Text.assemble((f"{m.turn:>3}  agent: ", "bold green"), m.reply,
                                        (cut, "red")))


def _llm_names(config: PipelineConfig) -> set[str]:
    from cascade.registry import load_adapter

    return {s.adapter for s in config.stages.values() if load_adapter(s.adapter).kind == "llm"}
