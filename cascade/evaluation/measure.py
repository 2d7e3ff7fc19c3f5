"""Per-event metrics of one call: the system's spans against the truth of the caller track.

Every number is measured from where the caller's sound really is on the track
(known exactly, since we built it), not from the system's own VAD, so two
systems are held to the same clock marks. Times below are track seconds; a
span at pipeline time ``t`` is at ``t - origin``.

For a caller turn (``turn`` / ``barge_in``) at [start, end], up to the next
caller turn:

* ``endpointing`` - end of speech -> the system decides the turn is over (the
  first ``end_of_turn`` whose speech end is at or after ``end - 0.3 s``).
* ``voice_to_voice`` - end of speech -> first agent audio of the reply to that
  end of turn.
* ``missed`` - a reply was expected and none was played.
* ``early_endpoints`` - ends of turn the system declared while the caller was
  still mid-turn (in a mid-sentence pause, say).
* ``barge_in_stop`` - barge-in onset -> the agent's audio stops, when the agent
  was speaking at that onset (``agent_speaking_at_onset``); ``barge_in_honoured``
  when it stopped because of the barge-in rather than at the end of its reply.
* ``false_interruptions`` - the agent was interrupted while no caller turn was
  being spoken (by a backchannel, a noise, nothing).
* ``spurious_replies`` - agent replies that answer no completed caller turn.
* ``talk_over`` - seconds of agent audio over caller sound.
* ``wer`` - word error rate of what the system heard against the words said,
  where the system reports a transcript.

A backchannel or noise event only records whether the agent was speaking when
it began and whether it ``interrupted_agent``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from cascade.errors import MissingDependency
from cascade.evaluation.audio_build import CallerTrack, Placed
from cascade.metrics import turn_metrics
from cascade.tracing import Span

EARLY = 0.3
"""An end of turn whose speech end is this much before the true end came too early."""
ONSET_SLACK = 0.3
"""How far a detected speech onset may be from the true one and still be that speech."""
CANCELS = ("caller_resumed",)
"""Interruption reasons that cancel a reply nobody heard yet: not an interruption of speech."""
_WORDS = re.compile(r"[a-z0-9']+")


@dataclass(slots=True)
class TurnResult:
    """One caller event of one scenario on one system: what happened and what it cost."""

    system: str
    scenario: str
    event: int
    kind: str
    text: str
    start: float
    end: float
    expects_reply: bool
    heard: str | None = None
    reply: str = ""
    system_turn: int | None = None
    answered: bool = False
    missed: bool | None = None
    endpointing: float | None = None
    voice_to_voice: float | None = None
    agent_speaking_at_onset: bool | None = None
    """The agent was talking when this event began (a barge-in or backchannel "landed")."""
    barge_in_stop: float | None = None
    barge_in_honoured: bool | None = None
    interrupted_agent: bool | None = None
    """Backchannel / noise: the agent was interrupted by it."""
    early_endpoints: int = 0
    false_interruptions: int = 0
    spurious_replies: int = 0
    talk_over: float = 0.0
    wer: float | None = None
    asr: float | None = None
    llm_ttft: float | None = None
    tts_ttfb: float | None = None
    marks: dict[str, float] = field(default_factory=dict)
    """Stage milestones of the reply, seconds after the end of the caller's speech."""
    passed: bool | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 4)
        out["marks"] = {k: round(v, 4) for k, v in self.marks.items()}
        return out


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER with both sides lower-cased and stripped of punctuation (jiwer)."""
    try:
        import jiwer
    except ImportError as exc:
        raise MissingDependency("cascade eval (word error rate)", "jiwer", "eval") from exc

    ref = " ".join(_WORDS.findall(reference.lower().replace("-", " ")))
    hyp = " ".join(_WORDS.findall(hypothesis.lower().replace("-", " ")))
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp))


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def _shift(spans: list[Span], origin: float) -> list[Span]:
    return [Span(s.conversation, s.turn, s.stage, s.name, s.start - origin, s.end - origin,
                 s.attrs) for s in spans]


def _window_ends(events: list[Placed]) -> dict[int, float]:
    """Each caller turn's window runs until the next caller turn starts."""
    turns = [e for e in events if e.event.takes_turn]
    ends = {e.index: nxt.start for e, nxt in itertools.pairwise(turns)}
    if turns:
        ends[turns[-1].index] = float("inf")
    return ends


@dataclass(slots=True)
class CallMeasure:
    """Every event's ``TurnResult`` and the call-wide counts."""

    rows: list[TurnResult]
    agent_replies: int
    """Replies the agent played (every ``agent_speech`` but the greeting's, turn 0)."""
    spurious_replies: int


def measure_call(system: str, track: CallerTrack, spans: list[Span],
                 origin: float) -> CallMeasure:
    """Measure one call against its caller track (spans on the pipeline clock)."""
    spans = sorted(_shift(spans, origin), key=lambda s: (s.start, s.end))
    eots = [s for s in spans if s.name == "end_of_turn"]
    speech = [s for s in spans if s.name == "agent_speech"]
    cuts = [s for s in spans if s.name == "interruption" and s.attrs.get("reason") not in CANCELS]
    stage_metrics = {m.turn: m for m in turn_metrics(spans)}
    window_end = _window_ends(track.events)
    first = next((e.index for e in track.events if e.event.takes_turn), 0)
    turn_sound = [p for e in track.events if e.event.takes_turn for p in e.pieces]
    caller_sound = [p for e in track.events for p in e.pieces]
    answered: set[int] = {0}
    answered.update(int(s.attrs["resumed_as"]) for s in spans
                    if s.name == "false_interruption" and "resumed_as" in s.attrs)
    rows = []
    for placed in track.events:
        event = placed.event
        row = TurnResult(system, track.scenario.id, placed.index, event.kind, event.text,
                         placed.start, placed.end, event.expects_reply)
        rows.append(row)
        talking = next((s for s in speech if s.start <= placed.start < s.end), None)
        row.agent_speaking_at_onset = talking is not None
        if not event.takes_turn:
            row.interrupted_agent = any(
                placed.start - ONSET_SLACK <= c.start <= placed.end + ONSET_SLACK for c in cuts)
            continue
        until = window_end[placed.index]
        window = (0.0 if placed.index == first else placed.start, until)
        _turn(row, placed, [e for e in eots if placed.start - ONSET_SLACK <= e.start < until],
              speech, spans, until)
        if row.system_turn is not None:
            answered.add(row.system_turn)
            stage = stage_metrics.get(row.system_turn)
            if stage is not None:
                row.asr, row.llm_ttft, row.tts_ttfb = stage.asr, stage.llm_ttft, stage.tts_ttfb
        if event.kind == "barge_in" and talking is not None:
            row.barge_in_stop = talking.end - placed.start
            row.barge_in_honoured = bool(talking.attrs.get("interrupted"))
        heard_over = [c for piece in caller_sound if (c := _clip(piece, window)) is not None]
        row.talk_over = sum(overlap(c, (s.start, s.end)) for c in heard_over for s in speech)
        row.false_interruptions = sum(
            1 for c in cuts if window[0] <= c.start < window[1]
            and not any(a - ONSET_SLACK <= c.start <= b + ONSET_SLACK for a, b in turn_sound))
    replies = [s for s in speech if s.turn not in answered]
    _attribute_spurious([r for r in rows if r.kind in ("turn", "barge_in")], replies)
    return CallMeasure(rows, sum(1 for s in speech if s.turn != 0), len(replies))


def _clip(piece: tuple[float, float], window: tuple[float, float]) -> tuple[float, float] | None:
    lo, hi = max(piece[0], window[0]), min(piece[1], window[1])
    return (lo, hi) if hi > lo else None


def _turn(row: TurnResult, placed: Placed, eots: list[Span], speech: list[Span],
          spans: list[Span], until: float) -> None:
    row.early_endpoints = sum(1 for e in eots if e.start < placed.end - EARLY)
    final = next((e for e in eots if e.start >= placed.end - EARLY), None)
    texts = [str(e.attrs.get("text") or "") for e in eots]
    if not any(texts):
        texts = [str(s.attrs.get("text") or "") for s in spans if s.name == "asr"
                 and placed.start - ONSET_SLACK <= s.start < until]
    heard = " ".join(t for t in texts if t).strip()
    row.heard = heard or None
    if row.heard is not None:
        row.wer = word_error_rate(row.text, row.heard)
    if final is not None:
        row.system_turn = final.turn
        row.endpointing = final.end - placed.end
        reply = next((s for s in speech if s.turn == final.turn), None)
        if reply is not None:
            row.answered = True
            row.reply = str(reply.attrs.get("text") or "")
            row.voice_to_voice = reply.start - placed.end
        row.marks = _marks([s for s in spans if s.turn == final.turn], placed.end)
    row.missed = (not row.answered) if row.expects_reply else None


def _marks(spans: list[Span], end: float) -> dict[str, float]:
    """When each stage of the reply got there, from the end of the caller's speech."""
    marks: dict[str, float] = {}
    asr = [s for s in spans if s.name == "asr"]
    if asr:
        marks["asr_final"] = asr[-1].end - end
    eot = next((s for s in spans if s.name == "end_of_turn"), None)
    if eot is not None:
        marks["end_of_turn"] = eot.end - end
    llm = next((s for s in spans if s.name == "llm"), None)
    if llm is not None and llm.attrs.get("ttft") is not None:
        marks["llm_first_token"] = llm.start + float(llm.attrs["ttft"]) - end
    tts = next((s for s in spans if s.name == "tts"), None)
    if tts is not None and tts.attrs.get("ttfb") is not None:
        marks["tts_first_audio"] = tts.start + float(tts.attrs["ttfb"]) - end
    speech = next((s for s in spans if s.name == "agent_speech"), None)
    if speech is not None:
        marks["agent_audio"] = speech.start - end
    return marks


def _attribute_spurious(turns: list[TurnResult], replies: list[Span]) -> None:
    """Each reply that answers no caller turn counts against the turn window it starts in."""
    for reply in replies:
        owner = next((r for r in reversed(turns) if r.start - ONSET_SLACK <= reply.start),
                     turns[0] if turns else None)
        if owner is not None:
            owner.spurious_replies += 1
