"""Running tracks on systems: identical input bytes, seeded order, errors kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from rich.console import Console

from cascade.evaluation.audio_build import build_track
from cascade.evaluation.runner import run_call, run_order, run_suite, warm_up_track
from cascade.evaluation.systems import load_system
from tests.evaluation.harness import FUSED, SCRIPTED, suite, tone_voice, write_yaml


def test_two_systems_are_fed_byte_identical_audio(tmp_path: Path) -> None:
    the_suite = suite()
    track = build_track(the_suite.scenarios[0], the_suite, tone_voice(tmp_path / "tts"), 0)
    systems = [load_system(f"a={write_yaml(tmp_path / 'a.yaml', SCRIPTED)}"),
               load_system(f"b={write_yaml(tmp_path / 'b.yaml', FUSED)}")]
    records = run_suite(systems, [track], fast=True, seed=0, out=tmp_path, save_audio=True,
                        console=Console(quiet=True))
    assert {r.input_sha256 for r in records} == {track.sha256}
    heard = []
    for record in records:
        assert record.error is None and record.audio is not None
        stereo, _ = sf.read(tmp_path / record.audio, dtype="int16")
        heard.append(stereo[:, 0])  # the caller's channel: what entered the graph
    assert np.array_equal(heard[0], heard[1])
    assert np.array_equal(heard[0][: len(track.pcm)], track.pcm)
    assert all((tmp_path / str(r.trace)).stat().st_size > 0 for r in records)


def test_the_order_is_shuffled_per_scenario_and_fixed_by_the_seed() -> None:
    names = ["a", "b", "c"]
    orders = {tuple(run_order(names, f"s{i}", seed=0)) for i in range(20)}
    assert len(orders) > 1
    # the same on every run: a fresh interpreter (new hash seed) gives the same orders
    script = ("from cascade.evaluation.runner import run_order; "
              "print([run_order(['a', 'b', 'c'], f's{i}', 0) for i in range(20)])")
    fresh = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert fresh.stdout.strip() == str([run_order(names, f"s{i}", 0) for i in range(20)])
    assert any(run_order(names, f"s{i}", 0) != run_order(names, f"s{i}", 1) for i in range(20))


def test_a_broken_system_is_recorded_not_raised(tmp_path: Path) -> None:
    the_suite = suite()
    track = build_track(the_suite.scenarios[0], the_suite, tone_voice(tmp_path / "tts"), 0)
    broken = {**FUSED, "stages": {**FUSED["stages"], "fused": {
        "adapter": "local-fused", "options": {"model": "nowhere.at.all:Model"}}}}
    system = load_system(f"x={write_yaml(tmp_path / 'x.yaml', broken)}")
    record = run_call(system, track, fast=True)
    assert record.error is not None and "nowhere.at.all" in record.error


def test_the_warm_up_is_the_first_caller_turn(tmp_path: Path) -> None:
    the_suite = suite()
    silence_first = [the_suite.scenarios[3], the_suite.scenarios[0]]
    tracks = [build_track(s, the_suite, tone_voice(tmp_path), 0) for s in silence_first]
    warm = warm_up_track(tracks)
    assert warm is not None and warm.scenario.id == "book"
    assert warm.seconds == pytest.approx(tracks[1].events[0].end + 4.0, abs=1e-3)
