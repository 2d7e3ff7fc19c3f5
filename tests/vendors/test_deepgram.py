"""deepgram-asr against a local websocket server replaying a recorded /v1/listen exchange:
one socket per conversation, audio streamed as the caller speaks, KeepAlive, reconnects,
a clean close, and faults that end as traced errors while the conversation goes on."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from cascade.adapters.deepgram import DeepgramASR, DeepgramOptions
from cascade.adapters.deepgram_socket import ListenSocket
from cascade.adapters.provider import ProviderError
from cascade.adapters.scripted import EnergyVAD, EnergyVADOptions
from cascade.clock import VirtualClock
from cascade.frames import PCM, SpeechStarted, SpeechStopped, Transcript, UserAudio
from cascade.tracing import Span
from tests.adapters.harness import CONVERSATION, RATE, Collector, Run, build, drive, play
from tests.conftest import babble, silence
from tests.vendors.replay import DeepgramReplay
from tests.vendors.servers import free_port

KEY = "dg-test-key-not-real-0123456789"
TEXT = "Go forward ten meters."
PRE_ROLL = 0.3


@pytest.fixture(autouse=True)
def deepgram_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", KEY)


def transcripts(run: Run, final: bool = True) -> list[Transcript]:
    return [f for f in run.collector.of(Transcript)
            if isinstance(f, Transcript) and f.final == final]


def errors(run: Run) -> list[Span]:
    return run.trace.named("error")


class Caller:
    """Feeds the ASR stage as a VAD would: 20 ms frames on a media clock and speech
    events around each utterance; ``heard`` waits (in real time) for the finals."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.time = 0.0
        self.turn = 0
        self.onset = 0.0

    async def audio(self, pcm: PCM) -> None:
        for begin in range(0, len(pcm), 320):
            await self.run.graph.send(UserAudio(
                conversation=CONVERSATION, turn=max(self.turn, 1), time=self.time,
                pcm=pcm[begin : begin + 320], sample_rate=RATE))
            self.time += 0.02

    async def start(self) -> None:
        self.turn += 1
        self.onset = self.time
        await self.run.graph.send(SpeechStarted(conversation=CONVERSATION, turn=self.turn,
                                                time=self.time))

    async def stop(self) -> None:
        await self.run.graph.send(SpeechStopped(conversation=CONVERSATION, turn=self.turn,
                                                time=self.time, started=self.onset))

    async def says(self, speech: PCM) -> None:
        """Silence (the pre-roll comes from it), the utterance, and its final."""
        await self.audio(silence(0.5))
        await self.start()
        await self.audio(speech)
        await self.stop()
        await self.heard(self.turn)

    async def quiet(self, seconds: float) -> None:
        """Real seconds in which the socket has nothing to carry (virtual time stands)."""
        await self.run.ctx.clock.run_blocking(time.sleep, seconds)

    async def heard(self, count: int) -> None:
        for _ in range(3000):
            if len(transcripts(self.run)) >= count:
                return
            await asyncio.sleep(0.01)  # virtual time; the loop waits for the network for real
        raise AssertionError(f"no final transcript for turn {count}")


def listen(asr: DeepgramASR, talk: Callable[[Caller], Awaitable[object]]) -> Run:
    """The ASR stage alone on the virtual clock, fed by ``talk``; then stopped."""
    clock = VirtualClock()
    run = build(clock, [("asr", asr)], Collector(Transcript))

    async def feed(run: Run) -> None:
        await talk(Caller(run))

    clock.run(drive(run, feed, deadline=120))
    return run


def converse(asr: DeepgramASR, *utterances: PCM) -> Run:
    """Each utterance heard before the next."""

    async def talk(caller: Caller) -> None:
        for speech in utterances:
            await caller.says(speech)

    return listen(asr, talk)


def segment_bytes(speech: PCM) -> int:
    """What one utterance sends: its pre-roll and its audio, PCM16."""
    return (int(PRE_ROLL * RATE) + len(speech)) * 2


def test_recognize_streams_audio_finalizes_and_joins_finals() -> None:
    replay = DeepgramReplay("deepgram_listen")
    audio = np.linspace(-0.1, 0.1, 16000 * 2, dtype=np.float32)
    with replay.serving() as base:
        stage = DeepgramASR(DeepgramOptions(base_url=base))
        result = stage.recognize(audio)
    (seen,) = replay.seen
    assert not seen.problems, seen.problems
    assert seen.headers["authorization"] == f"Token {KEY}"
    assert seen.audio_bytes == len(audio) * 2
    assert seen.messages == [{"type": "Finalize"}, {"type": "CloseStream"}]
    assert seen.ended == "CloseStream"
    assert result.text == TEXT
    assert [w.text for w in result.words] == ["Go", "forward", "ten", "meters."]
    assert result.words[0].start == pytest.approx(0.98)
    assert -0.1 < result.avg_logprob < 0


def test_recognize_returns_before_the_closing_metadata() -> None:
    replay = DeepgramReplay("deepgram_listen", metadata_delay=1.5)
    with replay.serving() as base:
        stage = DeepgramASR(DeepgramOptions(base_url=base, close_timeout=2.0))
        began = time.monotonic()
        result = stage.recognize(np.linspace(-0.1, 0.1, 16000 * 2, dtype=np.float32))
        took = time.monotonic() - began
    assert result.text == TEXT
    assert took < 1.0  # the final, not the Metadata 1.5 s after CloseStream
    (seen,) = replay.seen
    assert seen.ended == "CloseStream" and not seen.problems  # still closed cleanly, behind


def test_the_api_key_stays_out_of_debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="websockets")  # it logs handshake headers here
    replay = DeepgramReplay("deepgram_listen")
    with replay.serving() as base:
        DeepgramASR(DeepgramOptions(base_url=base)).recognize(np.zeros(3200, np.float32))
    assert replay.seen[0].headers["authorization"] == f"Token {KEY}"
    assert not [r.getMessage() for r in caplog.records if KEY in r.getMessage()]


def test_close_stops_a_connect_to_an_unreachable_service() -> None:
    dead = f"ws://127.0.0.1:{free_port()}/v1"
    options = DeepgramOptions(base_url=dead, retries=5, backoff=1.0)  # ~31 s of retrying
    live = ListenSocket(f"{dead}/listen", RATE, None, options, "deepgram-asr")
    utterance = live.begin(1, 0.0)
    live.finalize(utterance)
    time.sleep(0.2)  # refused at once: the sender waits to try again
    began = time.monotonic()
    live.close()
    assert time.monotonic() - began < 0.5
    live._sender.join(0.5)
    assert not live._sender.is_alive()
    with pytest.raises(ProviderError, match="ended before the connection opened"):
        live.result(utterance, 0.0)


def test_a_conversation_streams_every_turn_over_one_socket() -> None:
    replay = DeepgramReplay("deepgram_listen")
    speech = [silence(0.5)]
    for seed in range(3):
        speech += [babble(1.8, seed=seed), silence(0.8)]
    with replay.serving() as base:
        clock = VirtualClock()
        asr = DeepgramASR(DeepgramOptions(base_url=base))
        run = build(clock, [("vad", EnergyVAD(EnergyVADOptions())), ("asr", asr)],
                    Collector(Transcript))
        clock.run(drive(run, play(np.concatenate(speech))))
    (seen,) = replay.seen  # one websocket for the whole conversation
    assert not seen.problems, seen.problems
    assert seen.order == ["audio", "Finalize"] * 3 + ["CloseStream"]
    assert seen.ended == "CloseStream"  # CloseStream, then Metadata and the service's close
    finals = transcripts(run)
    assert [f.text for f in finals] == [TEXT] * 3
    assert not transcripts(run, final=False)  # no interim results unless partials are on
    for final in finals:  # media times: each segment's words where its own audio was
        assert final.words[0].start - final.speech_start == pytest.approx(0.98 - PRE_ROLL)
        assert final.words[-1].end < final.speech_end + 0.3
    assert [s.attrs["text"] for s in run.trace.named("asr")] == [TEXT] * 3
    assert not errors(run)


def test_audio_reaches_the_service_while_the_caller_speaks() -> None:
    replay = DeepgramReplay("deepgram_listen")
    speech = babble(2.0)
    arrived: list[bool] = []

    async def talk(caller: Caller) -> None:
        await caller.audio(silence(0.5))
        await caller.start()
        await caller.audio(speech)
        arrived.append(await caller.run.ctx.clock.run_blocking(
            replay.wait_for_audio, segment_bytes(speech), 10.0))
        await caller.stop()

    with replay.serving() as base:
        run = listen(DeepgramASR(DeepgramOptions(base_url=base)), talk)
    assert arrived == [True]  # pre-roll and speech were on the wire before SpeechStopped
    (seen,) = replay.seen
    assert seen.order == ["audio", "Finalize", "CloseStream"]
    assert seen.audio_bytes == segment_bytes(speech)
    assert [f.text for f in transcripts(run)] == [TEXT]


def test_keepalive_holds_the_socket_through_a_silence() -> None:
    replay = DeepgramReplay("deepgram_listen", idle_timeout=0.5)  # the service's 10 s

    async def talk(caller: Caller) -> None:
        await caller.says(babble(2.0))
        await caller.quiet(1.2)
        await caller.says(babble(2.0, seed=1))

    with replay.serving() as base:
        run = listen(DeepgramASR(DeepgramOptions(base_url=base, keepalive_interval=0.1)), talk)
    (seen,) = replay.seen
    assert not seen.problems, seen.problems
    assert seen.order[:2] == ["audio", "Finalize"]
    assert seen.order[-3:] == ["audio", "Finalize", "CloseStream"]
    assert set(seen.order[2:-3]) == {"KeepAlive"} and len(seen.order[2:-3]) >= 5
    assert [f.text for f in transcripts(run)] == [TEXT] * 2
    assert not errors(run)


def test_a_socket_closed_for_idling_is_traced_and_reopened_at_the_next_speech() -> None:
    replay = DeepgramReplay("deepgram_listen", idle_timeout=0.3)

    async def talk(caller: Caller) -> None:
        await caller.says(babble(2.0))
        await caller.quiet(0.6)
        await caller.says(babble(2.0, seed=1))

    with replay.serving() as base:
        run = listen(DeepgramASR(DeepgramOptions(base_url=base)), talk)  # KeepAlive after 5 s
    first, second = replay.seen
    assert (first.ended, second.ended) == ("idle", "CloseStream")
    assert [f.text for f in transcripts(run)] == [TEXT] * 2
    (error,) = errors(run)
    assert "NET-0001" in error.attrs["error"] and "reopens" in error.attrs["error"]


@pytest.mark.parametrize("fault", ["drop-mid-audio", "drop-at-finalize"])
def test_a_dropped_socket_is_reopened_and_the_speech_sent_again(fault: str) -> None:
    replay = DeepgramReplay("deepgram_listen", faults=[fault])
    speech = babble(2.0)
    with replay.serving() as base:
        run = converse(DeepgramASR(DeepgramOptions(base_url=base)), speech, speech)
    first, second = replay.seen
    assert first.ended == "fault"
    assert not second.problems, second.problems
    assert second.order == ["audio", "Finalize", "audio", "Finalize", "CloseStream"]
    assert second.audio_bytes == 2 * segment_bytes(speech)  # turn 1 whole, then turn 2
    assert [f.text for f in transcripts(run)] == [TEXT] * 2
    (error,) = errors(run)
    assert error.turn == 1
    assert "dropped" in error.attrs["error"] and "injected fault" in error.attrs["error"]


def test_a_timed_out_turn_is_not_sent_again_after_a_reconnect() -> None:
    replay = DeepgramReplay("deepgram_listen", faults=["unanswered-then-drop"])
    speech = babble(2.0)
    with replay.serving() as base:
        run = converse(DeepgramASR(DeepgramOptions(base_url=base, finalize_timeout=0.5)),
                       speech, speech)
    first, second = replay.seen
    assert first.ended == "fault"  # turn 1 unanswered, dropped as turn 2's audio came
    assert not second.problems, second.problems
    assert second.order == ["audio", "Finalize", "CloseStream"]  # turn 2 only
    assert second.audio_bytes == segment_bytes(speech)
    assert [f.text for f in transcripts(run)] == ["", TEXT]
    timeout, drop = sorted(errors(run), key=lambda e: e.turn)
    assert timeout.turn == 1 and "no result of Finalize" in timeout.attrs["error"]
    assert drop.turn == 2 and "injected fault" in drop.attrs["error"]  # not blamed on turn 1


def test_speech_on_a_socket_that_keeps_dropping_is_given_up_after_the_retries() -> None:
    replay = DeepgramReplay("deepgram_listen", faults=["drop-at-finalize"] * 2)
    with replay.serving() as base:
        run = converse(DeepgramASR(DeepgramOptions(base_url=base, retries=1)),
                       babble(2.0), babble(2.0))
    assert [s.ended for s in replay.seen] == ["fault", "fault", "CloseStream"]
    assert replay.seen[2].order == ["audio", "Finalize", "CloseStream"]  # turn 2 only
    assert [f.text for f in transcripts(run)] == ["", TEXT]
    messages = [e.attrs["error"] for e in errors(run) if e.turn == 1]
    assert len(messages) == 3
    assert sum("dropped (received 1011" in m for m in messages) == 2
    assert sum("dropped 2 times" in m for m in messages) == 1  # then it gave up


def test_a_refused_key_is_a_traced_error_and_the_conversation_goes_on() -> None:
    replay = DeepgramReplay("deepgram_unauthorized")
    with replay.serving() as base:
        run = converse(DeepgramASR(DeepgramOptions(base_url=base, retries=2)),
                       babble(1.0), babble(1.0))
    assert len(replay.seen) == 2  # one try a turn: a 401 is not retried
    assert [e.turn for e in errors(run)] == [1, 2]
    for error in errors(run):
        assert "HTTP 401" in error.attrs["error"] and "DEEPGRAM_API_KEY" in error.attrs["error"]
        assert KEY not in error.to_json()
    assert [f.text for f in transcripts(run)] == ["", ""]  # each segment still closes


def test_recognize_with_a_refused_key_raises_without_the_key() -> None:
    replay = DeepgramReplay("deepgram_unauthorized")
    with replay.serving() as base:
        stage = DeepgramASR(DeepgramOptions(base_url=base, retries=2))
        with pytest.raises(ProviderError, match=r"HTTP 401.*DEEPGRAM_API_KEY") as caught:
            stage.recognize(np.zeros(3200, np.float32))
    assert len(replay.seen) == 1
    assert KEY not in str(caught.value)


def test_a_malformed_message_fails_its_turn_and_the_next_turn_reconnects() -> None:
    replay = DeepgramReplay("deepgram_listen", faults=["malformed-at-finalize"])
    with replay.serving() as base:
        run = converse(DeepgramASR(DeepgramOptions(base_url=base)), babble(2.0), babble(2.0))
    first, second = replay.seen
    assert first.ended == "client closed"
    assert second.ended == "CloseStream" and not second.problems
    assert [f.text for f in transcripts(run)] == ["", TEXT]
    (error,) = errors(run)
    assert error.turn == 1 and "not JSON" in error.attrs["error"]


def test_connection_refused_is_a_traced_error_each_turn() -> None:
    dead = f"ws://127.0.0.1:{free_port()}/v1"
    run = converse(DeepgramASR(DeepgramOptions(base_url=dead, retries=1, backoff=0.0)),
                   babble(1.0), babble(1.0))
    assert [e.turn for e in errors(run)] == [1, 2]
    assert all("failed to connect" in e.attrs["error"] and "after 2 attempt(s)"
               in e.attrs["error"] for e in errors(run))
    assert [f.text for f in transcripts(run)] == ["", ""]


def test_fallback_asr_fails_over_from_an_unreachable_deepgram() -> None:
    from cascade.adapters.fallback import FallbackASR, FallbackASROptions

    dead = {"adapter": "deepgram-asr", "options": {
        "base_url": f"ws://127.0.0.1:{free_port()}/v1", "retries": 0}}
    script = {"adapter": "scripted-asr", "options": {"script": ["hello there"]}}
    stage = FallbackASR(FallbackASROptions(providers=[dead, script], partial_interval=0.0))
    clock = VirtualClock()
    run = build(clock, [("vad", EnergyVAD(EnergyVADOptions())), ("asr", stage)],
                Collector(Transcript))
    clock.run(drive(run, play(np.concatenate([silence(0.3), babble(0.8), silence(1.0)]))))
    assert [f.text for f in transcripts(run)] == ["hello there"]
    (span,) = run.trace.named("failover")
    assert (span.attrs["from"], span.attrs["to"]) == ("deepgram-asr", "scripted-asr")
    assert "failed to connect" in span.attrs["reason"]


def test_interim_results_are_partial_transcripts() -> None:
    replay = DeepgramReplay("deepgram_listen")

    async def talk(caller: Caller) -> None:
        await caller.audio(silence(0.5))
        await caller.start()
        await caller.audio(babble(2.0))
        for _ in range(500):  # the caller talks on until the interim result is back
            if transcripts(caller.run, final=False):
                break
            await caller.quiet(0.01)
            await caller.audio(babble(0.02))
        await caller.stop()

    with replay.serving() as base:
        run = listen(DeepgramASR(DeepgramOptions(base_url=base, partial_interval=1.0)), talk)
    (seen,) = replay.seen
    assert seen.query["interim_results"] == "true"
    (partial,) = transcripts(run, final=False)
    (final,) = transcripts(run)
    assert partial.text == "Go forward" and final.text == TEXT
    assert run.collector.frames.index(partial) < run.collector.frames.index(final)
    assert partial.speech_end - partial.speech_start == pytest.approx(1.7)
