"""Make a caller recording to try `cascade run` with, spoken by the bundled Piper voice.

    python examples/make_call.py call.wav

Two questions with a pause between them long enough for the agent to answer.
Needs the [local] extra (it uses the same Piper voice the agent speaks with,
slowed down a little so the two sides are told apart).
"""

from __future__ import annotations

import sys

import numpy as np

from cascade.adapters.piper import PiperOptions, PiperTTS
from cascade.audio import resample, write_audio

RATE = 16000
QUESTIONS = (
    "Hello! Could you tell me what time the library opens tomorrow?",
    "Thanks. And do I need a card to borrow a book?",
)


def speak(text: str) -> np.ndarray:
    from piper import SynthesisConfig

    voice = PiperTTS._load(PiperOptions()).voice
    config = SynthesisConfig(length_scale=1.15)
    return np.concatenate([resample(c.audio_int16_array, c.sample_rate, RATE)
                           for c in voice.synthesize(text, syn_config=config)])


def main(path: str) -> None:
    gap = np.zeros(int(RATE * 9.0), np.int16)
    parts = [np.zeros(RATE // 2, np.int16)]
    for question in QUESTIONS:
        parts += [speak(question), gap]
    write_audio(path, np.concatenate(parts), RATE)
    print(f"wrote {path}: {sum(len(p) for p in parts) / RATE:.1f} s, {len(QUESTIONS)} turns")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "call.wav")
