"""A telephone caller through a packet network: what arrives is the line, minus what the
network lost, on the line's own timeline; the same network loses the same packets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cascade.errors import ConfigError
from cascade.evaluation.audio_build import build_track
from cascade.evaluation.network import received
from cascade.evaluation.scenarios import Network, Scenario, parse_suite
from cascade.telephony import g711
from cascade.telephony.line import FRAME_SAMPLES as FRAME
from tests.evaluation.harness import suite, tone_voice


def line(seconds: float, seed: int = 1) -> bytes:
    """Speech-like μ-law whose every 20 ms frame differs (misplacement would show)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 8000)) / 8000
    voiced = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (210, 830, 1700))
    return g711.ulaw_encode((voiced * 4000 + rng.normal(0, 400, len(t))).astype(np.int16))


def frames_of(pcm: np.ndarray) -> list[np.ndarray]:
    return [pcm[i : i + FRAME] for i in range(0, len(pcm) - FRAME + 1, FRAME)]


def test_a_clean_network_or_jitter_within_the_buffer_changes_nothing() -> None:
    sent = line(3.0)
    clean = g711.ulaw_decode(sent)
    assert np.array_equal(received(sent, Network()), clean)  # no delay left in the track
    shaky = Network(jitter=0.05, reorder=0.2, duplicate=0.2, jitter_buffer=4, seed=3)
    assert np.array_equal(received(sent, shaky), clean)  # the buffer put it all right
    odd = sent[:12345]  # a last partial packet
    assert np.array_equal(received(odd, shaky), g711.ulaw_decode(odd))


def test_lost_packets_are_concealed_in_place_and_the_rest_arrives_untouched() -> None:
    sent = line(4.0)
    clean = frames_of(g711.ulaw_decode(sent))
    lossy = Network(loss=0.1, burst=0.3, seed=5)
    got = frames_of(received(sent, lossy))
    assert len(got) == len(clean)
    changed = [i for i, (g, c) in enumerate(zip(got, clean, strict=True))
               if not np.array_equal(g, c)]
    assert 10 <= len(changed) <= 40  # ~10 % (bursty) of 200 packets
    for i in changed:  # the previous frame at half level once, then silence
        assert np.array_equal(got[i], got[i - 1] // 2) or not got[i].any()
    assert np.array_equal(received(sent, lossy), received(sent, lossy))
    assert not np.array_equal(received(sent, Network(loss=0.1, burst=0.3, seed=6)),
                              received(sent, lossy))


def test_suppressed_silence_stays_silent_and_speech_resumes_on_time() -> None:
    speech, pause = line(1.0, seed=2), g711.ulaw_encode(np.zeros(16000, np.int16))
    sent = speech + pause + speech
    got = received(sent, Network(dtx=True))
    want = g711.ulaw_decode(sent)
    assert np.array_equal(got[:8000], want[:8000])
    assert np.array_equal(got[-8000:], want[-8000:])  # aligned after a 2 s gap
    pause = got[8000:24000].astype(np.int32)
    assert np.abs(pause).max() < 100 and pause.any()  # the one comfort-noise packet's hiss
    assert not want[8000:24000].any()  # (sent: digital silence, so the hiss shows DTX ran)


def test_a_scenario_hears_its_network_and_only_on_a_phone_line(tmp_path: Path) -> None:
    def scenario(**fields: object) -> Scenario:
        return Scenario.model_validate({"id": "n", "events": [{"say": "one two three"}],
                                        **fields})

    voice = tone_voice(tmp_path)
    phone = build_track(scenario(channel="telephone"), suite(), voice, seed=0)
    lossy = build_track(scenario(channel="telephone", network={"loss": 0.2, "seed": 1}),
                        suite(), voice, seed=0)
    assert len(lossy.pcm) == len(phone.pcm) and lossy.sha256 != phone.sha256
    with pytest.raises(ConfigError, match="channel: telephone"):
        parse_suite({"scenarios": [{"id": "n", "network": {"loss": 0.1},
                                    "events": [{"say": "hi"}]}]})
