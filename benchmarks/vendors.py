"""What each network adapter adds to the time to first token, audio byte or transcript.

Each adapter, driven as the pipeline drives it, is timed against the vendor's SDK
or a bare client calling the same local server, in interleaved runs. Everything
runs on 127.0.0.1, with the servers the vendor tests use
(``tests/vendors``), started in a child process so they do not share this
process's interpreter lock (``vendor_rig.py`` starts them and drives the adapters):

* ``openai-llm`` - ``python -m llama_cpp.server`` with the bundled SmolLM2;
  the same messages, ``max_tokens`` and greedy decoding on every side. Timed to
  the first non-blank token: for the adapter from sending ``EndOfTurn`` into its
  graph to the first token ``LLMStage`` saw (its ``llm`` span: start + ttft).
* ``openai-tts`` / ``openai-asr`` - the speech server (Piper, faster-whisper).
  TTS: to the first audio byte (adapter: ``LLMText`` sent -> first ``AgentAudio``
  frame out of the stage). ASR: to the transcript (adapter: ``SpeechStopped``
  sent, the segment already buffered -> final ``Transcript`` out of the stage).
* ``deepgram-asr`` - the websocket replay of a recorded ``/v1/listen`` exchange,
  timed to the final transcript. The adapter keeps one socket for the whole run and
  streams each segment as it is fed in (SpeechStopped -> Finalize -> final
  transcript); the bare client once as a live client does it (socket open, audio
  already sent: Finalize -> final transcript) and once with a socket per segment
  (connect, send the segment, Finalize), the exchange the adapter had before.
* ``elevenlabs-tts`` - the HTTP replay of a recorded stream, to the first audio byte.

Each round runs every client once, in an order rotated from round to round. The
overhead is the median over rounds of (adapter - direct client) within a round.

    python benchmarks/vendors.py                         # about 2 minutes
    python benchmarks/vendors.py --reps 5 --asr-reps 2   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import wave
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import numpy as np
from graph_overhead import machine, render
from harness import percentile
from vendor_rig import RATE, Driven, Probe, Timed, asr_turn, llm_turn, local_servers, tts_turn

from cascade.clock import RealClock
from cascade.frames import AgentAudio, LLMReply, Transcript

if TYPE_CHECKING:
    import httpx
    import openai
    from openai.types.chat import ChatCompletionMessageParam

ADAPTERS = ("openai-llm", "openai-tts", "openai-asr", "deepgram-asr", "elevenlabs-tts")
SERVER_OF = {"openai-llm": "llm", "openai-tts": "speech", "openai-asr": "speech",
             "deepgram-asr": "deepgram", "elevenlabs-tts": "elevenlabs"}
KEY_ENV = "CASCADE_BENCH_FAKE_KEY"
KEY = "bench-key-not-real-0123456789"
PROMPT = "What is the capital of France?"
SPOKEN = "Hello there."  # the text the ElevenLabs recording was made for
GOFORWARD = Path("/usr/share/pocketsphinx/test/data/goforward.raw")


# --- the direct side ------------------------------------------------------------


def wav_file(pcm: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(pcm.astype("<i2").tobytes())
    return buffer.getvalue()


def openai_clients(base: str) -> tuple[openai.AsyncOpenAI, httpx.AsyncClient]:
    """The official SDK's async client and a bare httpx one, both sending the key."""
    import httpx
    import openai

    return (openai.AsyncOpenAI(base_url=base, api_key=KEY, max_retries=0),
            httpx.AsyncClient(base_url=base + "/", timeout=30,
                              headers={"Authorization": f"Bearer {KEY}"}))


async def first_byte(clock: RealClock, start: float, stream: Any) -> float:
    """Seconds from ``start`` to the first non-empty chunk of a byte stream (read whole)."""
    first = None
    async for chunk in stream:
        if first is None and chunk:
            first = clock.now()
    if first is None:
        raise RuntimeError("no audio in the answer")
    return first - start


# --- the contests -----------------------------------------------------------------


async def interleave(clients: dict[str, Timed], reps: int, warmup: int
                     ) -> dict[str, list[float]]:
    """Every client once per round, the order rotated each round; warm-up rounds dropped."""
    names = list(clients)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(warmup + reps):
        k = round_ % len(names)
        for name in names[k:] + names[:k]:
            seconds = await asyncio.wait_for(clients[name](), 120)
            if round_ >= warmup:
                samples[name].append(seconds)
    return samples


async def openai_llm(urls: dict[str, str], clock: RealClock, args: argparse.Namespace
                     ) -> dict[str, list[float]]:
    from cascade.adapters.openai_llm import OpenAILLM, OpenAILLMOptions

    base = urls["llm"]
    options = OpenAILLMOptions(base_url=base, api_key_env=KEY_ENV, model="smollm2",
                               max_tokens=args.max_tokens, temperature=0.0)
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": options.system_prompt},
        {"role": "user", "content": PROMPT}]
    body = {"model": options.model, "messages": messages, "stream": True,
            "max_tokens": args.max_tokens, "temperature": 0.0}
    sdk, http = openai_clients(base)

    async def with_sdk() -> float:
        start, first = clock.now(), None
        stream = await sdk.chat.completions.create(
            model=options.model, messages=messages,
            stream=True, max_tokens=args.max_tokens, temperature=0.0)
        async for chunk in stream:
            if first is None and chunk.choices and (chunk.choices[0].delta.content or "").strip():
                first = clock.now()
        assert first is not None, "the SDK stream held no token"
        return first - start

    async def with_httpx() -> float:
        start, first = clock.now(), None
        async with http.stream("POST", "chat/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                data = line.removeprefix("data:").strip()
                if not line.startswith("data:") or data == "[DONE]":
                    continue
                delta = json.loads(data)["choices"][0]["delta"].get("content") or ""
                if first is None and delta.strip():
                    first = clock.now()
        assert first is not None, "the SSE stream held no token"
        return first - start

    probe = Probe((LLMReply,), lambda f: True)
    async with sdk, http, Driven(OpenAILLM(options), probe, clock) as run:
        return await interleave({"adapter": llm_turn(run, PROMPT), "openai SDK": with_sdk,
                                 "httpx SSE": with_httpx}, args.reps, args.warmup)


async def openai_tts(urls: dict[str, str], clock: RealClock, args: argparse.Namespace
                     ) -> dict[str, list[float]]:
    from cascade.adapters.openai_speech import OpenAITTS, OpenAITTSOptions

    base = urls["speech"]
    options = OpenAITTSOptions(base_url=base, api_key_env=KEY_ENV, model="piper")
    body = {"model": options.model, "input": SPOKEN, "voice": options.voice,
            "response_format": "pcm", "speed": options.speed}
    sdk, http = openai_clients(base)

    async def with_sdk() -> float:
        start = clock.now()
        async with sdk.audio.speech.with_streaming_response.create(
                model=options.model, voice=options.voice, input=SPOKEN,
                response_format="pcm", speed=options.speed) as response:
            return await first_byte(clock, start, response.iter_bytes())

    async def with_httpx() -> float:
        start = clock.now()
        async with http.stream("POST", "audio/speech", json=body) as response:
            response.raise_for_status()
            return await first_byte(clock, start, response.aiter_bytes())

    probe = Probe((AgentAudio,), lambda f: isinstance(f, AgentAudio) and f.reply_end)
    async with sdk, http, Driven(OpenAITTS(options), probe, clock) as run:
        return await interleave({"adapter": tts_turn(run, SPOKEN), "openai SDK": with_sdk,
                                 "httpx": with_httpx}, args.reps, args.warmup)


async def openai_asr(urls: dict[str, str], clock: RealClock, args: argparse.Namespace
                     ) -> dict[str, list[float]]:
    from cascade.adapters.openai_speech import OpenAIASR, OpenAIASROptions

    base = urls["speech"]
    options = OpenAIASROptions(base_url=base, api_key_env=KEY_ENV)
    pcm = speech()
    sdk, http = openai_clients(base)

    async def with_sdk() -> float:
        start = clock.now()
        answer = await sdk.audio.transcriptions.create(
            model=options.model, file=("speech.wav", wav_file(pcm), "audio/wav"),
            language="en", response_format="verbose_json",
            timestamp_granularities=["word", "segment"])
        assert answer.text.strip(), "the SDK got an empty transcript"
        return clock.now() - start

    async def with_httpx() -> float:
        start = clock.now()
        response = await http.post("audio/transcriptions", data={
            "model": options.model, "language": "en", "response_format": "verbose_json",
            "timestamp_granularities[]": ["word", "segment"]},
            files={"file": ("speech.wav", wav_file(pcm), "audio/wav")})
        response.raise_for_status()
        assert response.json()["text"].strip(), "httpx got an empty transcript"
        return clock.now() - start

    probe = Probe((Transcript,), lambda f: isinstance(f, Transcript) and f.final)
    async with sdk, http, Driven(OpenAIASR(options), probe, clock) as run:
        return await interleave({"adapter": asr_turn(run, pcm), "openai SDK": with_sdk,
                                 "httpx": with_httpx}, args.asr_reps, args.warmup)


async def deepgram_asr(urls: dict[str, str], clock: RealClock, args: argparse.Namespace
                       ) -> dict[str, list[float]]:
    from websockets.asyncio.client import ClientConnection, connect

    from cascade.adapters.deepgram import DeepgramASR, DeepgramOptions

    base = urls["deepgram"]
    options = DeepgramOptions(base_url=base, api_key_env=KEY_ENV)
    query = {"model": options.model, "encoding": "linear16", "sample_rate": RATE,
             "channels": 1, "smart_format": "true", "language": "en"}
    url = f"{base}/listen?{urlencode(query)}"
    pcm = speech()
    data = pcm.astype("<i2").tobytes()
    chunks = [data[i : i + 640] for i in range(0, len(data), 640)]  # 20 ms messages

    def socket() -> Any:
        return connect(url, additional_headers={"Authorization": f"Token {KEY}"},
                       max_size=2**22)

    async def final(ws: ClientConnection) -> None:
        await ws.send(json.dumps({"type": "Finalize"}))
        while True:
            message = json.loads(await ws.recv())
            if message.get("type") == "Results" and message.get("from_finalize"):
                return

    async def close(ws: ClientConnection) -> None:
        """CloseStream, then let the server close (it sends its Metadata first)."""
        await ws.send(json.dumps({"type": "CloseStream"}))
        async for _ in ws:
            pass

    async def per_segment() -> float:
        start = clock.now()
        async with socket() as ws:
            for chunk in chunks:
                await ws.send(chunk)
            await final(ws)
            seconds = clock.now() - start
            await close(ws)
        return seconds

    async def live() -> float:
        async with socket() as ws:
            for chunk in chunks:
                await ws.send(chunk)
            start = clock.now()
            await final(ws)
            seconds = clock.now() - start
            await close(ws)
        return seconds

    probe = Probe((Transcript,), lambda f: isinstance(f, Transcript) and f.final)
    async with Driven(DeepgramASR(options), probe, clock) as run:
        return await interleave({
            "adapter": asr_turn(run, pcm), "websockets, live (audio already sent)": live,
            "websockets, a socket per segment": per_segment}, args.reps, args.warmup)


async def elevenlabs_tts(urls: dict[str, str], clock: RealClock, args: argparse.Namespace
                         ) -> dict[str, list[float]]:
    import httpx

    from cascade.adapters.elevenlabs import ElevenLabsOptions, ElevenLabsTTS

    base = urls["elevenlabs"]
    options = ElevenLabsOptions(base_url=base, api_key_env=KEY_ENV)
    body = {"text": SPOKEN, "model_id": options.model_id, "voice_settings": {
        "stability": options.stability, "similarity_boost": options.similarity_boost,
        "speed": options.speed}}
    http = httpx.AsyncClient(base_url=base + "/", headers={"xi-api-key": KEY}, timeout=30)

    async def with_httpx() -> float:
        start = clock.now()
        async with http.stream("POST", f"text-to-speech/{options.voice_id}/stream",
                               params={"output_format": "pcm_16000"}, json=body) as response:
            response.raise_for_status()
            return await first_byte(clock, start, response.aiter_bytes())

    probe = Probe((AgentAudio,), lambda f: isinstance(f, AgentAudio) and f.reply_end)
    async with http, Driven(ElevenLabsTTS(options), probe, clock) as run:
        return await interleave({"adapter": tts_turn(run, SPOKEN), "httpx": with_httpx},
                                args.reps, args.warmup)


CONTESTS = {"openai-llm": openai_llm, "openai-tts": openai_tts, "openai-asr": openai_asr,
            "deepgram-asr": deepgram_asr, "elevenlabs-tts": elevenlabs_tts}


def speech() -> np.ndarray:
    """"go forward ten meters", PCM16 at 16 kHz (Debian's pocketsphinx-testdata)."""
    if not GOFORWARD.exists():
        raise SystemExit(f"{GOFORWARD} is missing: apt-get install pocketsphinx-testdata")
    return np.fromfile(GOFORWARD, dtype="<i2").astype(np.int16)


# --- report -----------------------------------------------------------------------


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.1f}" if abs(ms) >= 10 else f"{ms:.2f}"


def rows(results: dict[str, dict[str, list[float]]]) -> list[list[str]]:
    """One row per (adapter, direct client); the overhead is the median of the rounds'
    paired differences, which a slow drift of the machine's load does not bias."""
    table = []
    for adapter, samples in results.items():
        ours = samples["adapter"]
        for name, theirs in samples.items():
            if name == "adapter":
                continue
            extra = percentile(sorted(a - d for a, d in zip(ours, theirs, strict=True)), 50)
            base = percentile(sorted(theirs), 50)
            table.append([adapter, name, _spread(theirs), _spread(ours),
                          f"{'+' if extra >= 0 else ''}{_ms(extra)} ({extra / base:+.0%})"])
    return table


def _spread(samples: list[float]) -> str:
    ordered = sorted(samples)
    return f"{_ms(percentile(ordered, 50))} / {_ms(percentile(ordered, 95))}"


async def measure(urls: dict[str, str], args: argparse.Namespace
                  ) -> dict[str, dict[str, list[float]]]:
    clock = RealClock()
    return {name: await CONTESTS[name](urls, clock, args) for name in args.only}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reps", type=int, default=20,
                        help="timed rounds per adapter, every client once a round (default 20)")
    parser.add_argument("--asr-reps", type=int, default=8,
                        help="timed rounds for openai-asr, whose server runs faster-whisper "
                        "(1-2 s a request here; default 8)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed rounds first (default 2)")
    parser.add_argument("--only", type=lambda s: s.split(","), default=list(ADAPTERS),
                        help="adapters to measure, comma-separated (default all: "
                        + ",".join(ADAPTERS) + ")")
    parser.add_argument("--max-tokens", type=int, default=16,
                        help="max_tokens of every LLM request (default 16)")
    parser.add_argument("--plain", action="store_true", help="plain text instead of rich")
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(ADAPTERS)
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}; pick from "
                     + ", ".join(ADAPTERS))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ[KEY_ENV] = KEY  # the replays want a key header; no key is real here
    load_before = os.getloadavg()
    with local_servers({SERVER_OF[name] for name in args.only}) as urls:
        results = RealClock().run(measure(urls, args))
    load_after = os.getloadavg()
    render(f"Vendor adapters vs direct clients on the same local server, {args.reps} "
           f"interleaved rounds ({args.asr_reps} for openai-asr), ms",
           ["adapter", "direct client", "direct p50 / p95", "adapter p50 / p95",
            "overhead p50"], rows(results), args.plain)
    print("timed to: LLM the first non-blank token; TTS the first audio (adapter: first "
          "AgentAudio frame); ASR the final transcript. overhead p50: median over rounds of "
          "adapter - direct in the same round")
    print(f"prompt {PROMPT!r}, max_tokens {args.max_tokens}, temperature 0; TTS {SPOKEN!r}; "
          f"ASR {len(speech()) / RATE:.2f} s of speech")
    print(f"load average (1 min): {load_before[0]:.2f} before, {load_after[0]:.2f} after, "
          f"{os.cpu_count()} CPUs")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
