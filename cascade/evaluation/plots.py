"""The evaluation's pictures, drawn from ``results.json`` alone (matplotlib, off-screen).

* ``latency_cdf.png`` - cumulative distribution of voice-to-voice, endpointing
  and barge-in stop latency, one line per system;
* ``success_by_scenario.png`` - share of each scenario's expected outcomes
  that held, per system, with task success marked;
* ``median_turn.png`` - where the time of each system's median voice-to-voice
  turn went: endpointing, LLM first token, first clause synthesised, playout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cascade.errors import MissingDependency

COLOURS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B2", "#937860")
CDF_METRICS = (("voice_to_voice", "voice-to-voice"), ("endpointing", "endpointing"),
               ("barge_in_stop", "barge-in stop"))
STAGES = (("end_of_turn", "endpointing", "#8172B2"),
          ("llm_first_token", "LLM first token", "#DD8452"),
          ("tts_first_audio", "first clause + TTS", "#CCB974"),
          ("agent_audio", "playout", "#64B5CD"))

Row = Mapping[str, Any]


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependency("cascade eval", "matplotlib", "eval") from exc
    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def _turns(results: Row, system: str) -> list[Row]:
    return [t for t in results["turns"] if t["system"] == system
            and t["kind"] in ("turn", "barge_in")]


def latency_cdf(results: Row, path: Path) -> Path:
    systems = list(results["systems"])
    figure = _figure(13.0, 4.0)
    for index, (metric, title) in enumerate(CDF_METRICS):
        axes = figure.add_subplot(1, len(CDF_METRICS), index + 1)
        for colour, system in zip(COLOURS * 4, systems, strict=False):
            values = sorted(t[metric] for t in _turns(results, system) if t[metric] is not None)
            if values:
                share = [(i + 1) / len(values) for i in range(len(values))]
                axes.step([values[0], *values], [0.0, *share], where="post", color=colour,
                          label=f"{system} (n={len(values)})")
        axes.set_title(title)
        axes.set_xlabel("seconds")
        axes.set_ylim(0, 1.02)
        axes.grid(alpha=0.3)
        if index == 0:
            axes.set_ylabel("share of turns")
        if axes.has_data():
            axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    return path


def success_by_scenario(results: Row, path: Path) -> Path:
    systems = list(results["systems"])
    scenarios = list(results["scenarios"])
    figure = _figure(9.0, 1.2 + 0.45 * len(scenarios) * max(1, len(systems)) / 1.5)
    axes = figure.add_subplot()
    height = 0.8 / max(1, len(systems))
    calls = {(c["system"], c["scenario"]): c for c in results["calls"]}
    for s_index, (colour, system) in enumerate(zip(COLOURS * 4, systems, strict=False)):
        for row, scenario in enumerate(scenarios):
            verdicts = [t["passed"] for t in results["turns"]
                        if t["system"] == system and t["scenario"] == scenario
                        and t["passed"] is not None]
            share = sum(verdicts) / len(verdicts) if verdicts else 0.0
            y = row + (s_index - (len(systems) - 1) / 2) * height
            axes.barh(y, share, height=height * 0.9, color=colour,
                      label=system if row == 0 else None)
            success = calls.get((system, scenario), {}).get("success")
            axes.text(min(share, 1.0) + 0.01, y, "✓" if success else "✗", va="center",
                      fontsize=8, color="#2E7D32" if success else "#C62828")
    axes.set_yticks(range(len(scenarios)), scenarios)
    axes.invert_yaxis()
    axes.set_xlim(0, 1.12)
    axes.set_xlabel("expected outcomes that held (✓ task success)")
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    return path


def median_turn(rows: Sequence[Row]) -> Row | None:
    """The answered turn whose voice-to-voice latency is the median (lower middle)."""
    timed = sorted((r for r in rows if r["voice_to_voice"] is not None),
                   key=lambda r: (r["voice_to_voice"], r["scenario"], r["event"]))
    return timed[(len(timed) - 1) // 2] if timed else None


def stage_segments(row: Row) -> list[tuple[str, float, float, str]]:
    """(label, start, end, colour) from the end of the caller's speech to agent audio."""
    marks = row.get("marks") or {}
    out, cursor = [], 0.0
    for mark, label, colour in STAGES:
        if mark in marks:
            end = max(cursor, float(marks[mark]))
            out.append((label, cursor, end, colour))
            cursor = end
    return out


def median_waterfall(results: Row, path: Path) -> Path:
    systems = list(results["systems"])
    figure = _figure(10.0, 1.6 + 0.7 * len(systems))
    axes = figure.add_subplot()
    labelled: set[str] = set()
    longest = 0.1
    for index, system in enumerate(systems):
        row = median_turn(_turns(results, system))
        if row is None:
            continue
        for label, start, end, colour in stage_segments(row):
            axes.barh(index, end - start, left=start, height=0.55, color=colour,
                      label=None if label in labelled else label)
            labelled.add(label)
        asr = (row.get("marks") or {}).get("asr_final")
        if asr is not None:
            axes.plot([asr, asr], [index - 0.35, index + 0.35], color="#55A868", lw=2,
                      label=None if "ASR final" in labelled else "ASR final")
            labelled.add("ASR final")
        longest = max(longest, row["voice_to_voice"])
        axes.text(row["voice_to_voice"] + 0.02 * longest, index,
                  f"{row['voice_to_voice']:.2f} s  ({row['scenario']} #{row['event']})",
                  va="center", fontsize=8)
    axes.set_yticks(range(len(systems)), systems)
    axes.invert_yaxis()
    axes.set_xlabel("seconds after the caller stopped speaking")
    axes.set_title("median voice-to-voice turn, stage by stage")
    axes.grid(axis="x", alpha=0.3)
    axes.set_xlim(0, longest * 1.4)
    if labelled:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    return path


def draw_all(results: Row, folder: Path) -> dict[str, str]:
    """Every picture into ``folder``; returns name -> file name."""
    folder.mkdir(parents=True, exist_ok=True)
    drawn = {
        "latency_cdf": latency_cdf(results, folder / "latency_cdf.png"),
        "success_by_scenario": success_by_scenario(results, folder / "success_by_scenario.png"),
        "median_turn": median_waterfall(results, folder / "median_turn.png"),
    }
    return {name: p.name for name, p in drawn.items()}
