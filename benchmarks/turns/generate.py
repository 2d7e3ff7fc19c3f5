"""Build the turn-taking conversations: caller audio with ground-truth labels.

Each conversation is one caller's side of a call (the agent is not in the
microphone: an echo-free headset). It has four *slots*; a slot is a caller
turn followed by what the caller does while the agent answers:

* the turn is **complete** (one sentence) or **paused** (a sentence with a
  0.5-0.9 s pause inside it: "Can you tell me the weather in" ... "Paris
  tomorrow?"), spoken by the Piper voice or taken from real recorded speech;
* during the reply comes a **backchannel** ("uh-huh", "yeah", "okay",
  "mm-hmm", "right", ...), a real **interruption** (a whole sentence, which is
  also the caller's next turn), a wordless **noise** burst (a voiced hum or a
  cough), or nothing.

The agent's reply time is not known in advance, so events during it are laid
1.6-2.6 s after the end of the caller's turn: the benchmark's stand-in agent
starts ~0.55 s after the end of speech (0.3 s endpointing + 0.25 s of
LLM/TTS delay on the virtual clock) and speaks ``REPLY`` for ~6 s. Every third
conversation is laid over pink or brown noise at 10-20 dB SNR.

Writes ``cNN.wav`` (16 kHz mono PCM16) and ``labels.json`` into the data
folder (default ``benchmarks/turns/.data``, git-ignored). Run:
``python benchmarks/turns/generate.py [--count 40] [--seed 7] [--force]``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sounds import RATE, Clip, PiperVoice, background, cough, hum, real_speech, split_at_quietest

from cascade.audio import write_audio
from cascade.frames import PCM

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
VERSION = 2

REPLY = ("Sure, here is what I found about that. It takes a moment to explain. "
         "There are a few parts to it, so please bear with me.")
"""What the stand-in agent (echo-llm) says every time: 24 words, ~6 s of tone TTS."""
SECONDS_PER_WORD = 0.25
AGENT_START = 1.5
"""Latest likely start of the agent's reply after the caller's end (incomplete_delay 1.2 s)."""

QUESTIONS = (
    "What is the capital of France?", "How far away is the moon?",
    "Can you tell me a joke about cats?", "What should I cook for dinner tonight?",
    "Why is the sky blue?", "How many legs does a spider have?",
    "Who wrote Pride and Prejudice?", "How do I make a cup of green tea?",
    "What is the boiling point of water?", "Is it going to rain tomorrow?",
    "Please turn off the lights in the kitchen.", "What time is it in Tokyo right now?",
    "Remind me to water the plants tonight.", "How long should I boil pasta?",
    "Tell me something interesting about whales.", "What's a good name for a puppy?",
    "Can you recommend a good book for the weekend?", "How do I reset my password?",
    "What is the tallest mountain in Europe?", "Give me a quick summary of the news.",
)
PAUSED = (
    ("Can you tell me the weather in", "Paris tomorrow?"),
    ("I would like to book a table for", "four people at seven."),
    ("What is the fastest way to get to", "the train station from here?"),
    ("Could you remind me to call my", "sister on Sunday evening?"),
    ("I need to buy a present for", "my brother's birthday."),
    ("How long does it take to", "fly from London to New York?"),
    ("Play some music by", "the Beatles, please."),
    ("Set an alarm for", "six thirty tomorrow morning."),
    ("What time does the", "pharmacy close today?"),
    ("Send a message to", "Anna saying I will be late."),
    ("I'm looking for a recipe with", "chicken and rice."),
    ("Tell me a fun fact about", "octopuses and their arms."),
    ("I was wondering if, um,", "you could help me plan a trip."),
    ("Find me a cheap hotel near", "the airport for Friday night."),
    ("Is there a good Italian restaurant", "within walking distance?"),
    ("So the thing is, my", "laptop won't turn on anymore."),
    ("Add milk, eggs and", "bread to my shopping list."),
    ("Can you explain how", "a rainbow forms after the rain?"),
)
INTERRUPTIONS = (
    "Wait, sorry, that's not what I asked.", "Actually, can you stop for a second?",
    "Hold on, I have another question.", "No, no, I meant next Tuesday.",
    "Sorry to interrupt, but I'm in a hurry.", "Excuse me, can you repeat the first part?",
    "Hang on, let me ask you something else.", "Stop, I already know that part.",
    "Never mind that, what about the weekend?", "Sorry, I think you misunderstood me.",
)
BACKCHANNELS = ("Uh-huh.", "Yeah.", "Okay.", "Mm-hmm.", "Right.", "Yeah, yeah.",
                "Okay, sure.", "I see.", "Right, right.", "Sure.")
EVENTS = ("backchannel", "interruption", "noise", "none")


@dataclass
class Timeline:
    """Sounds laid on one caller track; each placement becomes a label."""

    parts: list[tuple[int, PCM]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def put(self, pcm: PCM, at: float) -> tuple[float, float]:
        start = round(at * RATE)
        self.parts.append((start, pcm))
        return start / RATE, (start + len(pcm)) / RATE

    def render(self, seconds: float) -> PCM:
        out = np.zeros(round(seconds * RATE), np.float32)
        for start, pcm in self.parts:
            out[start : start + len(pcm)] += pcm
        return np.clip(out, -32768, 32767).astype(np.int16)

    def speech_power(self) -> float:
        """Mean power of the caller's sounds (what the SNR is relative to)."""
        joined = np.concatenate([p.astype(np.float64) for _, p in self.parts])
        return float(np.mean(joined**2))


class Sources:
    """Picks what the caller says, varied but reproducible from a seed."""

    def __init__(self, voice: PiperVoice, real: list[Clip]) -> None:
        self.voice = voice
        self.real = real
        self.uses = {"question": 0, "paused": 0, "interruption": 0, "backchannel": 0, "real": 0,
                     "noise": 0}

    def _next(self, bank: str, size: int) -> int:
        self.uses[bank] += 1
        return (self.uses[bank] - 1) % size

    def real_clip(self) -> Clip:
        return self.real[self._next("real", len(self.real))]

    def turn(self, paused: bool, real: bool, rng: np.random.Generator) -> tuple[list[Clip], str]:
        """The clips of one turn (two when paused) and the whole sentence."""
        if real:
            clip = self.real_clip()
            if not paused:
                return [clip], clip.text
            first, second = split_at_quietest(clip)
            return [Clip(first, "", clip.source), Clip(second, "", clip.source)], clip.text
        if not paused:
            text = QUESTIONS[self._next("question", len(QUESTIONS))]
            return [self.voice.say(text, rng)], text
        first, second = PAUSED[self._next("paused", len(PAUSED))]
        # Half the first halves end on a comma (a hesitant, level ending), half on nothing.
        head = first + ("," if rng.random() < 0.5 and not first.endswith(",") else "")
        return [self.voice.say(head, rng), self.voice.say(second, rng)], f"{first} {second}"

    def interruption(self, real: bool, rng: np.random.Generator) -> Clip:
        if real:
            return self.real_clip()
        return self.voice.say(INTERRUPTIONS[self._next("interruption", len(INTERRUPTIONS))], rng)

    def noise(self) -> str:
        """Hums and coughs in turn."""
        return ("hum", "cough")[self._next("noise", 2)]

    def backchannel(self, rng: np.random.Generator) -> Clip:
        return self.voice.say(BACKCHANNELS[self._next("backchannel", len(BACKCHANNELS))], rng)


def reply_seconds() -> float:
    return len(REPLY.split()) * SECONDS_PER_WORD


def lay_turn(line: Timeline, clips: list[Clip], text: str, at: float, label: str,
             rng: np.random.Generator, barge_in: bool = False) -> float:
    """Lay the clips of a turn from ``at`` (a pause between two clips); return its end."""
    segments = []
    for index, clip in enumerate(clips):
        if index:
            at += float(rng.uniform(0.5, 0.9))
        segments.append(line.put(clip.pcm, at))
        at = segments[-1][1]
    line.events.append({
        "id": label, "kind": "turn", "style": "paused" if len(clips) > 1 else "complete",
        "barge_in": barge_in, "source": clips[0].source, "text": text,
        "start": segments[0][0], "end": segments[-1][1],
        "segments": [list(s) for s in segments],
        "pause": [segments[0][1], segments[1][0]] if len(segments) > 1 else None,
    })
    return segments[-1][1]


def build(index: int, sources: Sources, seed: int) -> tuple[PCM, dict[str, Any]]:
    """One conversation: its audio and its labels."""
    rng = np.random.default_rng([seed, index])
    name = f"c{index:02d}"
    line = Timeline()
    events = rng.permutation(EVENTS)
    paused = set(rng.choice(4, size=2 - index % 2, replace=False).tolist())
    reply = reply_seconds()
    at = float(rng.uniform(0.4, 0.8))
    for slot, event in enumerate(events):
        real = (index + slot) % 4 == 0
        clips, text = sources.turn(slot in paused, real, rng)
        end = lay_turn(line, clips, text, at, f"{name}.t{slot + 1}", rng)
        during = end + float(rng.uniform(1.6, 2.6))
        reply_end = end + AGENT_START + reply
        if event == "backchannel":
            clip = sources.backchannel(rng)
            start, stop = line.put(clip.pcm, during)
            line.events.append({"id": f"{name}.b{slot + 1}", "kind": "backchannel",
                                "text": clip.text, "source": clip.source,
                                "start": start, "end": stop})
        elif event == "noise":
            sound = sources.noise()
            pcm = hum(rng) if sound == "hum" else cough(rng)
            start, stop = line.put(pcm, during)
            line.events.append({"id": f"{name}.n{slot + 1}", "kind": "noise", "sound": sound,
                                "start": start, "end": stop})
            reply_end += 3.0  # cut, then resumed from the sentence it was cut in
        elif event == "interruption":
            clip = sources.interruption(real=slot % 2 == 1 and index % 3 == 0, rng=rng)
            end = lay_turn(line, [clip], clip.text, during, f"{name}.i{slot + 1}", rng,
                           barge_in=True)
            reply_end = end + AGENT_START + reply
        at = reply_end + float(rng.uniform(1.2, 2.2))
    seconds = at
    audio = line.render(seconds)
    noise = None
    if index % 3 == 2:
        kind = "pink" if index % 2 == 0 else "brown"
        snr = float(rng.uniform(10.0, 20.0))
        level = np.sqrt(line.speech_power() / 10 ** (snr / 10))
        mixed = audio + background(kind, len(audio), rng) * level
        audio = np.clip(mixed, -32768, 32767).astype(np.int16)
        noise = {"kind": kind, "snr_db": round(snr, 1)}
    line.events.sort(key=lambda e: e["start"])
    for event in line.events:
        for key in ("start", "end"):
            event[key] = round(event[key], 4)
    return audio, {"id": name, "file": f"{name}.wav", "seconds": round(seconds, 3),
                   "noise": noise, "events": line.events}


def generate(data: Path, count: int, seed: int) -> dict[str, Any]:
    """Write ``count`` conversations and their ``labels.json`` into ``data``."""
    data.mkdir(parents=True, exist_ok=True)
    (data / ".gitignore").write_text("*\n")
    sources = Sources(PiperVoice(), real_speech())
    conversations = []
    for index in range(count):
        audio, labels = build(index, sources, seed)
        write_audio(data / labels["file"], audio, RATE)
        conversations.append(labels)
    manifest = {"version": VERSION, "count": count, "seed": seed, "rate": RATE,
                "agent": {"template": REPLY, "seconds_per_word": SECONDS_PER_WORD},
                "conversations": conversations}
    (data / "labels.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def load_or_generate(data: Path, count: int, seed: int, force: bool = False
                     ) -> dict[str, Any]:
    """The cached set when it matches (version, count, seed), else a fresh one."""
    path = data / "labels.json"
    if path.exists() and not force:
        manifest: dict[str, Any] = json.loads(path.read_text())
        same = (manifest.get("version"), manifest.get("count"), manifest.get("seed"))
        files = all((data / c["file"]).exists() for c in manifest["conversations"])
        if same == (VERSION, count, seed) and files:
            return manifest
    return generate(data, count, seed)


def tally(manifest: dict[str, Any]) -> dict[str, int]:
    """How many labelled events of each kind the set holds."""
    counts: dict[str, int] = {}
    for conversation in manifest["conversations"]:
        for event in conversation["events"]:
            kind = event["kind"]
            if kind == "turn":
                kind = "interruption" if event["barge_in"] else f"turn/{event['style']}"
            elif kind == "noise":
                kind = f"noise/{event['sound']}"
            counts[kind] = counts.get(kind, 0) + 1
    counts["noisy conversations"] = sum(1 for c in manifest["conversations"] if c["noise"])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="output folder")
    parser.add_argument("--count", type=int, default=40, help="conversations (default 40)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--force", action="store_true", help="regenerate even if cached")
    args = parser.parse_args()
    began = time.perf_counter()
    manifest = load_or_generate(args.data, args.count, args.seed, args.force)
    seconds = sum(c["seconds"] for c in manifest["conversations"])
    print(f"{args.data}: {manifest['count']} conversations, {seconds / 60:.1f} min of audio, "
          f"{time.perf_counter() - began:.1f} s")
    for kind, n in sorted(tally(manifest).items()):
        print(f"  {kind:22} {n}")


if __name__ == "__main__":
    main()
