"""``cascade eval``: build the caller tracks, run every system, measure, compare, report."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cascade.audio import write_audio
from cascade.errors import ConfigError, MissingDependency
from cascade.evaluation.audio_build import CallerTrack, build_track
from cascade.evaluation.measure import measure_call
from cascade.evaluation.outcomes import Judge, judge_call, load_judge
from cascade.evaluation.plots import draw_all
from cascade.evaluation.report import (
    SCHEMA,
    machine_info,
    package_versions,
    render_markdown,
    summarise,
    write_results,
)
from cascade.evaluation.runner import CallRecord, run_order, run_suite
from cascade.evaluation.scenarios import Suite, load_suite
from cascade.evaluation.stats import compare
from cascade.evaluation.systems import System, load_systems
from cascade.evaluation.voices import Voice

RESAMPLES = 10_000
LEVEL = 0.95


def build_tracks(suite: Suite, voice: Voice, seed: int, console: Console) -> list[CallerTrack]:
    tracks = []
    with console.status("building caller tracks…") as status:
        for scenario in suite.scenarios:
            status.update(f"building caller track: {scenario.id}")
            tracks.append(build_track(scenario, suite, voice, seed))
    return tracks


def check_extras() -> None:
    """Fail before the calls, not after them, when the report cannot be made."""
    for module, what in (("jiwer", "jiwer"), ("matplotlib", "matplotlib")):
        if importlib.util.find_spec(module) is None:
            raise MissingDependency("cascade eval", what, "eval")


def check_rates(suite: Suite, systems: Sequence[System]) -> None:
    for system in systems:
        if system.config.sample_rate != suite.sample_rate:
            raise ConfigError(
                f"system '{system.name}' ({system.source}) runs at "
                f"{system.config.sample_rate} Hz but the suite's caller tracks are "
                f"{suite.sample_rate} Hz: set the same sample_rate in both, so every system "
                "hears the same samples")


def assemble(suite: Suite, suite_file: Path, systems: Sequence[System],
             tracks: Sequence[CallerTrack], records: Sequence[CallRecord], *, fast: bool,
             seed: int, judge: Judge | None = None) -> dict[str, Any]:
    """Measure and judge every call; everything ``results.json`` holds except the plots."""
    judge_options = suite.judge.options if suite.judge and suite.judge.callable else {}
    by_track = {t.scenario.id: t for t in tracks}
    by_system = {s.name: s for s in systems}
    turns: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for record in records:
        track = by_track[record.scenario]
        measure = measure_call(record.system, track, record.spans, record.origin)
        success = judge_call(track.scenario, measure, judge, judge_options)
        if record.error:
            success = False
        cost = by_system[record.system].cost(record.caller_seconds, record.agent_seconds)
        turns += [row.as_dict() for row in measure.rows]
        calls.append({
            "system": record.system, "scenario": record.scenario, "position": record.position,
            "success": success, "cost": round(cost, 6),
            "agent_replies": measure.agent_replies,
            "spurious_replies": measure.spurious_replies,
            "errors": sum(1 for s in record.spans if s.name == "error"),
            "caller_seconds": round(record.caller_seconds, 3),
            "agent_seconds": round(record.agent_seconds, 3),
            "wall_seconds": round(record.wall_seconds, 3), "origin": round(record.origin, 4),
            "input_sha256": record.input_sha256, "trace": record.trace, "audio": record.audio,
            "error": record.error,
        })
    names = [s.name for s in systems]
    comparisons = compare(turns, calls, names, seed, RESAMPLES, LEVEL)
    return {
        "schema": SCHEMA,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "suite": {"name": suite.name, "file": str(suite_file),
                  "sha256": hashlib.sha256(suite_file.read_bytes()).hexdigest(),
                  "voice": suite.voice.model_dump(mode="json"),
                  "sample_rate": suite.sample_rate},
        "run": {"seed": seed, "fast": fast, "clock": "virtual" if fast else "real",
                "resamples": RESAMPLES, "level": LEVEL},
        "machine": machine_info(),
        "packages": package_versions(),
        "systems": {s.name: {"pipeline": s.source, "config_sha256": s.config_sha256,
                             "prices": s.prices, "config": s.config.model_dump(mode="json")}
                    for s in systems},
        "scenarios": {t.scenario.id: {
            "description": t.scenario.description, "tags": t.scenario.tags,
            "channel": t.scenario.channel,
            "noise": None if t.scenario.noise is None else t.scenario.noise.model_dump(),
            "network": (None if t.scenario.network is None
                        else t.scenario.network.model_dump()),
            "expect_silence": t.scenario.expect_silence,
            "track_sha256": t.sha256, "seconds": round(t.seconds, 3),
            "order": run_order(names, t.scenario.id, seed),
            "events": [e.as_dict() for e in t.events]} for t in tracks},
        "calls": calls,
        "turns": turns,
        "summary": {name: summarise(turns, calls, name) for name in names},
        "comparisons": [c.as_dict() for c in comparisons],
    }


def print_summary(results: dict[str, Any], console: Console) -> None:
    systems = list(results["systems"])
    table = Table(title="paired comparison" if len(systems) > 1 else "summary")
    if len(systems) > 1:
        for column in ("metric", "pairs", systems[0], "other", "difference", "95% CI",
                       "winner"):
            table.add_column(column)
        for c in results["comparisons"]:
            if c["n"] == 0:
                continue
            ci = "–" if c["ci"] is None else f"[{c['ci'][0]:+.3g}, {c['ci'][1]:+.3g}]"
            table.add_row(c["metric"], str(c["n"]), f"{c['baseline_mean']:.3g}",
                          f"{c['other']}: {c['other_mean']:.3g}", f"{c['difference']:+.3g}",
                          ci, c["winner"] or "[dim]none[/]")
    else:
        table.add_column("system")
        table.add_column("success")
        table.add_column("voice-to-voice p50")
        for name, s in results["summary"].items():
            v2v = s["metrics"].get("voice_to_voice")
            table.add_row(name, f"{s['successes']}/{s['calls']}",
                          "–" if v2v is None else f"{v2v['p50']:.3f} s")
    console.print(table)
    unjudged = sum(s.get("unjudged_rubrics", 0) for s in results["summary"].values())
    if unjudged:
        console.print(f"[yellow]{unjudged} rubric check(s) got no verdict from the judge; "
                      "they count neither way (see report.md, Unjudged rubrics)[/yellow]")


def run_evaluation(suite: Path, systems: list[str], out: Path, *, fast: bool = False,
                   seed: int = 0, console: Console | None = None,
                   cache: Path | None = None, only: list[str] | None = None) -> dict[str, Any]:
    """Run ``suite`` on every ``NAME=pipeline.yaml`` system; write results to ``out``.

    ``cache`` is where the caller's lines are kept (default ``voices.default_cache()``);
    ``only`` runs just the scenarios with these ids.
    """
    console = console or Console()
    check_extras()
    loaded_suite = load_suite(suite)
    if only:
        loaded_suite = loaded_suite.select(only)
    judge = load_judge(loaded_suite.judge)  # a bad judge is refused before any call runs
    loaded = load_systems(systems, near=suite.parent)
    check_rates(loaded_suite, loaded)
    out.mkdir(parents=True, exist_ok=True)
    voice = Voice(loaded_suite.voice, loaded_suite.sample_rate, cache)
    tracks = build_tracks(loaded_suite, voice, seed, console)
    if loaded_suite.save_audio:
        caller = out / "audio" / "caller"
        caller.mkdir(parents=True, exist_ok=True)
        for track in tracks:
            write_audio(caller / f"{track.scenario.id}.wav", track.pcm, track.rate)
    records = run_suite(loaded, tracks, fast=fast, seed=seed, out=out,
                        save_audio=loaded_suite.save_audio, console=console)
    results = assemble(loaded_suite, suite, loaded, tracks, records, fast=fast, seed=seed,
                       judge=judge)
    results["plots"] = draw_all(results, out)
    write_results(results, out / "results.json")
    (out / "report.md").write_text(render_markdown(results), encoding="utf-8")
    print_summary(results, console)
    console.print(f"results in {out}/ (report.md, results.json, plots, traces)")
    return results
