"""The ``cascade`` command: run a call, read a trace, list adapters.

Every command turns a ``CascadeError`` into one clear line on stderr and a
non-zero exit code; tracebacks are for bugs, not for bad input.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cascade.config import PipelineConfig
from cascade.errors import CascadeError, MissingDependency

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Cascade: voice agents as a traced, measurable stage graph.")
err = Console(stderr=True)
out = Console()


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@app.command()
def run(
    input: Annotated[Path | None, typer.Option("--input", "-i", help="recording of the "
                                               "caller (WAV, FLAC, OGG, MP3; any rate and "
                                               "channels)")] = None,
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
    mic: Annotated[bool, typer.Option("--mic", help="talk to it: microphone in, speaker "
                                      "out (the [mic] extra)")] = False,
    input_device: Annotated[str | None, typer.Option("--input-device", help="microphone "
                                                     "name or index (cascade devices)")] = None,
    output_device: Annotated[str | None, typer.Option("--output-device", help="speaker "
                                                      "name or index")] = None,
    headphones: Annotated[bool, typer.Option("--headphones", help="no echo cancelling (the "
                                             "agent cannot hear itself)")] = False,
    record: Annotated[Path | None, typer.Option("--record", help="with --mic: write the "
                                                "call (you left, agent right)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Stream a recorded caller through the pipeline at real-time pace, or talk to it with
    --mic; print each turn."""
    from cascade.run_command import run_recording

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if mic == (input is not None):
        raise fail("give either --input FILE (a recorded caller) or --mic (talk to it)")
    if mic:
        try:
            run_microphone = _entry("cascade.frontends.mic", "run_microphone", "mic")
            config = _pipeline(pipeline)
            asr = config.stages.get("asr")
            if asr is not None and asr.adapter == "faster-whisper":
                asr.options["partial_interval"] = 1.0  # the live view shows words as they form
            run_microphone(config, input_device=_device(input_device),
                           output_device=_device(output_device), headphones=headphones,
                           record=record, trace=trace, console=out)
        except CascadeError as exc:
            raise fail(str(exc)) from None
        return
    assert input is not None
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
            table.add_row(name, "?", "", "[red]broken[/]",
                          escape(f"{type(exc).__name__}: {exc}"))
            continue
        gaps = cls.missing()
        hint = "" if not gaps else (
            f"pip install 'voice-cascade[{cls.extra}]'" if cls.extra else "; ".join(gaps))
        ready = "[green]yes[/]" if not gaps else f"[red]missing[/] {escape(', '.join(gaps))}"
        table.add_row(name, cls.kind, "yes" if cls.capabilities.streaming else "no", ready,
                      escape(hint))
    out.print(table)


_SERVER_EXTRAS = {"browser": "web", "openai-realtime": "realtime", "twilio": "phone",
                  "sip": "phone"}


def _entry(module: str, name: str, extra: str) -> Callable[..., Any]:
    """A command's implementation, imported only when used (its extra may be missing)."""
    try:
        found: Callable[..., Any] = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        raise MissingDependency(f"this command ({module})", exc.name or module, extra) from None
    return found


def _device(name: str | None) -> str | int | None:
    return int(name) if name is not None and name.isdigit() else name


def _pipeline(name: str | None) -> PipelineConfig:
    from cascade.run_command import find_pipeline

    return find_pipeline(name)


@app.command()
def serve(
    protocol: Annotated[str, typer.Option("--protocol", help="browser | openai-realtime | "
                                          "twilio | sip")] = "browser",
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p")] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8765,
    token: Annotated[str | None, typer.Option("--token", help="required from clients when "
                                              "bound to a non-loopback address")] = None,
    phone: Annotated[bool, typer.Option("--phone", help="shorthand for --protocol twilio")] = False,
    http_port: Annotated[int | None, typer.Option(
        "--http-port", help="sip: HTTP port of /healthz /readyz /metrics (default: the SIP "
        "port + 1)")] = None,
) -> None:
    """Serve a pipeline: a browser voice page, an OpenAI-Realtime-compatible websocket,
    or a phone endpoint (Twilio Media Streams, SIP/RTP)."""
    servers = {
        "browser": "cascade.servers.browser",
        "openai-realtime": "cascade.servers.realtime",
        "twilio": "cascade.telephony.twilio_server",
        "sip": "cascade.telephony.sip_server",
    }
    chosen = "twilio" if phone else protocol
    if chosen not in servers:
        raise fail(f"unknown protocol '{chosen}'; choose one of: {', '.join(servers)}")
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        raise fail(f"binding to {host} exposes the agent to the network: pass --token SECRET "
                   "(clients must present it), or bind to 127.0.0.1")
    try:
        config = _pipeline(pipeline)
        run_server = _entry(servers[chosen], "serve", _SERVER_EXTRAS[chosen])
        extra = {"http_port": http_port} if chosen == "sip" else {}
        if http_port is not None and chosen != "sip":
            raise fail("--http-port is for --protocol sip (the other servers answer "
                       "/healthz /readyz /metrics on --port)")
        run_server(config, host=host, port=port, token=token, console=out, **extra)
    except CascadeError as exc:
        raise fail(str(exc)) from None


@app.command("eval")
def eval_command(
    suite: Annotated[Path, typer.Argument(help="scenario suite YAML")],
    system: Annotated[list[str], typer.Option("--system", help="NAME=pipeline.yaml; give "
                                              "two to compare them")],
    out: Annotated[Path, typer.Option("--out", help="results folder")] = Path("results"),
    fast: Annotated[bool, typer.Option("--fast", help="virtual clock where the stages "
                                       "allow it")] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Run a scenario suite on one or more systems with identical audio; compare them."""
    try:
        run_evaluation = _entry("cascade.evaluation.command", "run_evaluation", "eval")
        run_evaluation(suite, system, out, fast=fast, seed=seed, console=out_console())
    except CascadeError as exc:
        raise fail(str(exc)) from None


@app.command()
def replay(
    recording: Annotated[Path, typer.Argument(help="a recorded conversation (from eval or "
                                              "run --record-run)")],
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="the changed "
                                                 "pipeline; unchanged stages replay "
                                                 "their recorded outputs")] = None,
    trace: Annotated[Path | None, typer.Option("--trace", "-t")] = None,
) -> None:
    """Re-execute a recorded conversation, optionally through a changed pipeline."""
    try:
        run_replay = _entry("cascade.replay.command", "run_replay", "replay")
        run_replay(recording, pipeline, trace, console=out)
    except CascadeError as exc:
        raise fail(str(exc)) from None


@app.command()
def worker(
    stage: Annotated[str, typer.Option("--stage", help="which stage of the pipeline to serve")],
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p")] = None,
    broker: Annotated[str, typer.Option("--broker", help="mqtt://host:1883")] = "mqtt://127.0.0.1:1883",
) -> None:
    """Serve one stage of a pipeline as a remote worker behind an MQTT broker."""
    try:
        run_worker = _entry("cascade.distributed.worker", "run_worker", "mqtt")
        run_worker(_pipeline(pipeline), stage, broker, console=out)
    except CascadeError as exc:
        raise fail(str(exc)) from None


@app.command()
def devices() -> None:
    """List audio input and output devices (for `cascade run --mic`)."""
    try:
        list_devices = _entry("cascade.frontends.mic", "list_devices", "mic")
        out.print(list_devices())
    except CascadeError as exc:
        raise fail(str(exc)) from None


def out_console() -> Console:
    return out


def main() -> None:
    app()
