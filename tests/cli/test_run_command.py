"""`cascade run`, `cascade trace`, `cascade adapters` through the real CLI entry point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from typer.testing import CliRunner

from cascade.cli import app
from cascade.tracing import read_trace
from tests.conftest import babble, script, silence

runner = CliRunner()


def caller_file(path: Path, rate: int = 44100, channels: int = 2) -> Path:
    """Two bursts of speech-like sound, written at a foreign rate and channel count."""
    from cascade.audio import resample

    mono = resample(script(silence(0.5), babble(1.2, 1), silence(5.0), babble(1.0, 2),
                           silence(5.0)), 16000, rate)
    sf.write(path, np.stack([mono] * channels, axis=1) if channels > 1 else mono, rate)
    return path


def test_run_writes_a_stereo_call_a_trace_and_prints_each_turn(tmp_path: Path) -> None:
    wav = caller_file(tmp_path / "call.flac")
    out, trace = tmp_path / "out.wav", tmp_path / "trace.jsonl"
    result = runner.invoke(app, ["run", "-i", str(wav), "-o", str(out), "-t", str(trace),
                                 "--pipeline", "scripted", "--fast",
                                 "--greeting", "Welcome to the test line."])
    assert result.exit_code == 0, result.output
    assert "caller: hello there" in result.output
    assert "agent: You said: hello there." in result.output
    data, rate = sf.read(out, dtype="int16")
    assert rate == 16000 and data.ndim == 2 and data.shape[1] == 2
    assert np.abs(data[:, 1]).max() > 1000  # the agent spoke on the right channel
    spans = read_trace(trace)
    assert {"user_speech", "end_of_turn", "asr", "llm", "tts", "agent_speech"} <= {
        s.name for s in spans}
    assert any(s.name == "agent_speech" and s.turn == 0 for s in spans)  # the greeting


def test_run_mix_writes_mono(tmp_path: Path) -> None:
    wav = caller_file(tmp_path / "call.wav", rate=8000, channels=1)
    out = tmp_path / "mix.wav"
    result = runner.invoke(app, ["run", "-i", str(wav), "-o", str(out), "-p", "scripted",
                                 "--fast", "--mix"])
    assert result.exit_code == 0, result.output
    assert sf.info(out).channels == 1


def test_bad_recordings_get_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.int16), 16000)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.int16), 16000)
    garbage = tmp_path / "garbage.wav"
    garbage.write_text("not audio")
    cases = {silent: "silent", empty: "no audio", garbage: "cannot decode",
             tmp_path / "missing.wav": "no such file"}
    for path, words in cases.items():
        result = runner.invoke(app, ["run", "-i", str(path), "-p", "scripted", "--fast"])
        assert result.exit_code == 2, (path, result.output)
        assert words in result.output and "Traceback" not in result.output


def test_bad_pipeline_names_file_field_and_fix(tmp_path: Path) -> None:
    wav = caller_file(tmp_path / "call.wav")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  vad: {adapter: energy-vad}\n  asr: {adapter: whisperx}\n")
    result = runner.invoke(app, ["run", "-i", str(wav), "-p", str(bad), "--fast"])
    assert result.exit_code == 2
    assert "bad.yaml" in result.output and "stages.asr.adapter" in result.output
    assert "energy-vad" in result.output  # lists what is installed
    result = runner.invoke(app, ["run", "-i", str(wav), "-p", "nonexistent", "--fast"])
    assert result.exit_code == 2 and "built-in" in result.output


def test_trace_command_prints_turns_and_draws_png(tmp_path: Path) -> None:
    wav = caller_file(tmp_path / "call.wav")
    trace = tmp_path / "t.jsonl"
    assert runner.invoke(app, ["run", "-i", str(wav), "-t", str(trace), "-p", "scripted",
                               "--fast"]).exit_code == 0
    png = tmp_path / "w.png"
    result = runner.invoke(app, ["trace", str(trace), "--png", str(png)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "hello there" in result.output and png.stat().st_size > 5000
    corrupt = tmp_path / "bad.jsonl"
    corrupt.write_text('{"conversation": "c"}\n')
    result = runner.invoke(app, ["trace", str(corrupt)])
    assert result.exit_code == 2 and "bad.jsonl:1" in result.output


def test_adapters_lists_every_builtin_with_its_state() -> None:
    result = runner.invoke(app, ["adapters"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ("silero", "webrtc", "faster-whisper", "llama-cpp", "piper", "turn",
                 "energy-vad", "echo-llm"):
        assert name in result.output


def test_adapters_prints_install_hints_with_brackets(monkeypatch) -> None:
    """Square brackets in an install hint are text, not rich markup."""
    from cascade import registry
    from cascade.adapters.scripted import EchoLLM

    class NeedsAPackage(EchoLLM):
        extra = "coqui"
        requires = ("no_such_package_for_this_test",)

    monkeypatch.setattr(registry, "adapter_names", lambda: ["needs-a-package"])
    monkeypatch.setattr(registry, "load_adapter", lambda name: NeedsAPackage)
    result = runner.invoke(app, ["adapters"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "pip install 'voice-cascade[coqui]'" in result.output
    assert "no_such_package_for_this_test" in result.output
