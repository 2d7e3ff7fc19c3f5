"""coqui-tts with a tiny random-weight VITS built from a config (no download): Coqui's
own loader and synthesizer run, the pipeline gets the audio at its own rate, a
barge-in stops synthesis at the next sentence, and bad model files are named."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cascade.adapters.coqui import CoquiTTS
from cascade.audio import resample, to_pcm16
from cascade.clock import RealClock, VirtualClock
from cascade.config import parse_pipeline
from cascade.conversation import Pipeline
from cascade.errors import ConfigError, MissingDependency
from cascade.frames import PCM, AgentAudio, Interrupt, LLMText
from tests.adapters.harness import CONVERSATION, Collector, Run, build, drive
from tests.vendors.executor import run_leaving_executor_free
from tests.vendors.tiny_vits import FRAMES_PER_TOKEN, HOP, RATE, build_tiny_vits


def _coqui_problem() -> str | None:
    if importlib.util.find_spec("TTS") is None:
        return "needs the [coqui] extra (coqui-tts)"
    try:
        import TTS  # noqa: F401  (checks that torchaudio and torchcodec are installed)
    except ImportError:
        return "coqui-tts is installed but lacks torchaudio/torchcodec: scripts/install_coqui.sh"
    return None


PROBLEM = _coqui_problem()
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=str(PROBLEM))

TWO_SENTENCES = "The weather is lovely today. Let us walk to the park and feed the ducks."


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vits(tmp_path_factory.mktemp("vits"))


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-speaker model."""
    return build_tiny_vits(tmp_path_factory.mktemp("vits2"), speakers=("ada", "bob"), seed=1)


def coqui(model: Path, **options: Any) -> CoquiTTS:
    """The adapter as a pipeline file names it, its options validated by the registry."""
    config = parse_pipeline({"stages": {"tts": {"adapter": "coqui-tts", "options": {
        "model": str(model), "device": "cpu", "threads": 1, **options}}}})
    stage = Pipeline(config).build_stages()["tts"]
    assert isinstance(stage, CoquiTTS)
    return stage


def expected_samples(stage: CoquiTTS, sentence: str) -> int:
    """What the tiny model says for a sentence: FRAMES_PER_TOKEN frames a token."""
    tokens = stage.shared.model.tokenizer.text_to_ids(sentence)
    return len(tokens) * FRAMES_PER_TOKEN * HOP


def clause(text: str, turn: int = 1, last: bool = True) -> LLMText:
    return LLMText(conversation=CONVERSATION, turn=turn, time=0.0, text=text, last=last)


def agent_audio(run: Run, turn: int | None = None) -> list[AgentAudio]:
    return [f for f in run.collector.of(AgentAudio)
            if isinstance(f, AgentAudio) and (turn is None or f.turn == turn)]


class Frames:
    """An audio sink that keeps every agent frame played."""

    def __init__(self) -> None:
        self.frames: list[AgentAudio] = []

    def play(self, frame: AgentAudio, at: float) -> None:
        self.frames.append(frame)

    def clear(self, at: float) -> None:
        pass


def test_a_pipeline_file_loads_the_model_and_the_reply_plays_at_the_pipeline_rate(
        voice: Path) -> None:
    document = {"sample_rate": 24000, "stages": {"tts": {"adapter": "coqui-tts", "options": {
        "model": str(voice), "device": "cpu", "threads": 1}}}}
    pipeline = Pipeline(parse_pipeline(document))
    pipeline.preload()
    clock = VirtualClock()
    sink = Frames()

    async def call() -> CoquiTTS:
        conversation = pipeline.conversation(clock, sink=sink)
        await conversation.start()
        try:
            await conversation.send(clause(TWO_SENTENCES))
            await conversation.end_input()
            await conversation.wait_finished()
        finally:
            await conversation.stop()
        stage = conversation.graph.stages["tts"]
        assert isinstance(stage, CoquiTTS)
        return stage

    stage = clock.run(call())
    frames = sink.frames
    assert {f.sample_rate for f in frames} == {24000}
    assert all(len(f.pcm) == 480 for f in frames[:-1]) and frames[-1].reply_end
    audio = np.concatenate([f.pcm for f in frames])
    sentences = stage.sentences(TWO_SENTENCES)
    spoken = sum(expected_samples(stage, s) for s in sentences)
    assert abs(len(audio) - spoken * 24000 / RATE) <= 2  # soxr: one sample per chunk at most
    assert 2.5 <= len(audio) / 24000 <= 10.0  # 72 characters, about 11 a second
    # What played is the model's audio for each sentence, resampled by soxr.
    assert np.array_equal(audio, np.concatenate(
        [resample(stage.speak(s), RATE, 24000) for s in sentences]))
    assert "torchcodec" not in sys.modules  # nothing on this path needs audio decoding


def test_the_audio_is_coquis_own_synthesis_and_is_deterministic(voice: Path) -> None:
    from TTS.utils.synthesizer import Synthesizer

    stage = coqui(voice)
    sentence = "Let us walk to the park."
    pcm = stage.speak(sentence)
    reference = Synthesizer(tts_checkpoint=str(voice / "model.pth"),
                            tts_config_path=str(voice / "config.json"))
    theirs = np.asarray(reference.tts(sentence, split_sentences=False), np.float32)
    # Coqui pads each sentence with silence; the adapter leaves pauses to the pipeline.
    assert len(pcm) == expected_samples(stage, sentence) == len(theirs) - 10000
    assert np.array_equal(pcm, to_pcm16(theirs[: len(pcm)]))
    assert np.array_equal(stage.speak(sentence), pcm)
    assert stage.shared.rate == RATE and pcm.dtype == np.int16
    # Random weights say no words, but the signal moves (not a constant, not a few LSBs
    # of noise) and is not clipped.
    assert np.std(pcm) > 1000 and np.abs(pcm).max() < 32767


def test_one_chunk_per_sentence_at_the_models_rate(voice: Path) -> None:
    stage = coqui(voice)
    clock = VirtualClock()
    build(clock, [("tts", stage)], Collector(AgentAudio))

    async def chunks() -> list[tuple[PCM, int]]:
        return [chunk async for chunk in stage.synthesize(TWO_SENTENCES)]

    found = clock.run(chunks())
    sentences = ["The weather is lovely today.", "Let us walk to the park and feed the ducks."]
    assert stage.sentences(TWO_SENTENCES) == sentences
    assert [(len(pcm), rate) for pcm, rate in found] == [
        (expected_samples(stage, s), RATE) for s in sentences]


def test_speed_changes_the_duration_per_conversation(voice: Path) -> None:
    fast, normal = coqui(voice, speed=2.0), coqui(voice)
    assert fast.shared is normal.shared  # one model in the process
    sentence = "Let us walk to the park."
    assert len(fast.speak(sentence)) == expected_samples(fast, sentence) // 2
    assert len(normal.speak(sentence)) == expected_samples(normal, sentence)


def test_barge_in_stops_synthesis_at_the_next_sentence(voice: Path) -> None:
    stage = coqui(voice)
    sentences = [f"This is part {letter} of a long reply." for letter in "abcdefghijklmnopqrst"]
    started: list[int] = []  # one per sentence the model starts on
    hook = stage.shared.model.text_encoder.register_forward_hook(
        lambda *_: started.append(1))
    clock = RealClock()
    run = build(clock, [("tts", stage)], Collector(AgentAudio))
    counts: dict[str, int] = {}

    async def feed(run: Run) -> None:
        await run.graph.send(clause(" ".join(sentences)))
        while not agent_audio(run):
            await asyncio.sleep(0.002)
        counts["cut"] = len(started)
        await run.graph.broadcast(Interrupt(conversation=CONVERSATION, turn=1,
                                            time=clock.now(), reason="barge-in"))
        await asyncio.sleep(0.3)
        counts["later"] = len(started)
        await run.graph.send(clause("Go on.", turn=2))
        while not any(f.reply_end for f in agent_audio(run, 2)):
            await asyncio.sleep(0.005)

    try:
        clock.run(drive(run, feed, deadline=30))
    finally:
        hook.remove()
    assert counts["later"] - counts["cut"] <= 1, counts  # at most the one in flight
    assert counts["cut"] < len(sentences) / 2, counts
    first = agent_audio(run, 1)
    assert first and not any(f.reply_end for f in first)
    full = sum(expected_samples(stage, s) for s in sentences) * 16000 / RATE
    assert len(np.concatenate([f.pcm for f in first])) < full / 2
    second = np.concatenate([f.pcm for f in agent_audio(run, 2)])
    assert abs(len(second) - expected_samples(stage, "Go on.") * 16000 / RATE) <= 1


def test_each_model_loads_once_however_many_are_loaded(voice: Path, tmp_path: Path) -> None:
    names = [tmp_path / f"copy{i}" for i in range(6)]
    for name in names:
        name.symlink_to(voice, target_is_directory=True)
    first = coqui(names[0]).shared
    others = [coqui(name).shared for name in names[1:]]
    assert len({id(s) for s in [first, *others]}) == 6
    assert coqui(names[0]).shared is first


def test_conversations_waiting_for_the_model_leave_the_executor_free(voice: Path) -> None:
    stages = [coqui(voice) for _ in range(3)]  # three conversations on one model
    entered, release = threading.Event(), threading.Event()

    def hold(*_: Any) -> None:  # runs inside the synthesizer, under the model's lock
        entered.set()
        release.wait(30)

    hook = stages[0].shared.model.text_encoder.register_forward_hook(hold)
    clock = RealClock()
    for stage in stages:
        build(clock, [("tts", stage)], Collector(AgentAudio))

    async def speak(stage: CoquiTTS) -> int:
        return len([chunk async for chunk in stage.synthesize("Go on.")])

    try:
        calls = [speak(stage) for stage in stages]
        assert run_leaving_executor_free(clock, calls, entered, release) == [1, 1, 1]
    finally:
        hook.remove()
        release.set()


def test_speakers_of_a_multi_speaker_model(voices: Path, voice: Path) -> None:
    ada, bob = coqui(voices, speaker="ada"), coqui(voices, speaker="bob")
    sentence = "Let us walk to the park."
    assert len(ada.speak(sentence)) == len(bob.speak(sentence))
    assert not np.array_equal(ada.speak(sentence), bob.speak(sentence))
    with pytest.raises(ConfigError, match=r"2 speakers; set option 'speaker' to one of: ada, bob"):
        coqui(voices)
    with pytest.raises(ConfigError, match=r"speaker 'eve' is not in .*its speakers: ada, bob"):
        coqui(voices, speaker="eve")
    with pytest.raises(ConfigError, match=r"has a single voice; remove option 'speaker'"):
        coqui(voice, speaker="ada")
    with pytest.raises(ConfigError, match=r"language 'fr' is not in .*its languages: en"):
        coqui(voice, language="fr")


def test_a_missing_model_directory_is_named(tmp_path: Path) -> None:
    absent = tmp_path / "no-such-model"
    config = parse_pipeline({"stages": {"tts": {"adapter": "coqui-tts",
                                                "options": {"model": str(absent)}}}})
    with pytest.raises(MissingDependency, match=f"{absent} \\(which does not exist\\)"):
        Pipeline(config).preload()
    with pytest.raises(ConfigError, match=f"option 'model' is {absent}, which does not exist"):
        CoquiTTS(CoquiTTS.Options(model=str(absent)))
    with pytest.raises(ConfigError, match="no model: set option 'model'"):
        CoquiTTS(CoquiTTS.Options())


def test_a_model_directory_without_a_checkpoint_is_named(voice: Path, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_bytes((voice / "config.json").read_bytes())
    with pytest.raises(ConfigError, match=f"no checkpoint in {tmp_path} .*set option 'checkpoint'"):
        coqui(tmp_path)
    (tmp_path / "config.json").unlink()
    (tmp_path / "model.pth").write_bytes((voice / "model.pth").read_bytes())
    with pytest.raises(ConfigError, match=f"no config {tmp_path / 'config.json'}"):
        coqui(tmp_path)


@pytest.mark.parametrize("broken", ["config.json", "model.pth"])
def test_a_garbled_model_file_is_named(voice: Path, tmp_path: Path, broken: str) -> None:
    for name in ("config.json", "model.pth"):
        (tmp_path / name).write_bytes((voice / name).read_bytes())
    (tmp_path / broken).write_bytes((tmp_path / broken).read_bytes()[:200])  # truncated
    with pytest.raises(ConfigError, match=str(tmp_path / broken)):
        coqui(tmp_path)


def test_a_checkpoint_of_another_model_is_refused(voice: Path, voices: Path) -> None:
    with pytest.raises(ConfigError, match=r"could not load checkpoint .*same model"):
        coqui(voice, checkpoint=str(voices / "model.pth"), config=str(voice / "config.json"))
