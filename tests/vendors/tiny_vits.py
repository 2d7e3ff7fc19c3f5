"""A tiny Coqui VITS with random weights, saved as a model directory Coqui can load.

Built from a ``VitsConfig`` (a few thousand parameters outside the duration
predictor), with a character tokenizer so no phonemizer is needed. The weights
are random except the duration predictor's output layer, set so that every
token lasts ``FRAMES_PER_TOKEN`` frames: a sentence then lasts exactly
``tokens * FRAMES_PER_TOKEN * HOP`` samples, about 11 characters a second.
Sampling noise is off (``inference_noise_scale=0``, no stochastic duration
predictor), so the same text always gives the same samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

RATE = 22050
HOP = 256
FRAMES_PER_TOKEN = 4


def build_tiny_vits(directory: Path, speakers: Sequence[str] = (), seed: int = 0) -> Path:
    """Write ``config.json`` and ``model.pth`` into ``directory`` and return it."""
    import torch
    from TTS.config.shared_configs import BaseAudioConfig
    from TTS.tts.configs.shared_configs import CharactersConfig
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import Vits, VitsArgs

    args = VitsArgs(
        hidden_channels=16, hidden_channels_ffn_text_encoder=32, num_heads_text_encoder=2,
        num_layers_text_encoder=1, num_layers_posterior_encoder=1, kernel_size_posterior_encoder=3,
        num_layers_flow=1, kernel_size_flow=3, resblock_kernel_sizes_decoder=[3],
        resblock_dilation_sizes_decoder=[[1, 3, 5]], upsample_initial_channel_decoder=16,
        init_discriminator=False, use_sdp=False, inference_noise_scale=0.0,
        use_speaker_embedding=bool(speakers), speaker_embedding_channels=8)
    characters = CharactersConfig(
        characters_class="TTS.tts.models.vits.VitsCharacters", pad="<PAD>", eos="<EOS>",
        bos="<BOS>", blank="<BLNK>", characters="abcdefghijklmnopqrstuvwxyz",
        punctuations="!'(),-.:;? ", is_unique=True, is_sorted=True)
    config = VitsConfig(
        model_args=args, use_phonemes=False, text_cleaner="basic_cleaners",
        characters=characters, speakers=list(speakers) or None,
        audio=BaseAudioConfig(sample_rate=RATE, hop_length=HOP, do_trim_silence=False))
    torch.manual_seed(seed)
    model = Vits(config)
    with torch.no_grad():
        model.duration_predictor.proj.weight.zero_()
        model.duration_predictor.proj.bias.fill_(math.log(FRAMES_PER_TOKEN))
    directory.mkdir(parents=True, exist_ok=True)
    config.save_json(str(directory / "config.json"))
    torch.save({"model": model.state_dict()}, directory / "model.pth")
    return directory
