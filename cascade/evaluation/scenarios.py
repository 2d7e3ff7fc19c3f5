"""The scenario suite: what the caller says, when, over which line, and what should happen.

A suite is a YAML document validated here. Each scenario is a list of caller
*events* laid on one timeline; every event starts a fixed number of seconds
(``after``) after the previous caller event ends, so the caller track is the
same bytes whichever system listens to it. See ``docs/evaluation.md``.

Event kinds:

* ``turn``        - the caller says something and expects an answer.
* ``barge_in``    - the caller talks over the agent's previous reply (placed
  ``after`` seconds after the previous caller turn ended) and expects the agent
  to stop and answer this instead.
* ``backchannel`` - "mm-hmm" while the agent talks: must not interrupt it.
* ``noise``       - a burst of noise (a door, a cough): must not interrupt either.

In ``say``, ``[1.5s]`` marks a pause in the middle of the caller's sentence.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cascade.errors import ConfigError

PAUSE = re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*s\s*\]")
DEFAULT_AFTER = {"barge_in": 2.5, "backchannel": 2.0, "noise": 2.0}
"""Silence (s) before an event, after the end of the previous caller event, when not given
(a turn waits the suite's ``reply_wait``)."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Expect(Strict):
    """What the agent's answer to one caller event must do (all given checks must hold)."""

    reply: bool | None = Field(None, description="an agent reply is expected (default: yes "
                               "for turn and barge_in, no for backchannel and noise)")
    regex: str | None = Field(None, description="must match the reply (case-insensitive)")
    keywords: list[str] = Field(default_factory=list, description="all must be in the reply")
    any_of: list[str] = Field(default_factory=list, description="at least one must be in it")
    fact: str | None = Field(None, description="a required fact, e.g. an order number; "
                             "number words count as digits")
    rubric: str | None = Field(None, description="judged by the suite's judge, when one is "
                               "configured; skipped otherwise")

    @model_validator(mode="after")
    def _regex_compiles(self) -> Expect:
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from None
        return self


class Event(Strict):
    """One thing the caller does."""

    kind: Literal["turn", "barge_in", "backchannel", "noise"] = "turn"
    say: str = Field("", description='the words; "[1.5s]" marks a mid-sentence pause')
    after: float | None = Field(None, ge=0.0, description="silence (s) after the previous "
                                "caller event ends (default by kind: turn: the suite's "
                                "reply_wait, barge_in 2.5, backchannel 2, noise 2; the "
                                "first event: 0, after the lead_in)")
    seconds: float = Field(0.4, gt=0.0, description="noise: burst length")
    level_dbfs: float = Field(-20.0, le=0.0, description="noise: burst RMS level")
    expect: Expect = Field(default_factory=Expect)

    @model_validator(mode="after")
    def _speech_has_words(self) -> Event:
        if self.kind != "noise" and not self.text:
            raise ValueError(f"a {self.kind} event needs words in 'say'")
        return self

    @property
    def speaks(self) -> bool:
        return self.kind != "noise"

    @property
    def takes_turn(self) -> bool:
        """A turn or barge-in: the caller holds the floor and expects an answer."""
        return self.kind in ("turn", "barge_in")

    @property
    def expects_reply(self) -> bool:
        if self.expect.reply is not None:
            return self.expect.reply
        return self.takes_turn

    @property
    def pieces(self) -> list[tuple[str, float]]:
        """(words, pause after them) for each stretch of speech between pause marks."""
        parts = PAUSE.split(self.say)
        out = []
        for index in range(0, len(parts), 2):
            pause = float(parts[index + 1]) if index + 1 < len(parts) else 0.0
            words = parts[index].strip()
            if words:
                out.append((words, pause))
            elif out and pause:
                out[-1] = (out[-1][0], out[-1][1] + pause)
        return out

    @property
    def text(self) -> str:
        """The words without pause marks (the reference transcript)."""
        return " ".join(words for words, _ in self.pieces)

    def gap(self, first: bool, reply_wait: float) -> float:
        if self.after is not None:
            return self.after
        if first:
            return 0.0
        return reply_wait if self.kind == "turn" else DEFAULT_AFTER[self.kind]


class Noise(Strict):
    """Background noise under the whole call: at an SNR, or at a fixed level."""

    type: Literal["white", "pink", "hum"] = "pink"
    snr_db: float | None = Field(None, description="speech-to-noise ratio over the "
                                 "caller's speech")
    level_dbfs: float | None = Field(None, le=0.0, description="noise RMS level, for calls "
                                     "without speech")

    @model_validator(mode="after")
    def _one_level(self) -> Noise:
        if (self.snr_db is None) == (self.level_dbfs is None):
            raise ValueError("give exactly one of snr_db and level_dbfs")
        return self


class Network(Strict):
    """The packet network under a telephone line: 20 ms RTP packets through loss, jitter,
    reordering, duplicates and silence suppression, into a receiver's jitter buffer."""

    loss: float = Field(0.0, ge=0.0, le=1.0, description="probability a packet is lost")
    burst: float = Field(0.0, ge=0.0, le=1.0, description="probability the packet after "
                         "a lost one is lost too")
    jitter: float = Field(0.0, ge=0.0, le=1.0, description="extra delay per packet, "
                          "uniform in [0, jitter] seconds")
    reorder: float = Field(0.0, ge=0.0, le=1.0, description="probability a packet "
                           "arrives after the next one")
    duplicate: float = Field(0.0, ge=0.0, le=1.0)
    dtx: bool = Field(False, description="silence suppression: silent stretches are not "
                      "sent, one comfort-noise packet stands in")
    silent_below_dbfs: float = Field(-55.0, le=0.0, description="dtx: a packet whose "
                                     "peak is below this counts as silent")
    jitter_buffer: int = Field(3, ge=1, le=25, description="20 ms frames the receiver "
                               "buffers before playing (packets later than that are lost)")
    seed: int = 0


class Scenario(Strict):
    """One call: caller events on a timeline, the line it goes over, the noise under it."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    lead_in: float = Field(0.5, ge=0.0, description="silence before the first event")
    tail: float | None = Field(None, ge=0.0, description="silence after the last event "
                               "(default: the suite's tail)")
    channel: Literal["wideband", "telephone"] = Field(
        "wideband", description="telephone: 300-3400 Hz, 8 kHz G.711 mu-law round trip")
    noise: Noise | None = None
    network: Network | None = Field(None, description="packet loss, jitter, reordering, "
                                    "comfort-noise gaps under a telephone line")
    expect_silence: bool = Field(False, description="the agent must not speak at all")
    events: list[Event] = Field(default_factory=list)

    @model_validator(mode="after")
    def _network_needs_a_phone_line(self) -> Scenario:
        if self.network is not None and self.channel != "telephone":
            raise ValueError("network impairments are for a phone line: add "
                             "'channel: telephone' to the scenario")
        return self

    @model_validator(mode="after")
    def _snr_needs_speech(self) -> Scenario:
        if self.noise is not None and self.noise.snr_db is not None \
                and not any(e.speaks for e in self.events):
            raise ValueError("noise.snr_db needs caller speech; use noise.level_dbfs")
        return self


class VoiceConfig(Strict):
    """The TTS adapter that speaks the caller's lines."""

    adapter: str = "piper"
    options: dict[str, Any] = Field(default_factory=dict)


class JudgeConfig(Strict):
    """The judge for ``expect.rubric``: an LLM adapter, or your own callable.

    ``llm`` names any LLM adapter, built from ``options`` (``cascade.evaluation.judge``).
    ``callable`` (``module:function``) is called as ``function(rubric=..., reply=...,
    dialogue=[{"role", "content"}], **options)`` and returns a bool, or ``(bool, reason)``.
    """

    llm: str | None = Field(None, description="an LLM adapter that grades the rubrics")
    callable: str | None = Field(None, pattern=r"^[\w.]+:\w+$")
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_judge(self) -> JudgeConfig:
        if (self.llm is None) == (self.callable is None):
            raise ValueError("judge needs exactly one of llm (an LLM adapter, e.g. openai-llm) "
                             "or callable (module:function)")
        return self


class Suite(Strict):
    """A set of scenarios, the caller's voice, and the audio settings shared by all."""

    name: str = "suite"
    description: str = ""
    sample_rate: int = Field(16000, gt=0, description="rate of the caller tracks; every "
                             "system's pipeline must use it")
    voice: VoiceConfig = Field(default_factory=VoiceConfig)
    tail: float = Field(8.0, ge=0.0, description="default silence after the last event")
    reply_wait: float = Field(6.0, ge=0.0, description="default silence before a caller "
                              "turn: time for the agent's previous reply")
    judge: JudgeConfig | None = None
    save_audio: bool = Field(True, description="write caller tracks and both sides of "
                             "every call as WAV files")
    scenarios: list[Scenario] = Field(min_length=1)

    @model_validator(mode="after")
    def _ids_unique(self) -> Suite:
        seen: set[str] = set()
        for scenario in self.scenarios:
            if scenario.id in seen:
                raise ValueError(f"scenario id '{scenario.id}' is used twice")
            seen.add(scenario.id)
        return self

    def select(self, ids: list[str]) -> Suite:
        """The same suite with only the scenarios named (in the suite's order)."""
        unknown = set(ids) - {s.id for s in self.scenarios}
        if unknown:
            raise ConfigError(f"suite '{self.name}' has no scenario "
                              f"{', '.join(sorted(unknown))}")
        return self.model_copy(update={"scenarios": [s for s in self.scenarios
                                                     if s.id in ids]})


def parse_suite(data: Any, source: str = "<suite>") -> Suite:
    """Validate a suite document; errors name the field and the fix."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a suite must be a mapping with a 'scenarios' list")
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: invalid suite"]
        for item in exc.errors():
            where = ".".join(str(p) for p in item["loc"]) or "(top level)"
            lines.append(f"  {where}: {item['msg']}")
        raise ConfigError("\n".join(lines)) from None


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read suite file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_suite(data, str(path))
