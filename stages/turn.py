"""Turn-taking: when the caller's turn is over, and when the agent must stop talking.

``TurnController`` listens to VAD events, transcripts and the agent's own
speech, and makes two kinds of decision, each traced with its reason:

* **End of turn** - after the caller stops speaking, wait ``min_delay``; wait
  up to ``incomplete_delay`` instead when the words so far end on a
  continuation ("and", "but", "um", a trailing comma) or, with a
  ``semantic_model`` (Smart Turn), when the last 8 s of audio sound unfinished;
  never past ``max_delay``. The model runs while ASR transcribes, off the loop.
  Then emit ``EndOfTurn`` with everything the caller said.
* **Barge-in** - caller speech while the agent speaks interrupts it once the
  speech lasts ``barge_in_min_speech`` (known for sure ``vad_stop_delay`` later,
  when the VAD could have reported a stop), or, with ``barge_in_min_words``,
  once that many words are recognised. Shorter speech is judged by its words:
  backchannels ("uh-huh", "yeah", "okay") never interrupt, and are traced.
  Speech that starts while a reply is being prepared but not yet audible
  cancels that reply: the caller was not done.
* **False interruption** - a barge-in on sound alone (a cough, a door) that
  yields no words, or only a backchannel, within ``false_interruption_timeout``
  makes the agent resume from the sentence it was cut in (``ResumeReply``).
"""

from __future__ import annotations

import asyncio
import re

from pydantic import BaseModel, ConfigDict, Field

from cascade.audio import resample
from cascade.frames import (
    PCM,
    AgentSpeechStarted,
    AgentSpeechStopped,
    Cancel,
    EndOfTurn,
    ErrorFrame,
    Frame,
    Interrupt,
    ResumeReply,
    SpeechStarted,
    SpeechStopped,
    SystemFrame,
    Transcript,
    UserAudio,
)
from cascade.playback import PlaybackHistory
from cascade.registry import Adapter, TurnModel, load_turn_model

CONTINUATION_WORDS = ("and", "but", "or", "so", "um", "uh", "because", "like", "the", "a",
                      "to", "with", "then", "if", "that", "my", "of")
BACKCHANNELS = ("uh-huh", "uh huh", "mm-hmm", "mm hmm", "mhm", "mm", "hmm", "yeah", "yes",
                "yep", "okay", "ok", "right", "sure", "i see", "got it", "alright", "oh")
TURN_MODEL_SECONDS = 8.0
_WORD = re.compile(r"[a-z0-9']+(?:-[a-z0-9']+)*")


def normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


class TurnOptions(BaseModel):
    """Endpointing and barge-in settings."""

    model_config = ConfigDict(extra="forbid")

    min_delay: float = Field(0.3, ge=0.0, description="silence that ends a complete turn")
    incomplete_delay: float = Field(1.2, ge=0.0, description="silence that ends a turn "
                                    "whose words sound unfinished")
    max_delay: float = Field(3.0, ge=0.0, description="silence that always ends a turn")
    continuation_words: list[str] = Field(default_factory=lambda: list(CONTINUATION_WORDS))
    semantic_model: str | None = Field(None, description="end-of-turn model that hears "
                                       "whether the caller sounds finished ('smart-turn')")
    semantic_model_path: str | None = Field(None, description="model file (default: the "
                                            "one its package ships)")
    complete_threshold: float = Field(0.5, ge=0.0, le=1.0, description="P(complete) "
                                      "below which the turn counts as unfinished")
    allow_interruptions: bool = True
    barge_in_min_speech: float = Field(0.5, ge=0.0, description="caller speech (s) that "
                                       "interrupts the agent")
    vad_stop_delay: float = Field(0.2, ge=0.0, description="how late the VAD reports the "
                                  "end of speech (its min_silence): speech is only judged "
                                  "long enough once a stop could have been reported")
    barge_in_min_words: int = Field(0, ge=0, description="words that interrupt the agent "
                                    "before barge_in_min_speech (0: off)")
    require_transcript: bool = Field(True, description="a turn needs recognised words; "
                                     "False ends turns on voice activity alone (for a "
                                     "fused model behind the controller with no ASR)")
    backchannels: list[str] = Field(default_factory=lambda: list(BACKCHANNELS))
    backchannel_max_words: int = Field(3, ge=0)
    resume_after_false_interruption: bool = True
    false_interruption_timeout: float = Field(2.0, gt=0.0, description="an interruption "
                                              "that yields no words within this time "
                                              "(s) was a false alarm: the agent resumes")


class TurnController(Adapter):
    """Decides end of turn and barge-in; every decision is a traced span with a reason."""

    kind = "turn"
    accepts: tuple[type[Frame], ...] = (SpeechStarted, SpeechStopped, Transcript)
    Options = TurnOptions

    def __init__(self, options: TurnOptions) -> None:
        self.options = options
        self.turn_model: TurnModel | None = None
        if options.semantic_model:
            self.turn_model = load_turn_model(options.semantic_model,
                                              options.semantic_model_path)
            self.accepts = (*self.accepts, UserAudio)
        self._audio = PlaybackHistory(16000, TURN_MODEL_SECONDS)  # caller audio by time
        self._audio_end = 0.0  # media time where the kept audio ends
        self._turn_from = 0.0  # media time the current turn's audio starts (0.5 s pre-roll)
        self.p_complete: float | None = None
        self.awaiting_model = False
        self._judge: asyncio.Task[None] | None = None
        self._continuations = {normalise(w) for w in options.continuation_words}
        self._backchannels = {normalise(w) for w in options.backchannels}
        self.user_speaking = False
        self.speech_onset = 0.0
        self.speech_end = 0.0
        self.turn_start: float | None = None
        self.words: list[str] = []
        self.pending_finals = 0  # segments the VAD closed whose transcript has not come
        self.agent_speaking = False
        self.agent_turn = -1
        self.pending_reply: int | None = None
        self._barged = False
        self._endpoint: asyncio.Task[None] | None = None
        self._barge_timer: asyncio.Task[None] | None = None
        self._voiced = False  # speech heard this turn (counts as words without a transcript)
        self._suspect: tuple[int, float] | None = None  # (cut turn, when) of a barge-in
        self._suspect_timer: asyncio.Task[None] | None = None

    # --- input -------------------------------------------------------------

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, UserAudio):
            self._keep_audio(frame)
        elif isinstance(frame, SpeechStarted):
            await self._speech_started(frame)
        elif isinstance(frame, SpeechStopped):
            self.user_speaking = False
            self.speech_end = frame.time
            if self.options.require_transcript:
                self.pending_finals += 1
            self._cancel_barge_timer()
            long_enough = frame.time - frame.started >= self.options.barge_in_min_speech
            if self.agent_speaking and long_enough and self.options.allow_interruptions:
                await self._interrupt("speech", frame.started)
            if self.turn_model is not None:
                self.awaiting_model = True
                self._judge = asyncio.create_task(self._judge_turn(self._turn_audio()))
            if not self.options.require_transcript:
                self._voiced = True
                self._schedule_endpoint()
        elif isinstance(frame, Transcript):
            if frame.final:
                await self._final(frame)
            else:
                await self._partial(frame)

    def _keep_audio(self, frame: UserAudio) -> None:
        """The last seconds of caller audio, for the end-of-turn model."""
        rate = self._audio.rate
        pcm = frame.pcm if frame.sample_rate == rate else resample(
            frame.pcm, frame.sample_rate, rate)
        self._audio.write(pcm, frame.time)
        self._audio_end = frame.time + len(frame.pcm) / frame.sample_rate

    def _turn_audio(self) -> PCM:
        """This turn's audio only (the model must not hear the previous turn)."""
        rate = self._audio.rate
        keep = max(1, min(int((self._audio_end - self._turn_from) * rate), self._audio.size))
        return self._audio.read(self._audio_end - keep / rate, keep)

    async def _judge_turn(self, audio: PCM) -> None:
        assert self.turn_model is not None
        self.p_complete = await self.ctx.clock.run_blocking(
            self.turn_model.complete_probability, audio)
        self.awaiting_model = False
        self._schedule_endpoint()

    async def _speech_started(self, frame: SpeechStarted) -> None:
        self.user_speaking = True
        if self._judge is not None:
            self._judge.cancel()
            self._judge = None
        self.awaiting_model = False
        self.p_complete = None
        self.speech_onset = frame.time
        self._barged = False
        if self.turn_start is None:
            self.turn_start = frame.time
            self._turn_from = frame.time - 0.5
        self._cancel_endpoint()
        if self.agent_speaking and self.options.allow_interruptions:
            self._barge_timer = asyncio.create_task(self._barge_after_min_speech(frame.time))
        elif self.pending_reply is not None:
            await self._cancel_pending("caller_resumed")

    async def _barge_after_min_speech(self, onset: float) -> None:
        opts = self.options
        await self.ctx.clock.sleep_until(onset + opts.barge_in_min_speech + opts.vad_stop_delay)
        if self.user_speaking and self.agent_speaking:
            await self._interrupt("speech", onset)

    async def _partial(self, frame: Transcript) -> None:
        needed = self.options.barge_in_min_words
        if not (needed and self.agent_speaking and self.user_speaking and not self._barged):
            return
        words = normalise(frame.text).split()
        if len(words) >= needed and not self.is_backchannel(frame.text):
            await self._interrupt("words", self.speech_onset)

    async def _final(self, frame: Transcript) -> None:
        self.pending_finals = max(0, self.pending_finals - 1)
        text = frame.text.strip()
        if self._suspect is not None:
            if not text or self.is_backchannel(text):
                if text:
                    self.ctx.tracer.record("backchannel", self.name, self._suspect[0],
                                           frame.speech_start, frame.speech_end, text=text)
                if not self.user_speaking:
                    await self._resume("no_words" if not text else "backchannel")
                self._schedule_endpoint()
                return
            self._clear_suspect()  # real words: the interruption stands
        if self.agent_speaking and not self._barged and text:
            if self.is_backchannel(text):
                self.ctx.tracer.record("backchannel", self.name, self.agent_turn,
                                       frame.speech_start, frame.speech_end, text=text)
                return
            if self.options.allow_interruptions:
                await self._interrupt("words", frame.speech_start)
        if text:
            self.words.append(text)
        self._schedule_endpoint()

    def is_backchannel(self, text: str) -> bool:
        said = normalise(text)
        if not said:
            return False
        if said in self._backchannels:
            return True
        if len(said.split()) > self.options.backchannel_max_words:
            return False
        return all(word in self._backchannels for word in said.split())

    @property
    def awaiting_final(self) -> bool:
        """A transcript is still due for a segment the caller finished."""
        return self.pending_finals > 0

    # --- end of turn ---------------------------------------------------------

    def unfinished(self) -> bool:
        """The caller sounds (model) or reads (trailing words) as not done yet."""
        if self.p_complete is not None and self.p_complete < self.options.complete_threshold:
            return True
        text = " ".join(self.words).strip()
        if not text:
            return False
        if text[-1] in ",;:-":
            return True
        last = normalise(text).split()
        return bool(last) and last[-1] in self._continuations

    def _schedule_endpoint(self) -> None:
        self._cancel_endpoint()
        heard = bool(self.words) or self._voiced
        if self.user_speaking or self.awaiting_final or self.awaiting_model or not heard:
            if not heard and not self.user_speaking and not self.awaiting_final:
                self.turn_start = None
            return
        opts = self.options
        if self.unfinished():
            delay, reason = min(opts.incomplete_delay, opts.max_delay), "unfinished_timeout"
        else:
            reason = "silence" if self.p_complete is None else "semantic"
            delay = min(opts.min_delay, opts.max_delay)
        self._endpoint = asyncio.create_task(self._end_turn_at(self.speech_end + delay, reason))

    async def _end_turn_at(self, when: float, reason: str) -> None:
        await self.ctx.clock.sleep_until(when)
        if not self.user_speaking and not self.awaiting_final:
            self._endpoint = None
            await self._end_turn(reason)

    async def _end_turn(self, reason: str) -> None:
        ctx = self.ctx
        text = " ".join(self.words).strip()
        turn = ctx.turn
        now = self.now()
        ctx.tracer.record("end_of_turn", self.name, turn, self.speech_end, now, reason=reason,
                          text=text, delay=round(now - self.speech_end, 4),
                          p_complete=None if self.p_complete is None
                          else round(self.p_complete, 3))
        self.words, self.turn_start, self._voiced = [], None, False
        ctx.turn = turn + 1
        self.pending_reply = turn
        await self.push(EndOfTurn(conversation=ctx.conversation, turn=turn, time=now,
                                  text=text, reason=reason, speech_end=self.speech_end))

    def _cancel_endpoint(self) -> None:
        if self._endpoint is not None:
            self._endpoint.cancel()
            self._endpoint = None

    def _cancel_barge_timer(self) -> None:
        if self._barge_timer is not None:
            self._barge_timer.cancel()
            self._barge_timer = None

    # --- interruptions -----------------------------------------------------

    async def _interrupt(self, reason: str, onset: float) -> None:
        if self._barged:
            return
        self._barged = True
        self._cancel_barge_timer()
        ctx = self.ctx
        turn = self.agent_turn
        now = self.now()
        ctx.tracer.record("interruption", self.name, turn, onset, now, reason=reason)
        if (reason == "speech" and self.options.resume_after_false_interruption
                and self.options.require_transcript):  # "no words" needs a transcript
            self._clear_suspect()
            self._suspect = (turn, now)
            self._suspect_timer = asyncio.create_task(self._resume_if_no_words(turn, now))
        await self.push(Interrupt(conversation=ctx.conversation, turn=turn, time=now,
                                  reason=reason))

    async def _resume_if_no_words(self, turn: int, since: float) -> None:
        await self.ctx.clock.sleep_until(since + self.options.false_interruption_timeout)
        self._suspect_timer = None
        if self._suspect == (turn, since) and not self.user_speaking and not self.words:
            await self._resume("timeout")

    async def _resume(self, why: str) -> None:
        """The barge-in heard no words: speak the cut reply again, as a new reply turn."""
        if self._suspect is None:
            return
        cut, since = self._suspect
        self._clear_suspect()
        ctx = self.ctx
        turn = ctx.turn
        ctx.turn = turn + 1
        now = self.now()
        ctx.tracer.record("false_interruption", self.name, cut, since, now, reason=why,
                          resumed_as=turn)
        self.pending_reply = turn
        await self.push(ResumeReply(conversation=ctx.conversation, turn=turn, time=now,
                                    resumes=cut, reason=why))

    def _clear_suspect(self) -> None:
        self._suspect = None
        if self._suspect_timer is not None:
            self._suspect_timer.cancel()
            self._suspect_timer = None

    async def _cancel_pending(self, reason: str) -> None:
        turn = self.pending_reply
        if turn is None:
            return
        self.pending_reply = None
        ctx = self.ctx
        now = self.now()
        ctx.tracer.record("interruption", self.name, turn, self.speech_onset, now,
                          reason=reason)
        await self.push(Cancel(conversation=ctx.conversation, turn=turn, time=now,
                               reason=reason))

    async def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, AgentSpeechStarted):
            self.agent_speaking = True
            self.agent_turn = frame.turn
            if self.pending_reply is not None and frame.turn >= self.pending_reply:
                self.pending_reply = None
        elif isinstance(frame, AgentSpeechStopped):
            if frame.turn == self.agent_turn:
                self.agent_speaking = False
        elif isinstance(frame, ErrorFrame) and frame.turn == self.pending_reply:
            self.pending_reply = None

    async def finish(self) -> None:
        self._cancel_barge_timer()
        if self._endpoint is not None or (
                (self.words or self._voiced) and not self.awaiting_final):
            self._cancel_endpoint()
            await self._end_turn("end_of_stream")

    async def stop(self) -> None:
        if self._judge is not None:
            self._judge.cancel()
        self._cancel_endpoint()
        self._cancel_barge_timer()
        self._clear_suspect()
