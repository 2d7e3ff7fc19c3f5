"""Score one conversation's trace against its labels, and summarise many.

Every labelled event gets an *outcome* (a plain dict, so it goes to JSON as
is) computed from the trace spans alone, on the caller-audio timeline (span
times minus the time of the first audio frame):

* a caller **turn**: end-of-turn decisions made before the caller finished
  (``premature``), whether agent audio started before the caller finished
  (``agent_talked_over``), and the endpointing delay (first ``end_of_turn``
  decision from 0.2 s before the labelled end of speech up to the next
  labelled event, minus that end). A turn that is an interruption also gets
  its barge-in: was the agent speaking at its onset, did the agent's audio stop
  (``agent_speech`` interrupted), how long after the onset;
* a **backchannel** or **noise** burst: was the agent speaking at its onset
  (else it is left out of the rates), did the agent's audio stop before the
  next labelled event (``cut``), did the controller end a turn on it
  (``answered``), and after a cut, did the agent resume (``false_interruption``
  span for the cut reply).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from cascade.metrics import percentile
from cascade.tracing import Span

EARLY = 0.2
"""An end of turn up to this long before the labelled end still counts as the endpoint
(the labelled end includes the last faint 10 ms blocks the VAD may not hear)."""

Outcome = dict[str, Any]


def shifted(spans: Iterable[Span], origin: float) -> list[Span]:
    """Spans moved onto the caller-audio timeline (0 = first audio sample)."""
    return [Span(s.conversation, s.turn, s.stage, s.name, s.start - origin, s.end - origin,
                 s.attrs) for s in spans]


def _speaking_at(speech: Sequence[Span], at: float) -> Span | None:
    return next((s for s in speech if s.start <= at < s.end), None)


def _heard(spans: Sequence[Span], start: float, end: float) -> list[str]:
    """What ASR made of a sound: finals whose segment ended during it or just after."""
    return [str(s.attrs.get("text") or f"<{s.attrs.get('rejected')}>")
            for s in spans if s.name == "asr" and start < s.start <= end + 0.6]


def _turn(event: dict[str, Any], spans: Sequence[Span], next_onset: float,
          min_speech: float) -> Outcome:
    start, end = event["start"], event["end"]
    eots = [s for s in spans if s.name == "end_of_turn"]
    speech = [s for s in spans if s.name == "agent_speech"]
    early = [s for s in eots if start < s.end < end - EARLY]
    endpoint = next((s for s in eots if end - EARLY <= s.end < next_onset), None)
    out: Outcome = {
        "premature": len(early),
        "premature_at": [round(s.end - start, 3) for s in early],
        "agent_talked_over": any(start < s.start < end for s in speech),
        "endpoint_delay": None if endpoint is None else round(endpoint.end - end, 4),
        "endpoint_reason": None if endpoint is None else endpoint.attrs.get("reason"),
        "p_complete": None if endpoint is None else endpoint.attrs.get("p_complete"),
        "heard": None if endpoint is None else endpoint.attrs.get("text"),
        "agent_speaking_at_onset": _speaking_at(speech, start) is not None,
    }
    if event["barge_in"]:
        cut = _speaking_at(speech, start)
        stopped = cut is not None and bool(cut.attrs.get("interrupted")) and cut.end <= end + 1.0
        out["stopped"] = stopped if cut is not None else None
        out["stop_latency"] = round(cut.end - start, 4) if stopped and cut else None
        out["beyond_min_speech"] = (round(cut.end - start - min_speech, 4)
                                    if stopped and cut else None)
    return out


def _over_agent(event: dict[str, Any], spans: Sequence[Span], next_onset: float) -> Outcome:
    start, end = event["start"], event["end"]
    speech = [s for s in spans if s.name == "agent_speech"]
    hit = _speaking_at(speech, start)
    cut = hit is not None and bool(hit.attrs.get("interrupted")) and hit.end < next_onset
    resumed = [s for s in spans if s.name == "false_interruption"
               and hit is not None and s.turn == hit.turn]
    return {
        "agent_speaking_at_onset": hit is not None,
        "vad_speech": any(s.name == "user_speech" and s.start < end and s.end > start
                          for s in spans),
        "heard": _heard(spans, start, end),
        "backchannel_span": any(s.name == "backchannel" and start - 0.3 <= s.start <= end
                                for s in spans),
        "cut": cut,
        "cut_after": round(hit.end - start, 4) if cut and hit else None,
        "answered": any(s.name == "end_of_turn" and start < s.end < next_onset for s in spans),
        "resumed": bool(resumed) if cut else None,
        "resume_reason": resumed[0].attrs.get("reason") if cut and resumed else None,
        "resumed_after": round(resumed[0].end - start, 4) if cut and resumed else None,
    }


def score(conversation: dict[str, Any], spans: Sequence[Span], min_speech: float
          ) -> list[Outcome]:
    """One outcome per labelled event of ``conversation`` (spans already ``shifted``)."""
    events = conversation["events"]
    outcomes = []
    for index, event in enumerate(events):
        later = [e["start"] for e in events[index + 1 :]]
        next_onset = later[0] if later else conversation["seconds"] + 30.0
        if event["kind"] == "turn":
            result = _turn(event, spans, next_onset, min_speech)
        else:
            result = _over_agent(event, spans, next_onset)
        outcomes.append({**{k: event[k] for k in ("id", "kind", "start", "end")},
                         "type": _type(event), "noisy": conversation["noise"] is not None,
                         **result})
    return outcomes


def _type(event: dict[str, Any]) -> str:
    if event["kind"] == "turn":
        return "interruption" if event["barge_in"] else str(event["style"])
    if event["kind"] == "noise":
        return str(event["sound"])
    return "backchannel"


def _rate(hits: int, total: int) -> dict[str, Any]:
    return {"rate": hits / total if total else None, "hits": hits, "n": total}


def _spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"p50": None, "p95": None, "n": 0}
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "n": len(values)}


def summarise(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The benchmark's headline numbers over all outcomes of one configuration."""
    def of(*types: str) -> list[Outcome]:
        return [o for o in outcomes if o["type"] in types]

    paused = of("paused")
    complete = of("complete", "interruption")
    turns = of("complete", "paused", "interruption")
    backchannels = [o for o in of("backchannel") if o["agent_speaking_at_onset"]]
    barge = [o for o in of("interruption") if o["stopped"] is not None]
    noise = {sound: [o for o in of(sound) if o["agent_speaking_at_onset"]]
             for sound in ("hum", "cough")}
    false_cuts = [o for o in [*backchannels, *noise["hum"], *noise["cough"]] if o["cut"]]
    delays = [o["endpoint_delay"] for o in turns if o["endpoint_delay"] is not None]
    return {
        "takeover": _rate(sum(o["agent_talked_over"] for o in paused), len(paused)),
        "premature_end_paused": _rate(sum(o["premature"] > 0 for o in paused), len(paused)),
        "premature_end_complete": _rate(sum(o["premature"] > 0 for o in complete),
                                        len(complete)),
        "backchannel_false_interruption": _rate(
            sum(o["cut"] or o["answered"] for o in backchannels), len(backchannels)),
        "backchannel_cut": _rate(sum(o["cut"] for o in backchannels), len(backchannels)),
        "backchannel_answered": _rate(sum(o["answered"] for o in backchannels),
                                      len(backchannels)),
        "barge_in_stopped": _rate(sum(o["stopped"] for o in barge), len(barge)),
        "barge_in_stop": _spread([o["stop_latency"] for o in barge if o["stopped"]]),
        "barge_in_beyond_min": _spread([o["beyond_min_speech"] for o in barge if o["stopped"]]),
        "endpointing": _spread(delays),
        "endpointing_clean": _spread([o["endpoint_delay"] for o in turns
                                      if o["endpoint_delay"] is not None and not o["noisy"]]),
        "endpointing_noisy": _spread([o["endpoint_delay"] for o in turns
                                      if o["endpoint_delay"] is not None and o["noisy"]]),
        "judged_unfinished": _rate(
            sum(o["endpoint_reason"] == "unfinished_timeout" for o in turns
                if o["endpoint_delay"] is not None),
            sum(o["endpoint_delay"] is not None for o in turns)),
        "endpoint_missed": _rate(sum(o["endpoint_delay"] is None for o in turns), len(turns)),
        "noise_cut_hum": _rate(sum(o["cut"] for o in noise["hum"]), len(noise["hum"])),
        "noise_cut_cough": _rate(sum(o["cut"] for o in noise["cough"]), len(noise["cough"])),
        "noise_answered": _rate(sum(o["answered"] for o in [*noise["hum"], *noise["cough"]]),
                                len(noise["hum"]) + len(noise["cough"])),
        "resume": _rate(sum(bool(o["resumed"]) for o in false_cuts), len(false_cuts)),
        "left_out": {
            "agent_silent_at_event": sum(not o["agent_speaking_at_onset"] for o in outcomes
                                         if o["type"] in ("backchannel", "hum", "cough",
                                                          "interruption")),
            "turn_over_agent": sum(o["agent_speaking_at_onset"] for o in of("complete",
                                                                             "paused")),
        },
    }
