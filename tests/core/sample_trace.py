"""A hand-built two-turn trace shared by the report, waterfall and OTel tests.

Turn 1: the caller asks about the weather; the agent answers and is cut off
when the caller starts speaking at 5.80 s (stopped at 6.10 s). Turn 2: the
caller declines, the agent replies in full while the caller says "mm-hmm",
and the TTS stage reports an error afterwards.
"""

from __future__ import annotations

from typing import Any

from cascade.tracing import Span

CONVERSATION = "call-1"


def span(turn: int, stage: str, name: str, start: float, end: float, **attrs: Any) -> Span:
    return Span(CONVERSATION, turn, stage, name, start, end, attrs)


def two_turn_conversation() -> list[Span]:
    """Spans in the order a live run records them (each when it finishes)."""
    return [
        span(1, "vad", "user_speech", 0.50, 2.00, duration=1.5),
        span(1, "turn", "end_of_turn", 2.00, 2.30, reason="silence",
             text="hello there, what's the weather like today", delay=0.3),
        span(1, "asr", "asr", 2.00, 2.12, text="hello there, what's the weather like today",
             rejected=None, avg_logprob=-0.21, no_speech_prob=0.01, audio_seconds=1.8),
        span(1, "tts", "tts", 2.60, 2.75, text="It is sunny and warm today.", ttfb=0.08),
        span(1, "tts", "tts", 2.90, 3.05,
             text="Do you want the forecast for tomorrow as well?", ttfb=0.07),
        span(1, "llm", "llm", 2.30, 3.10,
             text="It is sunny and warm today. Do you want the forecast for tomorrow as well?",
             ttft=0.25, user="hello there, what's the weather like today"),
        span(1, "turn", "interruption", 5.80, 6.05, reason="speech"),
        span(1, "playout", "agent_speech", 2.68, 6.10, interrupted=True,
             text="It is sunny and warm today. Do you want"),
        span(2, "vad", "user_speech", 5.80, 7.40, duration=1.6),
        span(2, "asr", "asr", 7.40, 7.52, text="no thanks, just today", rejected=None,
             avg_logprob=-0.3, no_speech_prob=0.02, audio_seconds=1.9),
        span(2, "turn", "end_of_turn", 7.40, 7.70, reason="silence",
             text="no thanks, just today", delay=0.3),
        span(2, "tts", "tts", 7.88, 8.00, text="Alright, enjoy the sunshine!", ttfb=0.06),
        span(2, "llm", "llm", 7.70, 8.20, text="Alright, enjoy the sunshine!", ttft=0.18,
             user="no thanks, just today"),
        span(2, "turn", "backchannel", 8.50, 8.80, text="mm-hmm"),
        span(2, "playout", "agent_speech", 7.96, 9.60, interrupted=False,
             text="Alright, enjoy the sunshine!"),
        span(2, "tts", "error", 9.70, 9.70, error="TimeoutError: synthesis took too long",
             frame="LLMText"),
    ]
