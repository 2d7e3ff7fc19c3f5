"""A scenario's caller track: every event spoken and placed, noise under it, the line over it.

Events are laid end to end: each starts ``after`` seconds after the previous
caller event ended (a fixed offset, never "when the agent ...", so every system
hears the same bytes). Mid-sentence pauses split an event into speech pieces.
Background noise is scaled so that the caller's speech power (over the speech
pieces) divided by the noise power (over the whole call) is the requested SNR;
noise bursts are events of their own. A ``telephone`` scenario then goes
through the phone line (``g711.telephone``). The track is quantised once to
PCM16; its SHA-256 is recorded with every run that hears it.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from cascade.evaluation.g711 import telephone
from cascade.evaluation.scenarios import Event, Noise, Scenario, Suite
from cascade.evaluation.voices import Voice
from cascade.frames import PCM

Floats = npt.NDArray[np.float64]
FULL_SCALE = 32768.0


@dataclass(frozen=True, slots=True)
class Placed:
    """Where one caller event landed on the track (seconds from the track's first sample)."""

    index: int
    event: Event
    start: float
    end: float
    pieces: tuple[tuple[float, float], ...]
    """The stretches of sound (speech between mid-sentence pauses, or the noise burst)."""

    def as_dict(self) -> dict[str, object]:
        return {"index": self.index, "kind": self.event.kind, "text": self.event.text,
                "start": round(self.start, 4), "end": round(self.end, 4),
                "pieces": [[round(a, 4), round(b, 4)] for a, b in self.pieces]}


@dataclass(slots=True)
class CallerTrack:
    """The caller's side of one scenario, identical for every system."""

    scenario: Scenario
    rate: int
    pcm: PCM
    events: list[Placed]
    clean: Floats = field(repr=False)
    """The caller's speech alone (float, PCM16 scale), before noise and the phone line."""

    @property
    def seconds(self) -> float:
        return len(self.pcm) / self.rate

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.pcm.tobytes()).hexdigest()

    def speech_pieces(self) -> list[tuple[float, float]]:
        return [p for e in self.events if e.event.speaks for p in e.pieces]


def scenario_rng(seed: int, scenario: str) -> np.random.Generator:
    """A generator that depends only on the run seed and the scenario id."""
    return np.random.default_rng([seed, zlib.crc32(scenario.encode())])


def make_noise(kind: str, samples: int, rate: int, rng: np.random.Generator) -> Floats:
    """Unit-RMS noise: white, pink (1/f power) or mains hum (50 Hz and harmonics)."""
    if samples == 0:
        return np.zeros(0)
    if kind == "hum":
        t = np.arange(samples) / rate
        phases = rng.uniform(0, 2 * np.pi, 4)
        noise = sum(np.sin(2 * np.pi * 50 * k * t + phases[k - 1]) / k for k in range(1, 5))
        noise = noise + 0.05 * rng.standard_normal(samples)
    else:
        noise = rng.standard_normal(samples)
        if kind == "pink":
            spectrum = np.fft.rfft(noise)
            frequencies = np.fft.rfftfreq(samples, 1.0 / rate)
            spectrum[1:] /= np.sqrt(frequencies[1:])
            spectrum[0] = 0.0
            noise = np.fft.irfft(spectrum, n=samples)
    rms = float(np.sqrt(np.mean(np.square(noise))))
    out: Floats = noise / rms if rms > 0 else noise
    return out


def speech_power(clean: Floats, pieces: list[tuple[float, float]], rate: int) -> float:
    """Mean power of ``clean`` over the speech pieces."""
    mask = np.zeros(len(clean), bool)
    for start, end in pieces:
        mask[round(start * rate): round(end * rate)] = True
    return float(np.mean(np.square(clean[mask]))) if mask.any() else 0.0


def noise_gain(noise: Noise, power: float) -> float:
    """Scale of unit-RMS noise for the requested SNR (or absolute level)."""
    if noise.level_dbfs is not None:
        return float(FULL_SCALE * 10 ** (noise.level_dbfs / 20.0))
    assert noise.snr_db is not None
    return float(np.sqrt(power / 10 ** (noise.snr_db / 10.0)))


def build_track(scenario: Scenario, suite: Suite, voice: Voice, seed: int) -> CallerTrack:
    """Synthesise and place every event of ``scenario``; same inputs, same bytes."""
    rate = suite.sample_rate
    rng = scenario_rng(seed, scenario.id)
    clips: list[tuple[int, Floats]] = []
    bursts: list[tuple[int, Floats]] = []
    placed: list[Placed] = []
    cursor = scenario.lead_in
    for index, event in enumerate(scenario.events, 1):
        cursor += event.gap(index == 1, suite.reply_wait)
        start, pieces = cursor, []
        if event.speaks:
            for words, pause in event.pieces:
                spoken = voice.speak(words).astype(np.float64)
                clips.append((round(cursor * rate), spoken))
                pieces.append((cursor, cursor + len(spoken) / rate))
                cursor += len(spoken) / rate + pause
            cursor = pieces[-1][1]
        else:
            samples = round(event.seconds * rate)
            level = FULL_SCALE * 10 ** (event.level_dbfs / 20.0)
            bursts.append((round(cursor * rate), make_noise("white", samples, rate, rng) * level))
            pieces.append((cursor, cursor + samples / rate))
            cursor = pieces[-1][1]
        placed.append(Placed(index, event, start, cursor, tuple(pieces)))
    tail = scenario.tail if scenario.tail is not None else suite.tail
    length = round((cursor + tail) * rate)
    clean = _lay(clips, length)
    mixed = clean + _lay(bursts, length)
    if scenario.noise is not None:
        power = speech_power(clean, [p for e in placed if e.event.speaks for p in e.pieces],
                             rate)
        gain = noise_gain(scenario.noise, power)
        mixed = mixed + make_noise(scenario.noise.type, length, rate, rng) * gain
    pcm: PCM = np.clip(np.round(mixed), -32768, 32767).astype(np.int16)
    if scenario.channel == "telephone":
        pcm = telephone(pcm, rate, scenario.network)
    return CallerTrack(scenario, rate, pcm, placed, clean)


def _lay(parts: list[tuple[int, Floats]], length: int) -> Floats:
    track = np.zeros(length)
    for offset, samples in parts:
        end = min(length, offset + len(samples))
        track[offset:end] += samples[: end - offset]
    return track
