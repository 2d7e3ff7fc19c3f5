"""``cascade replay``: re-execute a recorded call, and show what changed turn by turn."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rich import box
from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from cascade.conversation import Pipeline
from cascade.metrics import METRIC_NAMES, TurnMetrics, turn_metrics
from cascade.replay.format import Recording, read_recording
from cascade.replay.player import ReplayResult, StagePlan, plan_replay, replay_call
from cascade.trace_report import METRIC_LABELS, milliseconds, shorten, turn_table
from cascade.tracing import Span, TraceSink, TraceWriter


def plan_table(plan: dict[str, StagePlan]) -> Table:
    """One row per stage: replayed from the recording, or run for real, and why."""
    table = Table(title="Stages", box=box.SIMPLE_HEAD)
    for column in ("Stage", "Adapter", "This replay", "Why"):
        table.add_column(column)
    for step in plan.values():
        how = Text("replayed", style="green") if step.replayed else Text("re-run", "bold yellow")
        table.add_row(step.stage, step.adapter, how, Text(step.why))
    return table


def _differences(old: TurnMetrics | None, new: TurnMetrics | None) -> list[tuple[str, str, str]]:
    """(what, recorded, replayed) for everything that differs in one turn."""
    if old is None or new is None:
        return [("Turn", "taken" if old else "none", "taken" if new else "none")]
    rows = [(label, shorten(str(getattr(old, field)), 40), shorten(str(getattr(new, field)), 40))
            for field, label in (("heard", "Heard"), ("reply", "Reply"),
                                 ("end_reason", "End"), ("interrupted", "Interrupted"),
                                 ("errors", "Errors"))
            if getattr(old, field) != getattr(new, field)]
    for name in METRIC_NAMES:
        before, after = getattr(old, name), getattr(new, name)
        if before != after:
            rows.append((f"{METRIC_LABELS[name]} (ms)", milliseconds(before),
                         milliseconds(after)))
    return rows


def comparison_table(recorded: Iterable[Span], replayed: Iterable[Span]) -> Table:
    """Per turn, what the replay changed: text, end reason and latencies (ms)."""
    old = {m.turn: m for m in turn_metrics(recorded)}
    new = {m.turn: m for m in turn_metrics(replayed)}
    table = Table(title="Changes, turn by turn", box=box.SIMPLE_HEAD,
                  caption="only what differs from the recording")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("Turn", "right"), ("What", "left"), ("Recorded", "right"), ("Replayed", "right"))
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for turn in sorted(old.keys() | new.keys()):
        for what, before, after in _differences(old.get(turn), new.get(turn)):
            table.add_row(str(turn), what, before, after)
    if not table.row_count:
        table.add_row("", Text("no change: the replay reproduced the recorded turns", "green"),
                      "", "")
    return table


def report(recording: Recording, result: ReplayResult, console: Console) -> None:
    """What replayed and what ran, where replay may not be exact, and the turns compared."""
    console.print(plan_table(result.plan))
    for stage, how in result.divergences.items():
        console.print(Text.assemble(
            ("warning: ", "yellow"),
            f"replayed stage '{stage}' reacts to control frames, and {how}; from there "
            "on its recorded output may not be what it would do with this pipeline "
            "(re-run it to find out)."))
    recorded = turn_table(recording.spans())
    recorded.title = "Recorded turns"
    replayed = turn_table(result.spans)
    replayed.title = "Replayed turns"
    console.print(recorded)
    console.print(replayed)
    console.print(comparison_table(recording.spans(), result.spans))


def run_replay(recording: Path, pipeline: str | None, trace: Path | None, *,
               console: Console, rerun: Iterable[str] = ()) -> ReplayResult:
    """Replay ``recording`` through ``pipeline`` (None: the recorded pipeline), print
    the comparison, and write the new trace to ``trace`` when given."""
    from cascade.run_command import find_pipeline

    loaded = read_recording(recording)
    ready = Pipeline(find_pipeline(pipeline)) if pipeline is not None else None
    console.print(f"{recording}: conversation {loaded.conversation}, recorded on the "
                  f"{loaded.clock} clock by Cascade {loaded.cascade_version}; replaying on "
                  "the virtual clock")
    sinks: list[TraceSink] = [TraceWriter(trace)] if trace is not None else []
    try:
        if ready is not None:
            _load_models(ready, plan_replay(loaded, ready, rerun), console)
        result = replay_call(loaded, ready, rerun=rerun, traces=sinks)
    finally:
        for sink in sinks:
            sink.close()
    report(loaded, result, console)
    if loaded.clock == "real" and result.rerun:
        console.print("[dim]note: the call was recorded in real time; re-run stages "
                      "compute in zero virtual time, so their latencies are not "
                      "comparable with the recorded ones[/]")
    if trace is not None:
        console.print(f"trace written to {trace}")
    return result


def _load_models(pipeline: Pipeline, plan: dict[str, StagePlan], console: Console) -> None:
    """Load the models of the stages that will run (replayed stages need none)."""
    for name, step in plan.items():
        if step.replayed or name not in pipeline.adapters:
            continue
        adapter, options = pipeline.adapters[name]
        adapter.ensure_available(step.adapter, options)
        with console.status(f"loading {name} ({step.adapter})…"):
            adapter.preload(options)
