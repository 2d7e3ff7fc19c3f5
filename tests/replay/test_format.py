"""The recording file: an exact round trip, and a clear error for every kind of damage."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from cascade.errors import CascadeError
from cascade.replay.codec import equal
from cascade.replay.format import (
    BLOBS,
    ENTRIES,
    MANIFEST,
    RecordingError,
    read_recording,
    write_recording,
)
from cascade.runner import CallResult
from tests.replay.conftest import agent, busy_call, recorded_conversation


def test_a_recording_round_trips_exactly(tmp_path: Path) -> None:
    from cascade import VirtualClock

    clock = VirtualClock()
    conversation, recorder = recorded_conversation(agent(), clock, "rt")

    async def call() -> None:
        await conversation.start()
        await conversation.play_recording(busy_call())
        await conversation.wait_finished()
        await conversation.stop()

    clock.run(call())
    live = recorder.recording
    write_recording(live, tmp_path / "rt.rec")
    back = read_recording(tmp_path / "rt.rec")
    for field in ("conversation", "pipeline", "stages", "edges", "started", "first_turn",
                  "clock", "cascade_version"):
        assert getattr(back, field) == getattr(live, field), field
    assert len(back.entries) == len(live.entries)
    for mine, theirs in zip(back.entries, live.entries, strict=True):
        assert equal(mine, theirs), (mine, theirs)


def rewrite(source: Path, target: Path, **members: bytes) -> Path:
    """A copy of the archive with some members replaced."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            new.writestr(name, members.get(name.replace(".", "_"), old.read(name)))
    return target


def manifest(path: Path) -> dict[str, object]:
    with zipfile.ZipFile(path) as archive:
        data: dict[str, object] = json.loads(archive.read(MANIFEST))
    return data


def test_a_version_mismatch_names_both_versions(
        recorded: tuple[Path, CallResult], tmp_path: Path) -> None:
    path, _ = recorded
    future = manifest(path) | {"version": 99, "cascade": "9.0"}
    target = rewrite(path, tmp_path / "future.rec",
                     manifest_json=json.dumps(future).encode())
    with pytest.raises(RecordingError) as caught:
        read_recording(target)
    message = str(caught.value)
    assert str(target) in message and "version 99" in message and "9.0" in message
    assert "reads version 1" in message and isinstance(caught.value, CascadeError)


@pytest.mark.parametrize("damage, expected", [
    ("garbage", "not a readable archive"),
    ("truncated", "not a readable archive"),
    ("bit_flip", "blobs.bin is damaged"),
    ("no_entries", "has no entries.jsonl"),
    ("other_format", 'does not say "format": "cascade-recording"'),
    ("bad_manifest", "manifest.json is not valid JSON"),
    ("manifest_fields", "manifest.json lacks"),
    ("bad_line", "entries.jsonl line 3 is damaged"),
    ("missing_audio", "lies outside the blob data"),
    ("missing_file", "no such recording file"),
])
def test_damage_gives_a_clear_error_naming_the_file(
        recorded: tuple[Path, CallResult], tmp_path: Path, damage: str, expected: str) -> None:
    path, _ = recorded
    raw = path.read_bytes()
    target = tmp_path / f"{damage}.rec"
    with zipfile.ZipFile(path) as archive:
        entries = archive.read(ENTRIES).decode().splitlines()
        blobs = archive.read(BLOBS)
    if damage == "garbage":
        target.write_bytes(b"RIFF....WAVEfmt " + raw[:200])
    elif damage == "truncated":
        target.write_bytes(raw[: len(raw) // 2])
    elif damage == "bit_flip":
        stored = tmp_path / "stored.rec"
        with zipfile.ZipFile(path) as old, zipfile.ZipFile(stored, "w") as new:
            for name in old.namelist():
                new.writestr(name, old.read(name))  # ZIP_STORED: bytes as they are
        data = bytearray(stored.read_bytes())
        at = data.find(blobs[1000:1016])
        data[at] ^= 0x40
        target.write_bytes(bytes(data))
    elif damage == "no_entries":
        with zipfile.ZipFile(path) as old, zipfile.ZipFile(target, "w") as new:
            for name in (MANIFEST, BLOBS):
                new.writestr(name, old.read(name))
    elif damage == "other_format":
        rewrite(path, target, manifest_json=b'{"format": "something-else", "version": 1}')
    elif damage == "bad_manifest":
        rewrite(path, target, manifest_json=b'{"format": ')
    elif damage == "manifest_fields":
        rewrite(path, target, manifest_json=b'{"format": "cascade-recording", "version": 1}')
    elif damage == "bad_line":
        entries[2] = entries[2][: len(entries[2]) // 2]
        rewrite(path, target, entries_jsonl="\n".join(entries).encode())
    elif damage == "missing_audio":
        rewrite(path, target, blobs_bin=blobs[: len(blobs) // 2])
    with pytest.raises(RecordingError) as caught:
        read_recording(target)
    assert str(target) in str(caught.value)
    assert expected in str(caught.value)


def test_unrecordable_values_fail_at_write_naming_the_stage(tmp_path: Path) -> None:
    from cascade.frames import Event
    from cascade.replay.format import Entry, Recording

    recording = Recording("c", {}, {}, [], entries=[
        Entry(0, 1.5, "turn", Event(conversation="c", turn=1, time=1.5, name="x",
                                    data={"when": object()}))])  # type: ignore[dict-item]
    with pytest.raises(RecordingError, match=r"Event from stage 'turn' at 1\.500 s"):
        write_recording(recording, tmp_path / "x.rec")
