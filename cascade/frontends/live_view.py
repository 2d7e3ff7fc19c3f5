"""The terminal during a live call: who has the floor, the words as they form, the latencies.

``LiveView`` watches one conversation three ways and renders for ``rich.live``:

* as a graph observer - speech start, partial and final transcripts, end of
  turn, agent speech start/stop, errors;
* as an ``AudioSink`` beside the speaker - the reply grows clause by clause as
  it is *played*, not as it is generated;
* as a ``TraceSink`` - when a turn's ``agent_speech`` span closes, the turn's
  latencies join the table (the same table ``cascade run`` prints).

It never blocks and keeps only a few turns; rich renders it from its own thread,
so every render works on copies.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cascade.frames import (
    AgentAudio,
    AgentSpeechStarted,
    AgentSpeechStopped,
    EndOfTurn,
    ErrorFrame,
    Frame,
    Interrupt,
    SpeechStarted,
    SpeechStopped,
    Transcript,
)
from cascade.trace_report import turn_table
from cascade.tracing import Span

STATES = {
    "listening": ("● listening", "bold green"),
    "thinking": ("◐ thinking", "bold yellow"),
    "speaking": ("◉ speaking", "bold magenta"),
}


@dataclass(slots=True)
class Line:
    """One finished utterance in the dialogue."""

    who: str
    text: str
    cut: bool = False


class LiveView:
    """A live picture of one conversation for ``rich.live.Live``."""

    def __init__(self, title: str, *, turns_shown: int = 5, lines_shown: int = 6) -> None:
        self.title = title
        self.turns_shown = turns_shown
        self.lines_shown = lines_shown
        self.state = "listening"
        self.user_speaking = False
        self.note = ""
        self._lock = threading.Lock()
        self._finals: list[str] = []
        self._partial = ""
        self._reply: list[str] = []
        self._clause_open = False
        self._lines: list[Line] = []
        self._spans: list[Span] = []
        self._done_turns: list[int] = []
        self._error = ""

    # --- what the user sees, as text (also handy in tests) -------------------------

    @property
    def heard(self) -> str:
        """The caller's words of the turn now forming: finals so far plus the partial."""
        with self._lock:
            return " ".join(p for p in [*self._finals, self._partial] if p)

    @property
    def spoken(self) -> str:
        """The agent's current reply as far as it has been played."""
        with self._lock:
            return " ".join(self._reply)

    @property
    def lines(self) -> list[Line]:
        with self._lock:
            return list(self._lines)

    @property
    def finished_turns(self) -> list[int]:
        with self._lock:
            return list(self._done_turns)

    # --- graph observer ------------------------------------------------------------

    def observe(self, stage: str, frame: Frame) -> None:
        with self._lock:
            if isinstance(frame, SpeechStarted):
                self.user_speaking = True
            elif isinstance(frame, SpeechStopped):
                self.user_speaking = False
            elif isinstance(frame, Transcript):
                self._transcript(frame)
            elif isinstance(frame, EndOfTurn):
                if frame.text.strip():
                    self._lines.append(Line("you", frame.text.strip()))
                    del self._lines[:-50]
                self._finals, self._partial = [], ""
                self.state = "thinking"
            elif isinstance(frame, AgentSpeechStarted):
                self.state = "speaking"
                self._reply, self._clause_open = [], False
            elif isinstance(frame, AgentSpeechStopped):
                if frame.spoken_text.strip():
                    self._lines.append(Line("agent", frame.spoken_text.strip(),
                                            frame.interrupted))
                self._reply, self._clause_open = [], False
                self.state = "listening"
            elif isinstance(frame, Interrupt) and self.state == "thinking":
                self.state = "listening"
            elif isinstance(frame, ErrorFrame):
                self._error = f"stage '{frame.stage}' failed: {frame.message}"

    def _transcript(self, frame: Transcript) -> None:
        text = frame.text.strip()
        if frame.final:
            if text:
                self._finals.append(text)
            self._partial = ""
        else:
            self._partial = text

    # --- AudioSink: the reply as it is played ------------------------------------------

    def play(self, frame: AgentAudio, at: float) -> None:
        with self._lock:
            if not self._clause_open and frame.text.strip():
                self._reply.append(frame.text.strip())
                self._clause_open = True
            if frame.clause_end:
                self._clause_open = False

    def clear(self, at: float) -> None:
        """The reply was cut; ``AgentSpeechStopped`` brings the words actually heard."""

    # --- TraceSink: latencies of finished turns -----------------------------------------

    def write(self, span: Span) -> None:
        with self._lock:
            self._spans.append(span)
            if span.name == "agent_speech" and span.turn not in self._done_turns:
                self._done_turns.append(span.turn)
                keep = set(self._done_turns[-self.turns_shown:])
                self._spans = [s for s in self._spans
                               if s.turn in keep or s.turn > self._done_turns[-1]]

    def close(self) -> None:
        pass

    # --- rendering -----------------------------------------------------------------------

    def __rich__(self) -> RenderableType:
        with self._lock:
            state, style = STATES.get(self.state, STATES["listening"])
            if self.user_speaking and self.state == "listening":
                state = "● listening · you are speaking"
            lines = self._lines[-self.lines_shown:]
            heard = " ".join(p for p in [*self._finals, self._partial] if p)
            reply = " ".join(self._reply)
            done = set(self._done_turns[-self.turns_shown:])
            spans = [s for s in self._spans if s.turn in done]
            error = self._error
        body = Table.grid(padding=(0, 1))
        body.add_column(style="bold", no_wrap=True)
        body.add_column()
        for line in lines:
            who = Text("you", style="cyan") if line.who == "you" else Text("agent", "green")
            said = Text(line.text, style="dim")
            if line.cut:
                said.append(" [cut off]", style="red")
            body.add_row(who, said)
        body.add_row(Text(state, style=style), Text(""))
        if heard:
            body.add_row(Text("you", style="bold cyan"), Text(heard + " …", style="cyan"))
        if reply:
            body.add_row(Text("agent", style="bold green"), Text(reply, style="green"))
        if error:
            body.add_row(Text("error", style="bold red"), Text(error, style="red"))
        content: RenderableType = body
        if self.note:
            content = Group(body, Text(self.note, style="dim"))
        panel = Panel(content, title=self.title, title_align="left", box=box.ROUNDED,
                      subtitle="Ctrl-C to stop", subtitle_align="right")
        if not spans:
            return panel
        table: Table = turn_table(spans, text_width=28)
        return Group(panel, table)
