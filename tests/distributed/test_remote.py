"""Remote stages through a real Mosquitto: same results as in-process, failover, restarts."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from cascade import MemoryTrace, Pipeline, RealClock, load_pipeline
from cascade.conversation import Conversation
from cascade.distributed.remote import NoWorker, RemoteStage
from cascade.frames import PCM, Frame, LLMText
from tests.conftest import babble, needs_models, run_virtual, script, silence, wer
from tests.distributed.conftest import Broker, WorkerProcess, pipeline_file, start_workers

SCRIPT = ["hello there", "what time is it"]
TWO_TURNS = script(silence(0.3), babble(0.8), silence(1.2), babble(0.8, seed=1), silence(1.6))
ONE_TURN = script(silence(0.3), babble(0.8), silence(2.5))


def stages(remote: dict[str, str], **options: dict[str, object]) -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {
        "vad": {"adapter": "energy-vad"},
        "asr": {"adapter": "scripted-asr", "options": {"script": SCRIPT}},
        "turn": {"adapter": "turn"},
        "llm": {"adapter": "echo-llm"},
        "tts": {"adapter": "tone-tts", "options": {"seconds_per_word": 0.1}},
    }
    for name, extra in options.items():
        found[name]["options"] = {**found[name].get("options", {}), **extra}  # type: ignore[dict-item]
    for name, url in remote.items():
        found[name]["remote"] = url
    return found


def texts(trace: MemoryTrace, name: str) -> list[str]:
    return [str(s.attrs.get("text")) for s in trace.named(name)]


async def talk(pipeline: Pipeline, audio: PCM, conversation_id: str = "call",
               during: object = None) -> tuple[MemoryTrace, Conversation]:
    trace = MemoryTrace()
    conversation = pipeline.conversation(RealClock(), traces=[trace],
                                         conversation_id=conversation_id)
    await conversation.start()
    try:
        await conversation.play_recording(audio)
        await asyncio.wait_for(conversation.wait_finished(), 30)
    finally:
        await conversation.stop()
    return trace, conversation


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> MemoryTrace:
    """The two-turn conversation with every stage local, on the virtual clock."""
    path = pipeline_file(tmp_path_factory.mktemp("local"), stages({}))
    return run_virtual(Pipeline(load_pipeline(path)), TWO_TURNS)


async def test_remote_asr_and_tts_give_the_in_process_results(
        broker: Broker, workers: list[WorkerProcess], tmp_path: Path,
        in_process: MemoryTrace) -> None:
    path = pipeline_file(tmp_path, stages({"asr": broker.url, "tts": broker.url}))
    start_workers(workers, path, broker.url, ("asr", "wa"), ("tts", "wt"))
    trace, _ = await talk(Pipeline(load_pipeline(path)), TWO_TURNS)
    expected = in_process
    for name in ("asr", "end_of_turn", "llm"):
        assert texts(trace, name) == texts(expected, name), name
    assert texts(trace, "asr") == SCRIPT
    # the remote stages' spans are in the local trace, on the local clock, tagged
    assert {s.attrs["worker"] for s in trace.named("asr")} == {"wa"}
    assert {s.attrs["worker"] for s in trace.named("tts")} == {"wt"}
    asr = trace.named("asr")[0]
    speech = trace.named("user_speech")[0]
    assert speech.end - 0.05 <= asr.start <= speech.end + 0.3
    assert trace.named("agent_speech"), "the remote TTS audio reached playout"
    assert not trace.named("error")


async def test_two_workers_share_conversations_and_each_sticks(
        broker: Broker, workers: list[WorkerProcess], tmp_path: Path) -> None:
    path = pipeline_file(tmp_path, stages({"asr": broker.url}))
    start_workers(workers, path, broker.url, ("asr", "w1"), ("asr", "w2"))
    pipeline = Pipeline(load_pipeline(path))
    results = await asyncio.gather(*(talk(pipeline, TWO_TURNS, f"call-{n}") for n in range(4)))
    used = set()
    for trace, conversation in results:
        assert texts(trace, "asr") == SCRIPT
        served = {s.attrs["worker"] for s in trace.named("asr")}
        assert len(served) == 1, "a conversation stays on one worker"
        stage = conversation.graph.stages["asr"]
        assert isinstance(stage, RemoteStage) and stage.workers == list(served)
        used |= served
    assert used == {"w1", "w2"}


def kill_when_reply_starts(conversation: Conversation, stage: str,
                           processes: list[WorkerProcess], killed: list[float]) -> None:
    """Kill the worker serving ``stage`` as soon as the first reply clause leaves the LLM."""
    remote = conversation.graph.stages[stage]
    assert isinstance(remote, RemoteStage)

    def observe(origin: str, frame: Frame) -> None:
        if killed or origin != "llm" or not isinstance(frame, LLMText):
            return
        for process in processes:
            if process.name == remote.worker:
                process.kill()
                killed.append(time.monotonic())

    conversation.graph.observers.append(observe)


async def test_worker_killed_mid_turn_is_replaced_and_the_turn_completes(
        broker: Broker, workers: list[WorkerProcess], tmp_path: Path) -> None:
    path = pipeline_file(tmp_path, stages({"tts": broker.url},
                                          tts={"first_byte_delay": 0.4}))
    processes = start_workers(workers, path, broker.url, ("tts", "t1"), ("tts", "t2"))
    pipeline = Pipeline(load_pipeline(path))
    trace = MemoryTrace()
    conversation = pipeline.conversation(RealClock(), traces=[trace], conversation_id="call")
    killed: list[float] = []
    await conversation.start()
    kill_when_reply_starts(conversation, "tts", processes, killed)
    try:
        await conversation.play_recording(script(silence(0.3), babble(0.8), silence(4.0)))
        await asyncio.wait_for(conversation.wait_finished(), 20)
    finally:
        await conversation.stop()
    assert killed, "the worker was killed mid-turn"
    stage = conversation.graph.stages["tts"]
    assert isinstance(stage, RemoteStage) and len(stage.workers) == 2
    reply = texts(trace, "llm")[0]
    assert texts(trace, "agent_speech") == [reply], "the whole reply was spoken"
    assert not trace.named("error")
    survivor = stage.workers[1]
    assert {s.attrs["worker"] for s in trace.named("tts")} == {survivor}


async def test_worker_killed_with_no_replacement_ends_the_turn_with_an_error(
        broker: Broker, workers: list[WorkerProcess], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RemoteStage, "failover_timeout", 1.0)
    path = pipeline_file(tmp_path, stages({"tts": broker.url},
                                          tts={"first_byte_delay": 0.4}))
    processes = start_workers(workers, path, broker.url, ("tts", "only"))
    trace = MemoryTrace()
    conversation = Pipeline(load_pipeline(path)).conversation(
        RealClock(), traces=[trace], conversation_id="call")
    killed: list[float] = []
    await conversation.start()
    kill_when_reply_starts(conversation, "tts", processes, killed)
    try:
        await conversation.play_recording(ONE_TURN)
        await asyncio.wait_for(conversation.wait_finished(), 10)
    finally:
        await conversation.stop()
    errors = trace.named("error")
    assert errors and errors[0].stage == "tts" and errors[0].turn == 1
    assert errors[0].attrs["remote"] is True
    assert errors[0].end - errors[0].start < 2.0  # the failover timeout, and a little
    assert time.monotonic() - killed[0] < 5.0


async def test_broker_restart_mid_conversation(
        broker: Broker, workers: list[WorkerProcess], tmp_path: Path,
        in_process: MemoryTrace, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "cascade.distributed")
    path = pipeline_file(tmp_path, stages({"asr": broker.url, "tts": broker.url}))
    start_workers(workers, path, broker.url, ("asr", "wa"), ("tts", "wt"))
    pipeline = Pipeline(load_pipeline(path))

    async def restart_during_second_utterance() -> None:
        await asyncio.sleep(2.5)
        await asyncio.to_thread(broker.restart, 0.3)

    restart = asyncio.create_task(restart_during_second_utterance())
    trace, _ = await talk(pipeline, TWO_TURNS)
    await restart
    assert texts(trace, "asr") == SCRIPT
    assert texts(trace, "llm") == texts(in_process, "llm")
    assert not trace.named("error")
    assert "reconnected to" in caplog.text
    assert "moving it to another worker" not in caplog.text, "no false failover"


async def test_no_worker_is_a_clear_error(broker: Broker, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RemoteStage, "failover_timeout", 0.5)
    path = pipeline_file(tmp_path, stages({"asr": broker.url}))
    conversation = Pipeline(load_pipeline(path)).conversation(RealClock())
    with pytest.raises(NoWorker, match="cascade worker --stage asr"):
        await conversation.start()
    await conversation.stop()


@needs_models
async def test_real_local_asr_on_a_worker_hears_what_it_hears_in_process(
        broker: Broker, workers: list[WorkerProcess], tmp_path: Path) -> None:
    speech = np.fromfile("/usr/share/pocketsphinx/test/data/goforward.raw", np.int16)
    audio = script(silence(0.3), speech, silence(1.5))
    local = {**stages({}, llm={"template": "Okay."}), "vad": {"adapter": "silero"},
             "asr": {"adapter": "faster-whisper", "options": {"partial_interval": 0}}}
    path = pipeline_file(tmp_path, {**local, "asr": {**local["asr"], "remote": broker.url}},
                         name="local-asr")
    worker = WorkerProcess(path, "asr", broker.url, "whisper")  # loads while we work
    workers.append(worker)
    expected = await asyncio.to_thread(run_virtual, Pipeline(load_pipeline(
        pipeline_file(tmp_path / "..", local, name="in-process"))), audio)
    worker.wait_ready()
    trace, _ = await talk(Pipeline(load_pipeline(path)), audio)
    heard = [t for t in texts(trace, "asr") if t]
    assert heard == [t for t in texts(expected, "asr") if t]
    assert wer("go forward ten meters", " ".join(heard)) <= 0.25
    assert {s.attrs["worker"] for s in trace.named("asr")} == {"whisper"}
