"""SIP message parsing, SDP offer/answer, digest auth, RTP packets and the line resamplers."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from cascade.frames import AgentAudio
from cascade.telephony import sip_message as sm
from cascade.telephony.line import PhoneLine, callers_pcm
from cascade.telephony.resampler import (
    TAPS_PER_PHASE,
    Decimator,
    Interpolator,
    lowpass,
    process_batch,
    resampler,
)
from cascade.telephony.rtp import DtmfReceiver, RtpPacket, RtpSender, TelephoneEvent
from cascade.telephony.sdp import SdpError, answer, negotiate, parse_offer
from cascade.telephony.sip_auth import SipAccess, digest_response, parse_authorization
from cascade.telephony.sip_call import MediaClock, RtpSink, tick_calls

INVITE = (
    "INVITE sip:agent@127.0.0.1 SIP/2.0\r\n"
    "v: SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKabc;rport\r\n"
    "f: \"Ann\" <sip:ann@10.0.0.5>;tag=111\r\n"
    "t: <sip:agent@127.0.0.1>\r\n"
    "i: call-1\r\n"
    "CSeq: 7 INVITE\r\n"
    "Subject: a folded\r\n  header\r\n"
    "c: application/sdp\r\n"
    "l: 4\r\n\r\nbody-and-more"
)
OFFER = """v=0
o=ann 1 1 IN IP4 10.0.0.5
s=-
c=IN IP4 10.0.0.5
t=0 0
m=audio 4000 RTP/AVP 18 8 0 96
a=rtpmap:96 telephone-event/8000
a=ptime:30
m=video 4002 RTP/AVP 31
"""


def test_parse_expands_compact_headers_and_cuts_the_body() -> None:
    message = sm.parse(INVITE.encode())
    assert (message.method, message.uri) == ("INVITE", "sip:agent@127.0.0.1")
    assert message.call_id == "call-1" and message.cseq == (7, "INVITE")
    assert message.from_tag == "111" and message.to_tag == ""
    assert message.branch == "z9hG4bKabc"
    assert message.get("subject") == "a folded header"
    assert message.body == b"body"
    assert sm.uri_of(message.get("From")) == "sip:ann@10.0.0.5"


def test_a_response_copies_the_dialog_headers_and_marks_the_via() -> None:
    request = sm.parse(INVITE.encode())
    reply = sm.response(request, 200, to_tag="xyz", source=("192.0.2.1", 6000))
    again = sm.parse(reply.encode())
    assert (again.status, again.reason) == (200, "OK")
    assert again.get("Via").endswith(";rport=6000;received=192.0.2.1")
    assert again.to_tag == "xyz" and again.call_id == "call-1" and again.cseq == (7, "INVITE")


@pytest.mark.parametrize("broken", [
    b"", b"GARBAGE", b"INVITE sip:a SIP/3.0\r\n\r\n", b"SIP/2.0 abc OK\r\n\r\n",
    INVITE.replace("l: 4", "l: 400").encode(), INVITE.replace("CSeq: 7", "CSeq: x").encode(),
    INVITE.replace("i: call-1\r\n", "").encode(), INVITE.replace("t: <", "t <").encode(),
    b"\xff\xfe" * 10, b"OPTIONS sip:a SIP/2.0\r\n" + b"X: y\r\n" * 20000,
])
def test_parse_refuses_what_is_not_a_sip_message(broken: bytes) -> None:
    with pytest.raises(sm.SipError):
        sm.parse(broken)


def test_negotiate_prefers_pcmu_then_pcma_and_finds_telephone_event() -> None:
    offer = parse_offer(OFFER)
    assert (offer.address, offer.port, offer.ptime) == ("10.0.0.5", 4000, 30)
    chosen = negotiate(offer)
    assert (chosen.codec, chosen.payload_type, chosen.dtmf_payload_type) == ("PCMU", 0, 96)
    assert negotiate(offer, ("PCMA",)).payload_type == 8
    text = answer(chosen, "127.0.0.1", 5004, 42).decode()
    assert "m=audio 5004 RTP/AVP 0 96" in text and "a=rtpmap:96 telephone-event/8000" in text
    assert "c=IN IP4 127.0.0.1" in text
    assert negotiate(parse_offer(text)).payload_type == 0  # our answer reads back


@pytest.mark.parametrize(("offer", "why"), [
    ("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 18\r\n", "no common codec"),
    ("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 0 RTP/AVP 0\r\n", "disabled"),
    ("v=0\r\nm=video 4000 RTP/AVP 31\r\n", "no RTP/AVP audio"),
    ("v=0\r\nm=audio 4000 RTP/AVP 0\r\n", "no connection address"),
    ("v=0\r\nc=IN IP4 not-an-ip\r\nm=audio 4000 RTP/AVP 0\r\n", "not an IP address"),
    ("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 99999 RTP/AVP 0\r\n", "not a port"),
])
def test_offers_we_cannot_answer(offer: str, why: str) -> None:
    with pytest.raises(SdpError, match=why):
        negotiate(parse_offer(offer))


def test_digest_matches_rfc_2617_example() -> None:
    # RFC 2617 section 3.5: Mufasa / Circle Of Life
    assert digest_response("Mufasa", "Circle Of Life", "testrealm@host.com", "GET",
                           "/dir/index.html", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "auth",
                           "00000001", "0a4f113b") == "6629fae49393a05397450978507c4ef1"
    parsed = parse_authorization('Digest username="a b", realm=r, nc=00000001')
    assert parsed == {"username": "a b", "realm": "r", "nc": "00000001"}
    assert parse_authorization("Basic abc") == {}


def test_access_trusts_networks_and_checks_nonces() -> None:
    access = SipAccess(allow=["192.0.2.0/24"], users={"u": "p"})
    request = sm.parse(INVITE.encode())
    assert access.check(request, "192.0.2.9") == "allow"
    assert access.check(request, "198.51.100.1") == "challenge"
    nonce = access.nonce()
    stale = SipAccess(users={"u": "p"}, nonce_seconds=-1)
    request.headers.append(("Authorization", f'Digest username="u", realm="cascade", '
                            f'nonce="{stale.nonce()}", uri="x", response="y"'))
    assert access.check(request, "198.51.100.1") == "challenge"  # not our nonce
    assert access._fresh(nonce)


def test_rtp_round_trip_with_csrc_extension_and_padding() -> None:
    packet = RtpPacket(0, 65535, 2**32 - 1, 0xDEADBEEF, b"\x01\x02\x03", marker=True)
    assert RtpPacket.parse(packet.encode()) == packet
    header = bytearray(packet.encode()[:12])
    header[0] = 0x80 | 0x20 | 0x10 | 0x01  # padding, extension, one CSRC
    data = bytes(header) + b"CSRC" + b"\x00\x01\x00\x01" + b"EXT!" + b"pay" + b"\x00\x02"
    parsed = RtpPacket.parse(data)
    assert parsed.payload == b"pay"
    for broken in (b"\x80" * 11, b"\x40" + b"\x00" * 11, b"\xa0" + b"\x00" * 11,
                   b"\x90" + b"\x00" * 11, b"\x8f" + b"\x00" * 20):
        with pytest.raises(ValueError):
            RtpPacket.parse(broken)


def test_one_digit_per_key_press_whatever_arrives() -> None:
    receiver = DtmfReceiver()
    press = [TelephoneEvent(5, end, 10, duration).encode()
             for end, duration in ((False, 160), (False, 320), (True, 480), (True, 480))]
    digits = [receiver.receive(RtpPacket(101, i, 8000, 1, p)) for i, p in enumerate(press)]
    assert digits == ["5", None, None, None]
    assert receiver.receive(RtpPacket(101, 9, 9600, 1, TelephoneEvent(11, True, 10, 1)
                                      .encode())) == "#"
    assert receiver.receive(RtpPacket(101, 10, 11200, 1, TelephoneEvent(16, True, 10, 1)
                                      .encode())) is None  # flash is not a digit


def test_sender_numbers_packets_and_marks_talk_spurts() -> None:
    sender = RtpSender(0)
    first, second, quiet, again = (RtpPacket.parse(sender.packet(b"x" * 160, speech))
                                   for speech in (True, True, False, True))
    assert first.marker and not second.marker and not quiet.marker and again.marker
    assert (second.sequence - first.sequence) & 0xFFFF == 1
    assert (second.timestamp - first.timestamp) & 0xFFFFFFFF == 160


def test_line_resamplers_keep_level_and_chunk_sizes() -> None:
    t = np.arange(16000) / 16000
    tone = (np.sin(2 * np.pi * 440 * t) * 10000).astype(np.int16)
    down, up = resampler(16000, 8000), resampler(8000, 16000)
    narrow = np.concatenate([down.process(tone[i : i + 320]) for i in range(0, 16000, 320)])
    wide = np.concatenate([up.process(narrow[i : i + 160]) for i in range(0, 8000, 160)])
    assert len(narrow) == 8000 and len(wide) == 16000
    rms = float(np.sqrt(np.mean(wide[1000:].astype(np.float64) ** 2)))
    assert abs(rms - 10000 / np.sqrt(2)) < 200
    alias = (np.sin(2 * np.pi * 6000 * t) * 10000).astype(np.int16)  # above 4 kHz
    assert np.abs(resampler(16000, 8000).process(alias)[100:].astype(np.int32)).max() < 300
    assert len(resampler(8000, 22050).process(narrow)) > 0  # other rates: soxr


@pytest.mark.parametrize("factor", [2, 3, 6])
def test_streamed_resampling_equals_filtering_the_whole_signal_at_once(factor: int) -> None:
    """Chunk by chunk (odd sizes, odd phases) gives what one convolution of the whole
    zero-stuffed or decimated signal gives: no seams at chunk edges."""
    taps = lowpass(factor)
    keep = TAPS_PER_PHASE
    low = _speechlike(0.5, 8000, 3)
    stuffed = np.zeros(factor * (keep + len(low)), np.float64)
    stuffed[factor * keep :: factor] = low
    want_up = np.clip(np.rint(np.convolve(stuffed, taps * factor, mode="valid")), -32768, 32767)
    high = _speechlike(0.5, 8000 * factor, 4)
    padded = np.concatenate([np.zeros(keep * factor), high.astype(np.float64)])
    want_down = np.clip(np.rint(np.convolve(padded, taps, mode="valid")[::factor]),
                        -32768, 32767)
    for kind, signal, want in ((Interpolator, low, want_up), (Decimator, high, want_down)):
        streamed = kind(factor)
        sizes = [160, 161, 7, 320, 1, 160, 999]
        pieces, start = [], 0
        while start < len(signal):
            size = sizes[len(pieces) % len(sizes)]
            pieces.append(streamed.process(signal[start : start + size]))
            start += size
        got = np.concatenate(pieces).astype(np.int32)
        assert len(got) == len(want)
        assert np.abs(got - want).max() <= 1  # float32 against float64 rounding only


def _speechlike(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    voiced = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (180, 720, 1900, 3100))
    return (voiced * 5000 + rng.normal(0, 300, len(t))).astype(np.int16)


@pytest.mark.parametrize(("rate_in", "rate_out"), [(8000, 16000), (16000, 8000),
                                                   (8000, 48000), (48000, 8000)])
def test_batched_resampling_matches_each_call_resampled_alone(
        rate_in: int, rate_out: int, monkeypatch: pytest.MonkeyPatch) -> None:
    products: list[int] = []
    for kind in (Decimator, Interpolator):
        def counted(self: Any, n: int, original: Any = kind.matrix) -> Any:
            products.append(n)
            return original(self, n)
        monkeypatch.setattr(kind, "matrix", counted)
    calls = 5
    signals = [_speechlike(1.0, rate_in, seed) for seed in range(calls)]
    alone = [resampler(rate_in, rate_out) for _ in range(calls)]
    batched = [resampler(rate_in, rate_out) for _ in range(calls)]
    chunk = rate_in // 50
    sizes = [chunk] * 20 + [chunk // 2 + 1, chunk] * 5 + [chunk] * 5  # odd sizes, odd phases
    start = 0
    for size in sizes:
        pieces = [s[start : start + size] for s in signals]
        want = [r.process(p) for r, p in zip(alone, pieces, strict=True)]
        # the last call sits one chunk out, as a call with no audio this tick would
        got = process_batch(list(zip(batched[:-1], pieces[:-1], strict=True)))
        got.append(batched[-1].process(pieces[-1]))
        for g, w in zip(got, want, strict=True):
            assert len(g) == len(w)
            assert np.abs(g.astype(np.int32) - w).max(initial=0) <= 1  # float rounding only
        start += size
    assert start <= len(signals[0])
    assert products == sizes  # every step was one matrix product, odd phases included
    with pytest.raises(ValueError, match="appears twice"):
        process_batch([(alone[0], signals[0][:chunk]), (alone[0], signals[0][:chunk])])


def test_rtp_sink_converts_pending_agent_audio_in_order_with_other_rates() -> None:
    tone = _speechlike(0.1, 16000, 7)
    other = _speechlike(0.02, 24000, 8)
    sink, reference = RtpSink(PhoneLine(16000)), PhoneLine(16000)
    sink.play(_agent(tone[:320]), 0.0)
    sink.play(_agent(tone[320:640]), 0.0)
    assert len(sink.pending) == 2  # waiting for the tick
    sink.play(AgentAudio(conversation="c", turn=1, time=0.0, pcm=other, sample_rate=24000,
                         text="x"), 0.0)
    assert not sink.pending  # another rate: what was pending went first
    want = [reference.agent_line(tone[:320], 16000), reference.agent_line(tone[320:640], 16000),
            reference.agent_line(other, 24000)]
    got = [sink.take() for _ in range(3)]
    for g, w in zip(got, want, strict=True):  # soxr's SIMD rounding varies with alignment
        assert g is not None and len(g) == len(w)
        assert np.abs(g.astype(np.int32) - w).max() <= 2
    sink.play(_agent(tone[640:960]), 0.0)
    sink.clear(0.0)
    assert not sink.pending and sink.take() is None  # a barge-in drops pending audio too


def _agent(pcm: np.ndarray, reply_end: bool = False) -> AgentAudio:
    return AgentAudio(conversation="c", turn=1, time=0.0, pcm=pcm.astype(np.int16),
                      sample_rate=16000, text="hi", reply_end=reply_end)


def _packets(sink: RtpSink, ticks: int) -> list[bool]:
    """Per tick: did agent audio go out (True) or silence (False)?"""
    return [sink.take() is not None for _ in range(ticks)]


def test_rtp_sink_sends_the_end_of_a_reply_at_once_and_waits_on_a_mid_reply_tail() -> None:
    tone = (np.sin(np.arange(800) * 0.3) * 8000).astype(np.int16)  # 50 ms at 16 kHz
    ending = RtpSink(PhoneLine(16000))
    ending.play(_agent(tone, reply_end=True), 0.0)
    assert _packets(ending, 4) == [True, True, True, False]  # 20 + 20 + 10 padded, no gap
    waiting = RtpSink(PhoneLine(16000))
    waiting.play(_agent(tone), 0.0)
    assert _packets(waiting, 5) == [True, True, False, True, False]  # tail waits one tick
    resumed = RtpSink(PhoneLine(16000))
    resumed.play(_agent(tone), 0.0)
    assert _packets(resumed, 2) == [True, True]
    resumed.play(_agent(tone[:160]), 0.0)  # 10 ms tail + 10 ms more = one whole packet
    assert _packets(resumed, 2) == [True, False]


class _TickedCall:
    """What ``tick_calls`` uses of a SIP call: a real line and sink, caller frames queued."""

    def __init__(self, seed: int) -> None:
        self.line = PhoneLine(16000)
        self.sink = RtpSink(self.line)
        self.ended: str | None = None
        self.live = True
        self.caller = _speechlike(0.2, 8000, seed)
        self.agent = _speechlike(0.4, 16000, seed + 50)
        self.queued: list[np.ndarray] = []
        self.delivered: list[np.ndarray] = []
        self.sent: list[np.ndarray | None] = []
        self.jitter = self  # pop() below stands in for the jitter buffer

    def pop(self) -> np.ndarray | None:
        return self.queued.pop(0) if self.queued else None

    def deliver(self, pcm: np.ndarray) -> None:
        self.delivered.append(pcm)

    def send_agent(self) -> None:
        self.sent.append(self.sink.take())


def test_one_tick_converts_every_call_together_and_a_bad_call_fails_alone() -> None:
    calls = [_TickedCall(seed) for seed in range(6)]
    failures: list[tuple[_TickedCall, Exception]] = []
    for tick in range(8):
        for call in calls:
            call.queued.append(call.caller[tick * 160 : (tick + 1) * 160])
            call.sink.play(_agent(call.agent[tick * 320 : (tick + 1) * 320]), 0.0)
        if tick == 4:  # a stage handed this call audio no line can take
            calls[2].sink.pending[-1] = np.zeros((320, 2), np.int16)
        tick_calls(calls, lambda call, exc: failures.append((call, exc)))  # type: ignore
    assert [(c, type(e)) for c, e in failures] == [(calls[2], ValueError)]
    for call in calls:
        up, down = PhoneLine(16000), PhoneLine(16000)  # the same audio, one call alone
        want_in = [callers_pcm([up], [call.caller[i * 160 : (i + 1) * 160]])[0]
                   for i in range(8)]
        assert len(call.delivered) == 8
        for got, want in zip(call.delivered, want_in, strict=True):
            assert np.abs(got.astype(np.int32) - want).max() <= 1
        if call is calls[2]:
            assert sum(p is not None for p in call.sent) == 7  # its bad chunk is gone
            continue
        want_out = [down.agent_line(call.agent[i * 320 : (i + 1) * 320], 16000)
                    for i in range(8)]
        for got_out, want in zip(call.sent, want_out, strict=True):
            assert got_out is not None and np.abs(got_out.astype(np.int32) - want).max() <= 1


async def test_the_media_clock_outlives_a_failing_tick() -> None:
    ticks: list[float] = []

    def tick() -> None:
        ticks.append(asyncio.get_running_loop().time())
        if len(ticks) == 2:
            raise RuntimeError("a bug in one tick")

    clock = MediaClock(tick)
    running = asyncio.create_task(clock.run())
    await asyncio.sleep(0.15)
    running.cancel()
    assert len(ticks) >= 5 and clock.ticks == len(ticks)  # it kept its 20 ms pace
