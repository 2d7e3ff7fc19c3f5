"""Speech recognition: VAD-gated segments -> partial and final transcripts.

``ASRStage`` keeps a short pre-roll of caller audio, collects each VAD speech
segment, asks the vendor for partial transcripts while the caller speaks and
for a final one when the segment closes, and records the ``asr`` span (from the
end of speech to the final transcript). Recognition runs through the clock's
``run_blocking`` so the event loop keeps serving other conversations.

A streaming recogniser (a vendor socket that hears the caller while they speak)
overrides the three ``segment_*`` hooks instead of ``recognize``: they are called
from ``process`` in frame order, with the pre-roll, each later piece of the
segment, and its end (which returns what the final transcript awaits).

Whisper-style models invent text on silence and noise ("Thank you."): only VAD
speech reaches the model, and a result whose no-speech probability is high and
whose average log-probability is low is dropped (an empty final transcript
still closes the segment, so the turn controller knows nothing was said).

Every closed segment gets its final transcript, in segment order. When the
recogniser fails (a refused connection, an HTTP 500, a timeout), the segment gets
an ``error`` span and an ``ErrorFrame`` like any stage error, and its final is
the last partial transcript of the segment (the words heard until then are not
lost; the span says ``salvaged_partial``), or empty when there was none: the turn
controller stops waiting for it either way, and the next segment is recognised as
usual. A failed partial is only logged: the final is recognised afresh.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from cascade.audio import resample, to_float
from cascade.frames import (
    PCM,
    ErrorFrame,
    Frame,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    UserAudio,
    Word,
)
from cascade.registry import Adapter

_WORDLESS = re.compile(r"^[\W_]*$")
RECENT_EXTRA = 2.0  # seconds held beyond the pre-roll: a VAD may confirm speech late


@dataclass(slots=True)
class Recognition:
    """What a recogniser returned for one stretch of audio (word times from its start)."""

    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    words: list[Word] = field(default_factory=list)


Covered = tuple[float, Recognition] | None
"""A partial's result and the media time it covers up to; None when it failed."""


class ASROptions(BaseModel):
    """Segmenting and guarding options shared by every ASR adapter."""

    model_config = ConfigDict(extra="forbid")

    language: str = "en"
    partial_interval: float = Field(1.0, ge=0.0, description="seconds between partial "
                                    "transcripts while the caller speaks (0: none)")
    pre_roll: float = Field(0.3, ge=0.0, description="audio kept before the VAD onset")
    min_speech: float = Field(0.15, ge=0.0, description="shorter segments are not sent")
    no_speech_threshold: float = Field(0.6, ge=0.0, le=1.0)
    logprob_threshold: float = Field(-1.0)


class ASRStage(Adapter):
    """Base of ASR adapters: segments, partials, finals, the hallucination guard."""

    kind = "asr"
    accepts = (UserAudio, SpeechStarted, SpeechStopped)
    rate = 16000

    def __init__(self, options: ASROptions) -> None:
        self.options = options
        self._recent: deque[tuple[float, PCM]] = deque()  # (media time, audio) before speech
        self._recent_samples = 0
        self._segment: list[PCM] = []
        self._segment_samples = 0
        self._segment_start = 0.0
        self._in_speech = False
        self._next_partial = 0.0
        self._partial: asyncio.Task[Covered] | None = None
        self._segments = 0  # segments opened so far: the number of the open one
        self._heard: Recognition | None = None  # the open segment's last partial result
        self._finals: asyncio.Task[None] | None = None  # the newest final recognition

    def recognize(self, audio: npt.NDArray[np.float32]) -> Recognition:
        """Transcribe float32 mono audio at 16 kHz (blocking; runs in a worker thread)."""
        raise NotImplementedError

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, UserAudio):
            pcm = frame.pcm if frame.sample_rate == self.rate else resample(
                frame.pcm, frame.sample_rate, self.rate)
            if self._in_speech:
                self._segment.append(pcm)
                self._segment_samples += len(pcm)
                self.segment_audio(pcm, frame.turn)
            else:
                self._remember(frame.time, pcm)
        elif isinstance(frame, SpeechStarted):
            self._in_speech = True
            self._segments += 1
            self._heard = None
            self._start_segment(frame.time - self.options.pre_roll)
            self._next_partial = self.options.partial_interval
            self.segment_started(self._segment_start, self._segment, frame.turn)
        elif isinstance(frame, SpeechStopped):
            # The segment closes here, in frame order; it is recognised off to the side
            # so caller audio keeps flowing in meanwhile, and finals come out in order.
            audio, offset, partial, heard = self._close_segment()
            recognition = self._stopped(frame, audio)
            self._finals = asyncio.create_task(self._final(
                frame, audio, offset, partial, heard, recognition, self._finals))

    # --- hooks: a streaming recogniser overrides these instead of ``recognize`` ---

    def segment_started(self, start: float, pre_roll: Sequence[PCM], turn: int) -> None:
        """A segment opened; ``pre_roll`` is its held audio from media time ``start``
        (read it, don't keep the list)."""

    def segment_audio(self, pcm: PCM, turn: int) -> None:
        """The open segment's next audio: batch recognisers start a partial every
        ``partial_interval``; a streaming one sends it on (and makes its own partials)."""
        self._maybe_partial(turn)

    def segment_stopped(self, stop: SpeechStopped, audio: npt.NDArray[np.float32]
                        ) -> Callable[[], Awaitable[Recognition]]:
        """The segment closed: what its final awaits, once the earlier finals are out
        (not awaited for a segment too short to recognise). Batch recognisers transcribe
        the whole ``audio`` in a worker thread."""
        return functools.partial(self.ctx.clock.run_blocking, self.recognize, audio)

    def _stopped(self, stop: SpeechStopped, audio: npt.NDArray[np.float32]
                 ) -> Callable[[], Awaitable[Recognition]]:
        """``segment_stopped``; if it raises, the segment's final reports that, in order."""
        try:
            return self.segment_stopped(stop, audio)
        except Exception as exc:
            return functools.partial(_raise, exc)

    def _remember(self, at: float, pcm: PCM) -> None:
        """Audio before speech: enough for the pre-roll before a late-confirmed onset."""
        self._recent.append((at, pcm))
        self._recent_samples += len(pcm)
        keep = int((self.options.pre_roll + RECENT_EXTRA) * self.rate)
        while self._recent and self._recent_samples - len(self._recent[0][1]) >= keep:
            self._recent_samples -= len(self._recent.popleft()[1])

    def _start_segment(self, begin: float) -> None:
        """The segment starts with the held audio from media time ``begin`` on."""
        kept: list[PCM] = []
        start: float | None = None
        for at, pcm in self._recent:
            end = at + len(pcm) / self.rate
            if end <= begin:
                continue
            skip = max(0, round((begin - at) * self.rate))
            if start is None:
                start = at + skip / self.rate
            kept.append(pcm[skip:])
        self._segment = kept
        self._segment_samples = sum(len(p) for p in kept)
        self._segment_start = start if start is not None else begin

    def _audio(self) -> npt.NDArray[np.float32]:
        if not self._segment:
            return np.zeros(0, np.float32)
        return to_float(np.concatenate(self._segment))

    def _maybe_partial(self, turn: int) -> None:
        interval = self.options.partial_interval
        if interval <= 0 or self._segment_samples / self.rate < self._next_partial:
            return
        if self._partial is not None and not self._partial.done():
            return
        self._next_partial += interval
        self._partial = asyncio.create_task(
            self._run_partial(turn, self._audio(), self._segments))

    async def _run_partial(self, turn: int, audio: npt.NDArray[np.float32],
                           segment: int) -> Covered:
        """A partial transcript; returns (media time it covers up to, result), or None
        when recognition failed (logged: the final is recognised afresh)."""
        covered = self._segment_start + len(audio) / self.rate
        try:
            result = await self.ctx.clock.run_blocking(self.recognize, audio)
        except Exception as exc:
            ctx = self.ctx
            ctx.log.warning("stage '%s': a partial transcript failed on turn %d of "
                            "conversation %s (%s: %s); the final one is recognised afresh",
                            self.name, turn, ctx.conversation, type(exc).__name__, exc)
            return None
        if segment != self._segments or not self._in_speech or not result.text.strip():
            return covered, result  # another segment's, or heard nothing: not shown
        self._heard = result
        await self.push(Transcript(
            conversation=self.ctx.conversation, turn=turn, time=self.now(),
            text=result.text.strip(), final=False, avg_logprob=result.avg_logprob,
            no_speech_prob=result.no_speech_prob, speech_start=self._segment_start,
            speech_end=self._segment_start + len(audio) / self.rate,
        ))
        return covered, result

    def rejected(self, result: Recognition, speech_seconds: float) -> str | None:
        """Why a result is not trusted as speech, or None when it is."""
        opts = self.options
        if speech_seconds < opts.min_speech:
            return "too_short"
        if _WORDLESS.match(result.text):
            return "no_words"
        if (result.no_speech_prob > opts.no_speech_threshold
                and result.avg_logprob < opts.logprob_threshold):
            return "no_speech"
        return None

    def _close_segment(self) -> tuple[npt.NDArray[np.float32], float,
                                      asyncio.Task[Covered] | None, Recognition | None]:
        """End the open segment: its audio, its media start, its latest partial task and
        what the partials before it heard."""
        self._in_speech = False
        audio = self._audio()
        partial, self._partial = self._partial, None
        self._segment, self._segment_samples = [], 0
        self._recent.clear()
        self._recent_samples = 0
        heard, self._heard = self._heard, None
        return audio, self._segment_start, partial, heard

    async def _final(self, stop: SpeechStopped, audio: npt.NDArray[np.float32], offset: float,
                     partial: asyncio.Task[Covered] | None, heard_before: Recognition | None,
                     recognition: Callable[[], Awaitable[Recognition]],
                     before: asyncio.Task[None] | None) -> None:
        """The segment's final transcript, after the earlier ones: always pushed, empty
        when recognition failed (that failure is reported here, for this segment)."""
        ctx = self.ctx
        span = ctx.tracer.begin("asr", self.name, stop.turn, stop.time)
        if before is not None:
            await before  # it does not raise: each final handles its own failure
        speech = stop.time - stop.started
        reused = salvaged = False
        reason: str | None
        try:
            if speech < self.options.min_speech:
                result, reason = Recognition(""), "too_short"
            else:
                reusable = await self._reusable(partial, stop.time)
                reused = reusable is not None
                result = reusable or await recognition()
                reason = self.rejected(result, speech)
        except Exception as exc:
            heard = next((r for r in (_succeeded(partial), heard_before)
                          if r is not None and r.text.strip()), None)
            if heard is not None:
                result, reason, outcome = heard, self.rejected(heard, speech), (
                    "the last partial transcript stands in for the final")
                salvaged = True
            else:
                result, reason, outcome = Recognition("", no_speech_prob=1.0), "error", (
                    "heard as nothing: an empty final transcript closes it")
            await self._trace_error(
                stop.turn, f"{type(exc).__name__}: {exc}", stop,
                f"recognising the speech from {stop.started:.2f} s to {stop.time:.2f} s "
                f"({outcome})")
        text = "" if reason else result.text.strip()
        words = () if reason else tuple(
            Word(w.text, w.start + offset, w.end + offset, w.probability) for w in result.words)
        span.end(text=text, rejected=reason, avg_logprob=round(result.avg_logprob, 3),
                 no_speech_prob=round(result.no_speech_prob, 3),
                 audio_seconds=round(len(audio) / self.rate, 3), reused_partial=reused,
                 salvaged_partial=salvaged)
        await self.push(Transcript(
            conversation=ctx.conversation, turn=stop.turn, time=self.now(), text=text,
            final=True, avg_logprob=result.avg_logprob, no_speech_prob=result.no_speech_prob,
            words=words, speech_start=stop.started, speech_end=stop.time,
        ))

    @staticmethod
    async def _reusable(partial: asyncio.Task[Covered] | None, speech_end: float
                        ) -> Recognition | None:
        """Let a running partial finish (it holds the CPU anyway); reuse it when it
        already covers the whole utterance, which saves a second recognition."""
        if partial is None or partial.cancelled():
            return None
        done = await asyncio.shield(partial)
        if done is None:  # it failed
            return None
        covered, result = done
        return result if covered >= speech_end else None

    async def _trace_error(self, turn: int, message: str, frame: Frame | None = None,
                           doing: str = "") -> None:
        """What the graph does for a stage that raised: log, ``error`` span, ErrorFrame
        (for a failure the stage handles itself, so the conversation goes on)."""
        ctx = self.ctx
        now = self.now()
        ctx.log.error("stage '%s' failed on turn %d of conversation %s%s: %s", self.name, turn,
                      ctx.conversation, f" while {doing}" if doing else "", message)
        attrs = {} if frame is None else {"frame": type(frame).__name__}
        ctx.tracer.record("error", self.name, turn, now, now, error=message, **attrs)
        await self.push(ErrorFrame(conversation=ctx.conversation, turn=turn, time=now,
                                   stage=self.name, message=message))

    async def finish(self) -> None:
        if self._finals is not None:
            await self._finals

    async def stop(self) -> None:
        if self._partial is not None:
            self._partial.cancel()
        if self._finals is not None:
            self._finals.cancel()


async def _raise(exc: Exception) -> Recognition:
    raise exc


def _succeeded(partial: asyncio.Task[Covered] | None) -> Recognition | None:
    """What a finished partial heard, or None (none ran, it failed, or it still runs)."""
    if partial is None or not partial.done() or partial.cancelled() or partial.exception():
        return None
    done = partial.result()
    return None if done is None else done[1]
