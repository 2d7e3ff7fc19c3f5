"""transformers-whisper with a tiny random-init Whisper built from a config (no download):
the audio goes through the processor, the model and the decoder, and a transcript
comes out of the ASR stage."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None or importlib.util.find_spec("torch") is None,
    reason="needs the [transformers] extra (transformers, torch)")

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>",
            "<|translate|>", "<|notimestamps|>"]


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer Whisper with random weights and a 96-symbol byte-level vocabulary."""
    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    path = tmp_path_factory.mktemp("tiny-whisper")
    vocab = {c: i for i, c in enumerate([chr(c) for c in range(33, 127)] + ["\u0120"])}
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = WhisperTokenizer(str(path / "vocab.json"), str(path / "merges.txt"),
                                 additional_special_tokens=SPECIALS[1:], unk_token=SPECIALS[0],
                                 bos_token=SPECIALS[0], eos_token=SPECIALS[0],
                                 pad_token=SPECIALS[0])
    ids = tokenizer.convert_tokens_to_ids(SPECIALS)
    config = WhisperConfig(
        vocab_size=len(tokenizer), d_model=64, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
        decoder_ffn_dim=128, num_mel_bins=80, max_target_positions=64,
        decoder_start_token_id=ids[1], eos_token_id=ids[0], pad_token_id=ids[0],
        bos_token_id=ids[0])
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    generation = model.generation_config
    generation.decoder_start_token_id = ids[1]
    generation.forced_decoder_ids = None
    generation.no_timestamps_token_id = ids[5]
    generation.suppress_tokens = ids[1:]  # random weights: make it say *something*
    model.save_pretrained(path)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(path)
    return path


def test_recognizes_through_the_whole_model(tiny_whisper: Path) -> None:
    from cascade.adapters.transformers_whisper import (
        TransformersWhisperASR,
        TransformersWhisperOptions,
    )

    asr = TransformersWhisperASR(TransformersWhisperOptions(model=str(tiny_whisper),
                                                            max_new_tokens=6))
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    result = asr.recognize(audio)
    assert isinstance(result.text, str) and 1 <= len(result.text) <= 6 * 4
    assert result.avg_logprob <= 0.0
    assert asr.recognize(audio).text == result.text  # greedy: deterministic
