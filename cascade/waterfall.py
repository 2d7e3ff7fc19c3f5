"""A waterfall picture of a conversation: one row per span name, one bar per span.

Bars run from a span's start to its end on the pipeline clock, coloured by span
name and labelled with their turn; spans that take no time (errors) are drawn
as markers, and interrupted agent speech is hatched. Needs matplotlib (the
``[plot]`` extra), imported only when a picture is drawn and rendered
off-screen, so it never touches a GUI or the global pyplot state.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cascade.errors import MissingDependency
from cascade.tracing import Span

ROW_ORDER = (
    "user_speech",
    "asr",
    "end_of_turn",
    "llm",
    "tts",
    "agent_speech",
    "interruption",
    "backchannel",
    "error",
)
COLOURS = {
    "user_speech": "#4C72B0",
    "asr": "#55A868",
    "end_of_turn": "#8172B2",
    "llm": "#DD8452",
    "tts": "#CCB974",
    "agent_speech": "#64B5CD",
    "interruption": "#C44E52",
    "backchannel": "#937860",
    "error": "#D62728",
}
EXTRA_COLOURS = ("#8C8C8C", "#DA8BC3", "#17BECF", "#BCBD22", "#7F7F7F")
BAR_HEIGHT = 0.6
MIN_BAR = 1 / 600  # of the time axis, so a 50 ms span in a 10 min call stays visible


def row_names(spans: Iterable[Span]) -> list[str]:
    """The rows to draw: known span names in pipeline order, then any others alphabetically."""
    present = {s.name for s in spans}
    known = [name for name in ROW_ORDER if name in present]
    return known + sorted(present.difference(ROW_ORDER))


def colour_of(name: str, rows: list[str]) -> str:
    """A fixed colour per known span name; unknown names share a small palette."""
    if name in COLOURS:
        return COLOURS[name]
    extras = [row for row in rows if row not in COLOURS]
    return EXTRA_COLOURS[extras.index(name) % len(EXTRA_COLOURS)]


def draw_waterfall(spans: Iterable[Span], path: str | Path, title: str | None = None) -> Path:
    """Draw ``spans`` as a waterfall PNG at ``path`` and return the path."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError as exc:
        raise MissingDependency("trace --png", "matplotlib", "plot") from exc

    spans = sorted(spans, key=lambda s: (s.start, s.end))
    rows = row_names(spans)
    first = min((s.start for s in spans), default=0.0)
    last = max((s.end for s in spans), default=1.0)
    length = max(last - first, 1e-3)
    width = min(24.0, max(11.0, 6.0 + length / 5.0))
    figure = Figure(figsize=(width, 1.6 + 0.55 * max(len(rows), 1)), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if title is None:
        conversations = sorted({s.conversation for s in spans})
        title = f"Conversation {conversations[0]}" if len(conversations) == 1 else "Trace"
    axes.set_title(title, loc="left", fontsize=11, fontweight="bold")
    axes.set_xlabel("time on the pipeline clock (s)")
    axes.grid(axis="x", color="#DDDDDD", linewidth=0.8)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)

    if spans:
        _draw_rows(axes, spans, rows, length)
        axes.set_yticks(range(len(rows)), rows)
        axes.set_ylim(len(rows) - 0.4, -0.6)
        left = 0.0 if 0.0 <= first <= 0.25 * length else first - 0.01 * length
        axes.set_xlim(left, last + 0.03 * length)
        handles = [Patch(facecolor=colour_of(name, rows), label=name) for name in rows]
        if any(s.name == "agent_speech" and s.attrs.get("interrupted") for s in spans):
            handles.append(Patch(facecolor="white", edgecolor="#333333", hatch="///",
                                 label="interrupted"))
        axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                    frameon=False, fontsize=9)
    else:
        axes.set_yticks([])
        axes.text(0.5, 0.5, "no spans in this trace", ha="center", va="center",
                  transform=axes.transAxes, color="#666666")
    figure.tight_layout()
    figure.savefig(path)
    return Path(path)


def _draw_rows(axes: Any, spans: list[Span], rows: list[str], length: float) -> None:
    """A bar per span (a marker for spans that take no time) and a turn label per row and turn."""
    labelled: set[tuple[str, int]] = set()
    for span in spans:
        y = rows.index(span.name)
        colour = colour_of(span.name, rows)
        width = span.end - span.start
        if width <= 0:
            axes.plot([span.start], [y], marker="D", markersize=7, color=colour,
                      markeredgecolor="#333333", markeredgewidth=0.6, linestyle="none")
        else:
            interrupted = span.name == "agent_speech" and bool(span.attrs.get("interrupted"))
            axes.barh(y, max(width, length * MIN_BAR), left=span.start, height=BAR_HEIGHT,
                      color=colour, edgecolor="#333333" if interrupted else "none",
                      linewidth=0.6, hatch="///" if interrupted else None)
        key = (span.name, span.turn)
        if key in labelled:
            continue
        labelled.add(key)
        axes.annotate(f"T{span.turn}", (span.start, y - BAR_HEIGHT / 2), xytext=(1, 2),
                      textcoords="offset points", ha="left", va="bottom", fontsize=7,
                      color="#333333")
