"""Caller tracks: placement of events, SNR as requested, the same bytes every time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cascade.evaluation.audio_build import build_track, make_noise, speech_power
from cascade.evaluation.scenarios import Scenario
from tests.evaluation.harness import suite, tone_voice


def scenario(**fields: object) -> Scenario:
    base: dict[str, object] = {"id": "x", "events": [
        {"say": "one two three four"}, {"say": "five six", "after": 2.0},
        {"kind": "barge_in", "say": "seven eight nine", "after": 1.25}]}
    return Scenario.model_validate({**base, **fields})


@pytest.mark.parametrize("kind", ["white", "pink", "hum"])
@pytest.mark.parametrize("snr", [0.0, 5.0, 10.0, 20.0])
def test_measured_snr_equals_the_requested_one(tmp_path: Path, kind: str, snr: float) -> None:
    track = build_track(scenario(noise={"type": kind, "snr_db": snr}), suite(),
                        tone_voice(tmp_path), seed=1)
    noise = track.pcm.astype(np.float64) - track.clean
    measured = 10 * np.log10(speech_power(track.clean, track.speech_pieces(), track.rate)
                             / np.mean(noise**2))
    assert abs(measured - snr) < 0.5, measured


def test_events_sit_where_the_suite_says(tmp_path: Path) -> None:
    track = build_track(scenario(lead_in=0.7, tail=3.0), suite(), tone_voice(tmp_path), 0)
    first, second, third = track.events
    assert first.start == pytest.approx(0.7)
    assert second.start == pytest.approx(first.end + 2.0)
    assert third.start == pytest.approx(second.end + 1.25)
    assert track.seconds == pytest.approx(third.end + 3.0, abs=1 / track.rate)
    for placed in track.events:  # sound where the event is, silence around it
        lo, hi = (round(t * track.rate) for t in (placed.start, placed.end))
        assert np.abs(track.pcm[lo:hi]).max() > 1000
    gap = track.pcm[round(first.end * track.rate) + 1: round(second.start * track.rate) - 1]
    assert np.abs(gap).max() == 0


def test_a_mid_sentence_pause_splits_the_turn_into_pieces(tmp_path: Path) -> None:
    s = Scenario.model_validate({"id": "p", "events": [{"say": "my order is [1.5s] four two"}]})
    track = build_track(s, suite(), tone_voice(tmp_path), 0)
    [placed] = track.events
    assert placed.event.text == "my order is four two"
    (a, b), (c, d) = placed.pieces
    assert c - b == pytest.approx(1.5) and placed.start == a and placed.end == d


def test_the_same_inputs_give_the_same_bytes_and_the_seed_only_moves_the_noise(
        tmp_path: Path) -> None:
    noisy = scenario(noise={"type": "pink", "snr_db": 10.0}, channel="telephone")
    fresh = build_track(noisy, suite(), tone_voice(tmp_path / "one"), seed=3)
    cached_voice = tone_voice(tmp_path / "one")
    cached = build_track(noisy, suite(), cached_voice, seed=3)
    assert cached_voice.synthesised == 0  # every line came from the disk cache
    assert cached.pcm.tobytes() == fresh.pcm.tobytes() and cached.sha256 == fresh.sha256
    reseeded = build_track(noisy, suite(), cached_voice, seed=4)
    assert reseeded.sha256 != fresh.sha256
    assert np.array_equal(reseeded.clean, fresh.clean)


def test_noise_at_a_fixed_level_needs_no_speech(tmp_path: Path) -> None:
    quiet = Scenario.model_validate({"id": "q", "tail": 2.0,
                                     "noise": {"type": "white", "level_dbfs": -40.0}})
    track = build_track(quiet, suite(), tone_voice(tmp_path), 0)
    level = 20 * np.log10(np.sqrt(np.mean(track.pcm.astype(np.float64) ** 2)) / 32768)
    assert abs(level + 40.0) < 0.5


def test_noise_kinds_have_unit_rms_and_pink_leans_low() -> None:
    rng = np.random.default_rng(0)
    for kind in ("white", "pink", "hum"):
        noise = make_noise(kind, 16000, 16000, rng)
        assert abs(np.sqrt(np.mean(noise**2)) - 1.0) < 1e-9
    pink = np.abs(np.fft.rfft(make_noise("pink", 16000, 16000, rng))) ** 2
    assert pink[50:500].mean() > 10 * pink[5000:7000].mean()
