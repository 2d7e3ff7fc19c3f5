"""The ``cascade`` command: run a call, read a trace, list adapters.

Every command turns a ``CascadeError`` into one clear line on stderr and a
non-zero exit code; tracebacks are for bugs, not for bad input.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cascade.errors import CascadeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Cascade: voice agents as a traced, measurable stage graph.")
err = Console(stderr=True)
out = Console()


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@app.command()
def run(
    input: Annotated[Path, typer.Option("--input", "-i", help="recording of the caller "
                                        "(WAV, FLAC, OGG, MP3; any rate and channels)")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="the call as it happened: stereo WAV, caller left, agent right",
    )] = None,
    trace: Annotated[Path | None, typer.Option("--trace", "-t", help="spans, JSON Lines")] = None,
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="pipeline YAML "
                                                 "file or built-in name (default: local)")] = None,
    fast: Annotated[bool, typer.Option("--fast", help="virtual clock: no waiting between "
                                       "frames; compute takes zero pipeline time")] = False,
    mix: Annotated[bool, typer.Option("--mix", help="write a mono mix instead of stereo")] = False,
    greeting: Annotated[str | None, typer.Option("--greeting", help="what the agent says "
                                                 "first")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Stream a recorded caller through the pipeline at real-time pace; print each turn."""
    from cascade.run_command import run_recording

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        turns = run_recording(input, output=output, trace=trace, pipeline=pipeline, fast=fast,
                              mix=mix, greeting=greeting, console=out)
    except CascadeError as exc:
        raise fail(str(exc)) from None
    if turns == 0:
        err.print("[yellow]warning:[/] no caller turn was detected in the recording")


@app.command("trace")
def trace_command(
    file: Annotated[Path, typer.Argument(help="a JSON Lines trace from `cascade run --trace`")],
    png: Annotated[Path | None, typer.Option("--png", help="also draw a waterfall picture")] = None,
) -> None:
    """Print a per-turn latency table of a trace; optionally draw its waterfall."""
    from cascade.trace_report import summary_table, turn_table
    from cascade.tracing import read_trace

    try:
        spans = read_trace(file)
    except OSError as exc:
        raise fail(f"{file}: cannot read trace ({exc.strerror})") from None
    except ValueError as exc:
        raise fail(str(exc)) from None
    out.print(turn_table(spans))
    out.print(summary_table(spans))
    if png is not None:
        from cascade.waterfall import draw_waterfall

        try:
            draw_waterfall(spans, png)
        except CascadeError as exc:
            raise fail(str(exc)) from None
        out.print(f"waterfall written to {png}")


@app.command()
def adapters() -> None:
    """List installed adapters: kind, capabilities, and whether they can run here."""
    from cascade.registry import adapter_names, load_adapter

    table = Table(title="Cascade adapters")
    for column in ("name", "kind", "streaming", "ready", "install hint"):
        table.add_column(column)
    for name in adapter_names():
        try:
            cls = load_adapter(name)
        except Exception as exc:  # a broken plugin must not hide the others
            table.add_row(name, "?", "", "[red]broken[/]", f"{type(exc).__name__}: {exc}")
            continue
        gaps = cls.missing()
        hint = "" if not gaps else (
            f"pip install 'voice-cascade[{cls.extra}]'" if cls.extra else "; ".join(gaps))
        ready = "[green]yes[/]" if not gaps else f"[red]missing[/] {', '.join(gaps)}"
        table.add_row(name, cls.kind, "yes" if cls.capabilities.streaming else "no", ready,
                      hint)
    out.print(table)


def main() -> None:
    app()
