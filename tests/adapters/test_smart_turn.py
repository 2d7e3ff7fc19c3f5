"""Smart Turn v3.2 on real speech: a finished sentence scores high, the same sentence cut
mid-way scores low; the features match Whisper's; a missing model gives the install hint."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from cascade.adapters import smart_turn
from cascade.adapters.log_mel import log_mel
from cascade.adapters.smart_turn import SmartTurnModel, features, smart_turn_onnx
from cascade.errors import MissingDependency
from cascade.frames import PCM
from tests.adapters.harness import RATE, librivox, needs_testdata, silence
from tests.conftest import needs_models, piper_says

needs_smart_turn = pytest.mark.skipif(
    smart_turn_onnx() is None,
    reason="Smart Turn v3.2 ships in the pipecat-ai wheel: pip install --no-deps pipecat-ai",
)

COMPLETE_CLIP = "sense_and_sensibility_01_austen_64kb-0870"
"""'... how much there might be prudently in his power to do for them' (ends on a full stop)."""
CUT_AT = 4.25
"""Seconds into COMPLETE_CLIP inside 'how much', mid-sentence (4.10-4.40 s all score ~0.01)."""
VAD_STOP = 0.2
"""Silence after the last word when the model is asked: the VAD's stop delay."""


@pytest.fixture(scope="module")
def model() -> SmartTurnModel:
    return SmartTurnModel()


def asked_after_stop(pcm: PCM) -> PCM:
    return np.concatenate([pcm, silence(VAD_STOP)])


# --- features ---------------------------------------------------------------


@needs_models
@needs_testdata
def test_log_mel_matches_faster_whisper_on_real_speech() -> None:
    from faster_whisper.feature_extractor import FeatureExtractor

    audio = librivox(COMPLETE_CLIP).astype(np.float32) / 32768.0
    ours = log_mel(audio)
    # padding=0: faster-whisper otherwise appends 160 zeros and so one more frame.
    reference = FeatureExtractor()(audio, padding=0)
    assert ours.shape == reference.shape == (80, audio.size // 160)
    assert float(np.abs(ours - reference).max()) < 1e-3


def test_features_keep_the_last_8_s_and_pad_short_audio_at_the_start() -> None:
    rng = np.random.default_rng(0)
    speech = (rng.standard_normal(3 * RATE) * 3000).astype(np.int16)
    short = features(speech)
    assert short.shape == (1, 80, 800)
    assert short.dtype == np.float32
    left_padded = np.concatenate([np.zeros(5 * RATE, np.int16), speech])
    np.testing.assert_array_equal(short, features(left_padded))
    longer = np.concatenate([(rng.standard_normal(4 * RATE) * 3000).astype(np.int16),
                             left_padded])
    np.testing.assert_array_equal(short, features(longer))


# --- the model ----------------------------------------------------------------


@needs_smart_turn
@needs_models
def test_finished_question_scores_high_and_the_same_question_cut_scores_low(
    model: SmartTurnModel,
) -> None:
    # Piper samples its prosody, so these vary a little per call: over 30 draws the
    # complete question scored 0.87-0.99 and the cut one 0.007-0.014.
    complete = model.complete_probability(
        asked_after_stop(piper_says("Can you tell me the weather in Paris?")))
    cut = model.complete_probability(
        asked_after_stop(piper_says("Can you tell me the weather in")))
    assert complete >= 0.7, complete
    assert cut <= 0.2, cut
    assert cut <= complete - 0.5


@needs_smart_turn
@needs_testdata
def test_read_sentence_scores_high_at_its_end_and_low_mid_way(model: SmartTurnModel) -> None:
    audio = librivox(COMPLETE_CLIP)
    complete = model.complete_probability(asked_after_stop(audio))  # measured 0.99
    cut = model.complete_probability(asked_after_stop(audio[: int(CUT_AT * RATE)]))  # 0.01
    assert complete >= 0.8, complete
    assert cut <= 0.2, cut


@needs_smart_turn
@needs_testdata
def test_float_and_pcm16_audio_give_the_same_probability(model: SmartTurnModel) -> None:
    audio = librivox(COMPLETE_CLIP)
    as_float = audio.astype(np.float32) / 32768.0
    assert model.complete_probability(audio) == pytest.approx(
        model.complete_probability(as_float), abs=1e-6)


@needs_smart_turn
def test_the_session_is_loaded_once_per_process() -> None:
    assert SmartTurnModel().session is SmartTurnModel(smart_turn_onnx()).session


# --- missing model --------------------------------------------------------------


def test_without_pipecat_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(smart_turn, "package_dir", lambda name: None)
    assert smart_turn_onnx() is None
    assert any("pip install --no-deps pipecat-ai" in gap for gap in smart_turn.missing())
    with pytest.raises(MissingDependency, match="pipecat-ai, install with --no-deps"):
        SmartTurnModel()


def test_a_missing_model_file_is_named(tmp_path: Path) -> None:
    absent = tmp_path / "smart-turn.onnx"
    assert f"the Smart Turn model file {absent} (no such file)" in smart_turn.missing(absent)
    with pytest.raises(MissingDependency, match=re.escape(str(absent))):
        SmartTurnModel(absent)
