"""The recording of one conversation, and its versioned file format.

A ``Recording`` is everything needed to re-execute a call: the pipeline as it
ran, the caller's input frames, and every frame and span each stage produced,
each stamped with its time on the pipeline clock and its place in the run.

On disk a recording is one ZIP archive (CRC-checked, so damage is detected):

* ``manifest.json`` - ``{"format": "cascade-recording", "version": 1, ...}``:
  the Cascade version that wrote it, the conversation id, the clock kind
  (``virtual``/``real``), ``started`` (pipeline-clock time when the
  conversation began) and ``first_turn``, the pipeline document, each stage's
  adapter and validated options, and the graph's edges (``playout`` included).
* ``entries.jsonl`` - one JSON object per line, in the order things happened:
  ``{"seq": 0, "at": 0.02, "stage": "vad", "turn_to": null, "item": ...}``.
  ``stage`` is null for caller input; ``item`` is a frame or a span encoded by
  ``cascade.replay.codec`` (type name and every field); ``turn_to`` is set when
  the conversation's current turn advanced just before this entry.
* ``blobs.bin`` - the raw bytes of every array (caller and agent PCM),
  referenced from entries by offset, dtype (with byte order) and shape.
"""

from __future__ import annotations

import contextlib
import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cascade.errors import CascadeError
from cascade.frames import Frame
from cascade.replay.codec import Blobs, decode, encode
from cascade.tracing import Span

FORMAT = "cascade-recording"
VERSION = 1
MANIFEST = "manifest.json"
ENTRIES = "entries.jsonl"
BLOBS = "blobs.bin"


class RecordingError(CascadeError):
    """A recording cannot be written, read or replayed; the message names the file."""


@dataclass(slots=True, frozen=True)
class StageRecord:
    """How a stage was configured when the call was recorded."""

    adapter: str
    options: dict[str, Any]


@dataclass(slots=True, frozen=True)
class Entry:
    """One thing that happened: caller input (``stage`` None), or a stage's frame or span."""

    seq: int
    at: float
    stage: str | None
    item: Frame | Span
    turn_to: int | None = None


@dataclass(slots=True)
class Recording:
    """A recorded conversation, ready to be written, read and replayed."""

    conversation: str
    pipeline: dict[str, Any]
    stages: dict[str, StageRecord]
    edges: list[tuple[str, str]]
    started: float = 0.0
    first_turn: int = 1
    clock: str = "virtual"
    cascade_version: str = ""
    entries: list[Entry] = field(default_factory=list)

    @property
    def sample_rate(self) -> int:
        return int(self.pipeline.get("sample_rate", 16000))

    def spans(self) -> list[Span]:
        """The trace of the recorded call, in the order spans were recorded."""
        return [e.item for e in self.entries if isinstance(e.item, Span)]

    def inputs(self) -> list[Entry]:
        return [e for e in self.entries if e.stage is None]

    def of_stage(self, stage: str) -> list[Entry]:
        return [e for e in self.entries if e.stage == stage]

    def stage_names(self) -> list[str]:
        """Configured stages, then the ones only the graph adds (``playout``)."""
        extra = {n for edge in self.edges for n in edge} - set(self.stages)
        return [*self.stages, *sorted(extra)]


def write_recording(recording: Recording, path: str | Path) -> None:
    """Write ``recording`` as one archive at ``path`` (replacing any file there)."""
    path = Path(path)
    blobs = Blobs()
    lines = []
    for entry in recording.entries:
        try:
            item = encode(entry.item, blobs)
        except TypeError as exc:
            who = "caller input" if entry.stage is None else f"stage '{entry.stage}'"
            raise RecordingError(f"{path}: cannot record {type(entry.item).__name__} from "
                                 f"{who} at {entry.at:.3f} s: {exc}") from None
        lines.append(json.dumps({"seq": entry.seq, "at": entry.at, "stage": entry.stage,
                                 "turn_to": entry.turn_to, "item": item},
                                separators=(",", ":")))
    manifest = {
        "format": FORMAT, "version": VERSION, "cascade": recording.cascade_version,
        "conversation": recording.conversation, "clock": recording.clock,
        "started": recording.started, "first_turn": recording.first_turn,
        "pipeline": recording.pipeline,
        "stages": {n: {"adapter": s.adapter, "options": s.options}
                   for n, s in recording.stages.items()},
        "edges": [list(e) for e in recording.edges],
    }
    try:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST, json.dumps(manifest, indent=1))
            archive.writestr(ENTRIES, "\n".join(lines) + "\n")
            archive.writestr(BLOBS, blobs.data)
    except OSError as exc:
        raise RecordingError(f"{path}: cannot write the recording ({exc.strerror})") from None


def read_recording(path: str | Path) -> Recording:
    """Load a recording written by ``write_recording``; RecordingError says what is wrong."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = _manifest(path, _member(path, archive, MANIFEST))
            blobs = Blobs(_member(path, archive, BLOBS))
            text = _member(path, archive, ENTRIES).decode("utf-8", errors="strict")
    except FileNotFoundError:
        raise RecordingError(f"{path}: no such recording file") from None
    except IsADirectoryError:
        raise RecordingError(f"{path}: is a directory, not a recording file") from None
    except zipfile.BadZipFile as exc:
        raise RecordingError(f"{path}: not a Cascade recording, or a damaged one: the file "
                             f"is not a readable archive ({exc}); record the call again"
                             ) from None
    except UnicodeDecodeError as exc:
        raise RecordingError(f"{path}: {ENTRIES} is not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise RecordingError(f"{path}: cannot read the recording ({exc.strerror})") from None
    try:
        recording = Recording(
            conversation=str(manifest["conversation"]), pipeline=dict(manifest["pipeline"]),
            stages={str(n): StageRecord(str(s["adapter"]), dict(s["options"]))
                    for n, s in manifest["stages"].items()},
            edges=[(str(a), str(b)) for a, b in manifest["edges"]],
            started=float(manifest["started"]), first_turn=int(manifest["first_turn"]),
            clock=str(manifest["clock"]), cascade_version=str(manifest["cascade"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RecordingError(f"{path}: {MANIFEST} is damaged ({type(exc).__name__}: {exc})"
                             ) from None
    _load_adapters(manifest)
    recording.entries = _entries(path, text, blobs)
    return recording


def _member(path: Path, archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        return archive.read(name)
    except KeyError:
        raise RecordingError(f"{path}: not a Cascade recording: the archive has no {name}"
                             ) from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise RecordingError(f"{path}: {name} is damaged ({exc or type(exc).__name__}); "
                             "record the call again") from None


def _manifest(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise RecordingError(f"{path}: {MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise RecordingError(f"{path}: not a Cascade recording ({MANIFEST} does not say "
                             f'"format": "{FORMAT}")')
    version = manifest.get("version")
    if version != VERSION:
        from cascade import __version__

        raise RecordingError(
            f"{path}: recording format version {version} (written by Cascade "
            f"{manifest.get('cascade', '?')}), but this Cascade ({__version__}) reads "
            f"version {VERSION}: replay it with the Cascade that wrote it, or record the "
            "call again")
    needed = ("cascade", "conversation", "clock", "started", "first_turn", "pipeline",
              "stages", "edges")
    missing = [key for key in needed if key not in manifest]
    if missing:
        raise RecordingError(f"{path}: {MANIFEST} lacks {', '.join(missing)}")
    return manifest


def _load_adapters(manifest: dict[str, Any]) -> None:
    """Import the recorded adapters that are installed, so frame types they define decode."""
    from cascade.registry import load_adapter

    for stage in manifest["stages"].values():
        # Not installed here? Its stage can still replay from the recording.
        with contextlib.suppress(CascadeError, KeyError, TypeError):
            load_adapter(str(stage["adapter"]))


def _entries(path: Path, text: str, blobs: Blobs) -> list[Entry]:
    entries: list[Entry] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            item = decode(data["item"], blobs)
            if not isinstance(item, (Frame, Span)):
                raise ValueError(f"holds a {type(item).__name__}, not a frame or a span")
            stage = data["stage"]
            turn_to = data.get("turn_to")
            entry = Entry(int(data["seq"]), float(data["at"]),
                          None if stage is None else str(stage), item,
                          None if turn_to is None else int(turn_to))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RecordingError(f"{path}: {ENTRIES} line {number} is damaged: {exc}"
                                 ) from None
        if entries and entry.seq <= entries[-1].seq:
            raise RecordingError(f"{path}: {ENTRIES} line {number}: entries are out of "
                                 f"order (seq {entry.seq} after {entries[-1].seq})")
        entries.append(entry)
    return entries
