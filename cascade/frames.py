"""Frames: the typed events that flow through a Cascade graph.

Every frame carries the conversation id, the turn it belongs to and its time on
the pipeline clock. Three families decide how the graph treats a frame:

* ``SystemFrame`` (control): jumps every queue, reaches every stage, never dropped.
* ``DataFrame``: agent output (LLM text, TTS audio) that an interruption discards.
* plain ``Frame``: ordered input and bookkeeping, never discarded.

``EndOfTurn`` and ``EndOfStream`` are control *in meaning* but travel as ordered
frames: jumping ahead of the audio and transcripts they close would be wrong.

Frames are slotted dataclasses and are not validated: audio frames are the hot
path (one every 20 ms per conversation) and pay only for object creation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

PCM = npt.NDArray[np.int16]


@dataclass(slots=True, kw_only=True)
class Frame:
    """An ordered event on the graph; never discarded by an interruption."""

    conversation: str
    turn: int
    time: float


@dataclass(slots=True, kw_only=True)
class SystemFrame(Frame):
    """A control event: delivered to every stage ahead of queued frames, never dropped."""


@dataclass(slots=True, kw_only=True)
class DataFrame(Frame):
    """Agent output for one turn: discarded when that turn is interrupted."""


# --- user side -------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class UserAudio(Frame):
    """Caller audio: PCM16 mono; ``time`` is the media time of the first sample."""

    pcm: PCM
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.pcm) / self.sample_rate


@dataclass(slots=True, kw_only=True)
class SpeechStarted(Frame):
    """VAD: the user started speaking at ``time`` (media time)."""


@dataclass(slots=True, kw_only=True)
class SpeechStopped(Frame):
    """VAD: the user's speech ended at ``time`` (media time); ``started`` is its onset."""

    started: float


@dataclass(slots=True, frozen=True)
class Word:
    """One recognised word with its media times (seconds on the pipeline clock)."""

    text: str
    start: float
    end: float
    probability: float


@dataclass(slots=True, kw_only=True)
class Transcript(Frame):
    """ASR output for one speech segment; ``final`` once the segment is closed."""

    text: str
    final: bool
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    words: tuple[Word, ...] = ()
    speech_start: float = 0.0
    speech_end: float = 0.0


@dataclass(slots=True, kw_only=True)
class EndOfTurn(Frame):
    """The turn controller decided the user's turn is over; ``text`` is all they said."""

    text: str
    reason: str
    speech_end: float


@dataclass(slots=True, kw_only=True)
class ResumeReply(Frame):
    """The caller's interruption was a false alarm: speak the cut reply of ``resumes`` again,
    from the sentence where it was cut, as reply ``turn``."""

    resumes: int
    reason: str


# --- agent side ------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class LLMText(DataFrame):
    """A clause or sentence of the agent's reply, ready to be spoken."""

    text: str
    last: bool = False


@dataclass(slots=True, kw_only=True)
class LLMReply(DataFrame):
    """The agent's whole planned reply for a turn, once generation finished."""

    text: str


@dataclass(slots=True, kw_only=True)
class ToolCallRequested(DataFrame):
    """The model asked for a tool to be run; a stage that accepts it can act on it.

    ``arguments`` is the model's JSON text as it streamed (parse and validate it
    before use); ``call_id`` is what a tool result must answer to."""

    call_id: str
    name: str
    arguments: str


@dataclass(slots=True, kw_only=True)
class AgentAudio(DataFrame):
    """Synthesised agent speech: PCM16 mono chunk and the clause it belongs to."""

    pcm: PCM
    sample_rate: int
    text: str
    clause_seconds: float = 0.0
    """Length of the clause's audio as known when this frame was made (0: unknown)."""
    clause_end: bool = False
    reply_end: bool = False


@dataclass(slots=True, kw_only=True)
class AgentSpeechStarted(SystemFrame):
    """The first sample of an agent reply actually went out to the caller."""


@dataclass(slots=True, kw_only=True)
class AgentSpeechStopped(SystemFrame):
    """Agent audio stopped; ``spoken_text`` is what the caller actually heard."""

    spoken_text: str
    interrupted: bool


# --- control ---------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Interrupt(SystemFrame):
    """Stop the agent's reply for ``turn`` (and earlier): cancel work, flush audio."""

    reason: str


@dataclass(slots=True, kw_only=True)
class Cancel(SystemFrame):
    """Cancel in-flight work for ``turn`` without treating it as a barge-in."""

    reason: str


@dataclass(slots=True, kw_only=True)
class ErrorFrame(SystemFrame):
    """A stage failed while handling ``turn``; the conversation goes on."""

    stage: str
    message: str


@dataclass(slots=True, kw_only=True)
class EndOfStream(Frame):
    """No more input: stages finish what they hold, then the graph stops."""


@dataclass(slots=True, kw_only=True)
class Event(SystemFrame):
    """An application event reaching the conversation (e.g. DTMF digit, hang-up)."""

    name: str
    data: dict[str, str] = field(default_factory=dict)
