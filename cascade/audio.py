"""Audio in and out: read any common file as PCM16 mono, resample, cut into frames.

Reading uses ``soundfile`` (WAV, FLAC, OGG, MP3) and falls back to PyAV for
other containers when it is installed. Resampling is ``soxr``. Every failure is
an ``AudioInputError`` that says what is wrong with which file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from cascade.errors import AudioInputError
from cascade.frames import PCM

FRAME_SECONDS = 0.02
SILENCE_DBFS = -60.0


def to_pcm16(samples: npt.NDArray[np.floating] | npt.NDArray[np.integer]) -> PCM:
    """Float in [-1, 1] (or int16) to int16, clipping."""
    if samples.dtype == np.int16:
        return samples  # type: ignore[return-value]
    scaled = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0
    return scaled.astype(np.int16)


def to_float(pcm: PCM) -> npt.NDArray[np.float32]:
    return pcm.astype(np.float32) / 32768.0


def resample(pcm: PCM, rate_in: int, rate_out: int) -> PCM:
    """Resample PCM16 with soxr (returns the input when the rates match)."""
    if rate_in == rate_out or len(pcm) == 0:
        return pcm
    out: PCM = soxr.resample(pcm, rate_in, rate_out)
    return out


def _read_with_av(path: Path) -> tuple[npt.NDArray[np.float32], int]:
    try:
        import av
    except ImportError as exc:
        raise AudioInputError(
            f"{path}: not a format soundfile reads, and PyAV is not installed to try "
            "other formats (pip install av)"
        ) from exc
    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            rate = stream.rate
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks = [
                out.to_ndarray().reshape(-1)
                for packet in container.decode(stream)
                for out in resampler.resample(packet)
            ]
    except (av.FFmpegError, IndexError) as exc:
        raise AudioInputError(f"{path}: cannot decode audio ({exc})") from exc
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return data.astype(np.float32), int(rate)


def read_audio(path: str | Path, rate: int, *, allow_silent: bool = False) -> PCM:
    """Load a recording as PCM16 mono at ``rate``; raise on unreadable/empty/silent."""
    path = Path(path)
    if not path.exists():
        raise AudioInputError(f"{path}: no such file")
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
        mono = data.mean(axis=1)
    except sf.LibsndfileError:
        mono, file_rate = _read_with_av(path)
    if len(mono) == 0:
        raise AudioInputError(f"{path}: the file holds no audio samples")
    pcm = resample(to_pcm16(mono), int(file_rate), rate)
    if not allow_silent and level_dbfs(pcm) < SILENCE_DBFS:
        raise AudioInputError(
            f"{path}: the recording is silent (peak below {SILENCE_DBFS:.0f} dBFS); "
            "check the input or its gain"
        )
    return pcm


def level_dbfs(pcm: PCM) -> float:
    """Peak level in dBFS (-inf for digital silence)."""
    if len(pcm) == 0:
        return float("-inf")
    peak = int(np.abs(pcm.astype(np.int32)).max())
    return float("-inf") if peak == 0 else 20.0 * float(np.log10(peak / 32768.0))


def split_frames(pcm: PCM, rate: int, seconds: float = FRAME_SECONDS) -> Iterator[PCM]:
    """Cut PCM into fixed frames (the last one zero-padded)."""
    size = int(rate * seconds)
    for start in range(0, len(pcm), size):
        chunk = pcm[start : start + size]
        if len(chunk) < size:
            chunk = np.concatenate([chunk, np.zeros(size - len(chunk), np.int16)])
        yield chunk


class FrameCutter:
    """Cuts audio arriving in chunks of any length into whole frames (20 ms by default)."""

    def __init__(self, rate: int, seconds: float = FRAME_SECONDS) -> None:
        self.size = int(rate * seconds)
        self._held: PCM = np.zeros(0, np.int16)

    def cut(self, pcm: PCM) -> list[PCM]:
        """The whole frames now available; the remainder waits for the next chunk."""
        held = np.concatenate([self._held, pcm]) if len(self._held) else pcm
        whole = len(held) - len(held) % self.size
        self._held = held[whole:]
        return [held[start : start + self.size] for start in range(0, whole, self.size)]

    def rest(self) -> PCM:
        """What is held back (less than a frame), handed over and forgotten."""
        held, self._held = self._held, np.zeros(0, np.int16)
        return held


def write_audio(path: str | Path, pcm: npt.NDArray[np.int16], rate: int) -> None:
    """Write PCM16 (mono, or (n, channels)) to a file; format from the suffix."""
    sf.write(str(path), pcm, rate, subtype="PCM_16")
