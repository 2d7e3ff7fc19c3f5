"""`cascade replay` through the real CLI entry point."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import yaml
from typer.testing import CliRunner

from cascade.cli import app
from cascade.replay import read_recording
from cascade.runner import CallResult
from cascade.tracing import read_trace

runner = CliRunner()


def changed_pipeline(recording: Path, path: Path, stage: str, **options: object) -> Path:
    document = read_recording(recording).pipeline
    document["stages"][stage]["options"] = {**document["stages"][stage]["options"], **options}
    path.write_text(yaml.safe_dump(document))
    return path


def test_replay_unchanged_says_so(recorded: tuple[Path, CallResult]) -> None:
    path, _ = recorded
    result = runner.invoke(app, ["replay", str(path)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "recorded on the virtual clock" in said
    assert "re-run" not in said and said.count("replayed") >= 6
    assert "no change: the replay reproduced the recorded turns" in said


def test_replay_a_changed_stage_shows_the_plan_and_the_turns(
        recorded: tuple[Path, CallResult], tmp_path: Path) -> None:
    path, original = recorded
    changed = changed_pipeline(path, tmp_path / "slow.yaml", "turn", min_delay=0.6)
    trace = tmp_path / "replay.jsonl"
    result = runner.invoke(app, ["replay", str(path), "--pipeline", str(changed),
                                 "--trace", str(trace)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("turn" in line and "re-run" in line and "min_delay 0.3 -> 0.6" in line
               for line in lines)
    assert any(" vad " in line and "replayed" in line for line in lines)
    assert any("llm" in line and "downstream of turn" in line for line in lines)
    endpointing = [line.split() for line in lines if "Endpointing (ms)" in line]
    assert [(row[0], *row[-2:]) for row in endpointing] == [("1", "300", "600"),
                                                           ("2", "300", "600")]
    spans = read_trace(trace)
    assert [s.stage for s in spans if s.stage in ("vad", "asr")] == \
        [s.stage for s in original.spans if s.stage in ("vad", "asr")]
    assert {s.name for s in spans} >= {"end_of_turn", "llm", "agent_speech"}


def test_a_bad_recording_is_one_clear_line(
        recorded: tuple[Path, CallResult], tmp_path: Path) -> None:
    garbage = tmp_path / "call.wav"
    garbage.write_bytes(b"RIFF not a recording")
    result = runner.invoke(app, ["replay", str(garbage)])
    assert result.exit_code == 2
    assert "error:" in result.output and "not a Cascade recording" in result.output
    old = tmp_path / "old.rec"
    with zipfile.ZipFile(recorded[0]) as source, zipfile.ZipFile(old, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name == "manifest.json":
                data = json.dumps({**json.loads(data), "version": 0}).encode()
            target.writestr(name, data)
    result = runner.invoke(app, ["replay", str(old)])
    assert result.exit_code == 2
    assert "recording format version 0" in " ".join(result.output.split())
