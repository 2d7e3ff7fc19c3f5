"""Coqui TTS (``coqui-tts``, the maintained fork of ``TTS``): any Coqui model, CPU or GPU.

A model is a directory with ``config.json`` and a checkpoint (what Coqui's
trainer and model zoo write), or explicit ``config`` and ``checkpoint`` paths.
Coqui's own ``Synthesizer`` loads it (model class from the config, checkpoint,
vocoder, device) once per process; every conversation shares it. Synthesis runs
sentence by sentence (Coqui's splitter) in a worker thread, one sentence at a
time per model (conversations wait their turn on the event loop, not in a worker
thread), so a barge-in stops it at the next sentence.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

from cascade.adapters.torch_model import TurnTakingModel, torch_device
from cascade.audio import to_pcm16
from cascade.errors import ConfigError, MissingDependency
from cascade.frames import PCM
from cascade.registry import Capabilities, missing_file
from cascade.stages.tts import TTSOptions, TTSStage

NAME = "coqui-tts"
CHECKPOINT_NAMES = ("model.pth", "model_file.pth", "model_file.pth.tar", "checkpoint.pth",
                    "best_model.pth")
"""Checkpoint file names looked for in a model directory, in this order."""
DIRECTORY_MODELS = ("xtts", "tortoise", "bark")
"""Models whose ``load_checkpoint`` reads their whole directory, not one file."""
RUNTIME_HINT = "built for your torch, which coqui-tts checks at import: see docs/vendors.md"


class CoquiOptions(TTSOptions):
    model: str | None = Field(None, description="Coqui model directory (config.json + checkpoint)")
    config: str | None = Field(None, description="config.json (default: in model, or beside "
                               "checkpoint)")
    checkpoint: str | None = Field(None, description="checkpoint file (default: found in model)")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="auto: cuda when present")
    speaker: str | None = Field(None, description="speaker name, for multi-speaker models")
    language: str | None = Field(None, description="language name, for multilingual models")
    threads: int = Field(2, ge=1, description="CPU threads for PyTorch")


@dataclass(frozen=True)
class ModelFiles:
    """Where a model's config and checkpoint are (a directory for DIRECTORY_MODELS)."""

    config: Path
    checkpoint: Path


def _fail(message: str) -> ConfigError:
    return ConfigError(f"adapter '{NAME}': {message}")


def _config_model(config: Path) -> str:
    """The ``model`` named in a Coqui config.json; a ConfigError if it is not one."""
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(f"{config} is not a readable Coqui config.json ({exc}); point option "
                    "'config' (or 'model') at the config.json that came with the checkpoint"
                    ) from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), str):
        raise _fail(f"{config} names no 'model' (vits, xtts, ...), so it is not a Coqui "
                    "config.json; point option 'config' (or 'model') at the model's own")
    return str(data["model"]).lower()


def _find_checkpoint(directory: Path) -> Path:
    for name in CHECKPOINT_NAMES:
        if (directory / name).is_file():
            return directory / name
    found = sorted(p for p in directory.iterdir() if p.suffix in (".pth", ".pt", ".tar"))
    if len(found) == 1:
        return found[0]
    if found:
        raise _fail(f"{directory} holds several checkpoints ({', '.join(p.name for p in found)}); "
                    "set option 'checkpoint' to the one to load")
    raise _fail(f"no checkpoint in {directory} (looked for {', '.join(CHECKPOINT_NAMES)} or one "
                "*.pth); copy the model's checkpoint there, or set option 'checkpoint'")


def model_files(options: CoquiOptions) -> ModelFiles:
    """The config and checkpoint to load, checked to exist; a ConfigError naming the fix."""
    if options.checkpoint:
        checkpoint = Path(options.checkpoint)
        if not checkpoint.exists():
            raise _fail(f"option 'checkpoint' is {checkpoint}, which does not exist; point it "
                        "at the model's checkpoint (.pth)")
        base = checkpoint if checkpoint.is_dir() else checkpoint.parent
    elif options.model:
        base = Path(options.model)
        if not base.is_dir():
            state = "is a file" if base.exists() else "does not exist"
            raise _fail(f"option 'model' is {base}, which {state}; point it at a Coqui model "
                        "directory (config.json and a checkpoint), or set 'checkpoint' and "
                        "'config' to the files")
        checkpoint = base
    else:
        raise _fail("no model: set option 'model' to a Coqui model directory (config.json and "
                    "a checkpoint), or 'checkpoint' and 'config' to the files")
    config = Path(options.config) if options.config else base / "config.json"
    if not config.is_file():
        option = "config" if options.config else "model" if options.model else "checkpoint"
        raise _fail(f"no config {config} (from option '{option}'); set option 'config' to the "
                    "model's config.json")
    if checkpoint.is_dir() and _config_model(config) not in DIRECTORY_MODELS:
        checkpoint = _find_checkpoint(checkpoint)
    return ModelFiles(config, checkpoint)


def _missing_files(options: CoquiOptions) -> list[str]:
    """For ``missing()``: the model files that are not there (details come at load)."""
    if options.checkpoint:
        beside = str(Path(options.checkpoint).parent / "config.json")
        return (missing_file(options.checkpoint, "the Coqui checkpoint")
                + missing_file(options.config or beside, "the model's config.json"))
    if options.model:
        gaps = missing_file(options.model, "a Coqui model directory")
        config = options.config or str(Path(options.model) / "config.json")
        return gaps or missing_file(config, "the model's config.json")
    return ["a Coqui model (option 'model': a directory with config.json and a checkpoint)"]


def _missing_runtime() -> list[str]:
    """What coqui-tts checks at import besides itself: torchaudio, and torchcodec when
    torch is 2.9 or newer (neither comes with coqui-tts, nor with the [coqui] extra)."""
    gaps = []
    if importlib.util.find_spec("torchaudio") is None:
        gaps.append("torchaudio")
    try:
        release = importlib.metadata.version("torch").split("+")[0].split(".")
        new_torch = (int(release[0]), int(release[1])) >= (2, 9)
    except (importlib.metadata.PackageNotFoundError, ValueError, IndexError):
        new_torch = False
    if new_torch and importlib.util.find_spec("torchcodec") is None:
        gaps.append("torchcodec")
    return [f"{' and '.join(gaps)} ({RUNTIME_HINT})"] if gaps else []


@dataclass
class SharedModel(TurnTakingModel):
    """A loaded Coqui synthesizer, which its users take turns on."""

    synthesizer: Any
    rate: int
    padding: int
    """Zeros Coqui appends after each sentence (removed: the pipeline paces replies)."""
    length_scale: float | None
    """The model's own duration scale, for models that speak slower or faster through it."""
    takes_speed: bool
    """The model's ``inference`` has a ``speed`` argument (XTTS)."""

    @property
    def model(self) -> Any:
        return self.synthesizer.tts_model

    def speakers(self) -> list[str]:
        manager = getattr(self.model, "speaker_manager", None)
        names = list(getattr(manager, "speaker_names", None) or [])
        return names + [n for n in getattr(manager, "embedding_names", None) or []
                        if n not in names]

    def languages(self) -> list[str]:
        manager = getattr(self.model, "language_manager", None)
        return list(getattr(manager, "language_names", None) or [])

    def clones_voices(self) -> bool:
        manager = getattr(self.model, "speaker_manager", None)
        return getattr(manager, "encoder", None) is not None


def _brief(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, cut to ``limit`` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _import_synthesizer() -> Any:
    try:
        synthesizer = importlib.import_module("TTS.utils.synthesizer")
    except ImportError as exc:  # coqui-tts checks torchaudio/torchcodec at import
        raise MissingDependency(f"adapter '{NAME}'", f"torchaudio and torchcodec {RUNTIME_HINT} "
                                f"({_brief(exc)})", "coqui") from exc
    return synthesizer


@functools.cache  # unbounded: an evicted model would load again beside the first
def load_model(config: str, checkpoint: str, device: str, threads: int) -> SharedModel:
    """Load a model with Coqui's ``Synthesizer``; the same paths give the same model."""
    import torch

    module = _import_synthesizer()
    torch.set_num_threads(threads)
    try:
        synthesizer = module.Synthesizer(tts_checkpoint=checkpoint, tts_config_path=config,
                                         use_cuda=device == "cuda")
    except Exception as exc:  # unreadable files, or a phonemizer the model needs is missing
        raise _fail(f"Coqui could not load checkpoint {checkpoint} with config {config} "
                    f"({type(exc).__name__}: {_brief(exc)}); check that both files are complete "
                    "and come from the same model, or install what Coqui names") from exc
    model = synthesizer.tts_model
    scale = getattr(model, "length_scale", None)
    return SharedModel(
        synthesizer=synthesizer,
        rate=int(synthesizer.output_sample_rate),
        padding=int(getattr(module, "PAD_SILENCE_SAMPLES", 0)),
        length_scale=float(scale) if isinstance(scale, (int, float)) else None,
        takes_speed="speed" in inspect.signature(model.inference).parameters,
    )


def _listed(names: list[str]) -> str:
    return ", ".join(names[:12]) + (f" (and {len(names) - 12} more)" if len(names) > 12 else "")


def check_voice(shared: SharedModel, options: CoquiOptions) -> None:
    """Refuse, naming the choices, a speaker, language or speed the model cannot use."""
    speakers = shared.speakers()
    where = f"the model ({options.model or options.checkpoint})"
    if options.speaker is None and len(speakers) > 1:
        raise _fail(f"{where} has {len(speakers)} speakers; set option 'speaker' to one of: "
                    f"{_listed(speakers)}")
    if options.speaker is not None and options.speaker not in speakers:
        if not speakers and getattr(shared.model, "speaker_manager", None) is None:
            raise _fail(f"{where} has a single voice; remove option 'speaker' "
                        f"({options.speaker!r})")
        if speakers and not shared.clones_voices():
            raise _fail(f"speaker {options.speaker!r} is not in {where}; its speakers: "
                        f"{_listed(speakers)}")
    languages = shared.languages()
    if options.language is None and len(languages) > 1:
        raise _fail(f"{where} speaks {len(languages)} languages; set option 'language' to one "
                    f"of: {_listed(languages)}")
    if options.language is not None and languages and options.language not in languages:
        raise _fail(f"language {options.language!r} is not in {where}; its languages: "
                    f"{_listed(languages)}")
    if options.speed != 1.0 and shared.length_scale is None and not shared.takes_speed:
        raise _fail(f"{where} ({type(shared.model).__name__}) has no speaking-rate control; "
                    "remove option 'speed'")


def _without_padding(wav: npt.NDArray[np.float32], padding: int) -> npt.NDArray[np.float32]:
    """``wav`` less the trailing zeros Coqui appended (only if they are all there)."""
    if 0 < padding <= len(wav) and not wav[len(wav) - padding:].any():
        return wav[: len(wav) - padding]
    return wav


class CoquiTTS(TTSStage):
    """A Coqui TTS model, synthesised one sentence at a time."""

    Options = CoquiOptions
    extra = "coqui"
    requires = ("TTS", "torch")
    capabilities = Capabilities(streaming=True, languages=("*",), sample_rates=())

    @classmethod
    def missing(cls, options: BaseModel | None = None) -> list[str]:
        opts = options if isinstance(options, CoquiOptions) else CoquiOptions()
        return super().missing(options) + _missing_runtime() + _missing_files(opts)

    @classmethod
    def _load(cls, options: CoquiOptions) -> SharedModel:
        files = model_files(options)
        device = torch_device(options.device, f"adapter '{NAME}'")
        shared = load_model(str(files.config), str(files.checkpoint), device, options.threads)
        check_voice(shared, options)
        return shared

    @classmethod
    def preload(cls, options: BaseModel) -> None:
        assert isinstance(options, CoquiOptions)
        cls._load(options)

    def __init__(self, options: CoquiOptions) -> None:
        super().__init__(options)
        self.coqui = options
        self.shared = self._load(options)

    def sentences(self, text: str) -> list[str]:
        """``text`` cut into sentences by Coqui's splitter for the model's language."""
        with self.shared.lock:  # pysbd segmenters keep state between calls
            found = self.shared.synthesizer.split_into_sentences(text, self.coqui.language)
        return [s for s in (str(s).strip() for s in found) if s]

    def speak(self, sentence: str) -> PCM:
        """One sentence through Coqui's synthesizer, as PCM16 at the model's rate."""
        shared = self.shared
        extra: dict[str, Any] = {"speed": self.coqui.speed} if shared.takes_speed else {}
        with shared.lock:
            if shared.length_scale is not None:
                shared.model.length_scale = shared.length_scale / self.coqui.speed
            wav = shared.synthesizer.tts(sentence, speaker_name=self.coqui.speaker,
                                         language_name=self.coqui.language,
                                         split_sentences=False, **extra)
        samples = np.asarray(wav, dtype=np.float32).reshape(-1)
        return to_pcm16(_without_padding(samples, shared.padding))

    async def synthesize(self, text: str) -> AsyncIterator[tuple[PCM, int]]:
        clock, turn = self.ctx.clock, self.shared.turn()
        async with turn:
            sentences = await clock.run_blocking(self.sentences, text)
        for sentence in sentences:
            async with turn:  # one sentence a turn, so conversations interleave
                pcm = await clock.run_blocking(self.speak, sentence)
            if len(pcm):
                yield pcm, self.shared.rate
