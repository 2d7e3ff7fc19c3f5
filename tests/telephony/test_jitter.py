"""The jitter buffer fed impaired packet streams (loss, jitter, reordering, duplicates, DTX)."""

from __future__ import annotations

import itertools

import numpy as np

from cascade.telephony.impairments import Impairment, Timed, impair, paced
from cascade.telephony.jitter import JitterBuffer
from cascade.telephony.rtp import RtpPacket

FRAME = 160


def speech(frames: int, seed: int = 1) -> list[np.ndarray]:
    """Distinct non-zero 20 ms frames (so any misplacement shows)."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(1000, 8000, FRAME) * rng.choice([-1, 1], FRAME)).astype(np.int16)
            for _ in range(frames)]


def packets(frames: list[np.ndarray], first_seq: int = 65530, first_ts: int = 2**32 - 480
            ) -> list[Timed[RtpPacket]]:
    """RTP packets every 20 ms; numbers chosen to wrap around during the stream."""
    return paced(RtpPacket(0, (first_seq + i) & 0xFFFF, (first_ts + i * FRAME) & 0xFFFFFFFF,
                           42, frame.tobytes()) for i, frame in enumerate(frames))


def play(stream: list[Timed[RtpPacket]], ticks: int, buffer: JitterBuffer) -> list[np.ndarray]:
    """Deliver packets at their arrival times while the buffer is popped every 20 ms."""
    out = []
    pending = sorted(stream, key=lambda p: p.at)
    for tick in range(ticks):
        now = tick * 0.02 + 0.001
        while pending and pending[0].at <= now:
            p = pending.pop(0).item
            buffer.push(p.sequence, p.timestamp, p.ssrc, np.frombuffer(p.payload, np.int16))
        frame = buffer.pop()
        if frame is not None:
            out.append(frame)
    return out


def test_a_clean_stream_comes_out_unchanged_after_the_delay() -> None:
    frames = speech(50)
    buffer = JitterBuffer(delay=3)
    out = play(packets(frames), 60, buffer)
    assert len(out) >= 50
    assert np.array_equal(np.concatenate(out[:50]), np.concatenate(frames))
    assert buffer.stats.played == 50 and buffer.stats.late == 0


def test_jitter_reordering_and_duplicates_within_the_delay_change_nothing() -> None:
    frames = speech(100)
    network = Impairment(jitter=0.05, reorder=0.2, duplicate=0.2, seed=3)
    stream = impair(packets(frames), network)
    assert [p.item.sequence for p in stream] != [p.item.sequence for p in packets(frames)]
    buffer = JitterBuffer(delay=4)
    out = play(stream, 120, buffer)
    assert np.array_equal(np.concatenate(out[:100]), np.concatenate(frames))
    assert buffer.stats.duplicate > 5 and buffer.stats.reordered > 5
    assert buffer.stats.late == 0 and buffer.stats.concealed == 0


def test_lost_packets_are_concealed_and_the_rest_stays_in_place() -> None:
    frames = speech(200)
    stream = impair(packets(frames), Impairment(loss=0.1, burst=0.3, seed=5))
    kept = {p.item.sequence for p in stream}
    buffer = JitterBuffer(delay=3)
    out = play(stream, 220, buffer)[:200]
    for index, (sent, got) in enumerate(zip(frames, out, strict=True)):
        if (65530 + index) & 0xFFFF in kept:
            assert np.array_equal(sent, got)
        else:  # half the previous frame once, then silence
            assert np.abs(got.astype(np.int32)).max() <= 4000
    last_kept = max(i for i in range(200) if (65530 + i) & 0xFFFF in kept)
    assert buffer.stats.concealed == last_kept + 1 - len(kept)  # a lost tail is just silence


def test_packets_later_than_the_delay_are_dropped_and_playout_keeps_time() -> None:
    frames = speech(50)
    stream = packets(frames)
    stream[10] = Timed(stream[10].at + 0.2, stream[10].item)  # 200 ms late: past the delay
    buffer = JitterBuffer(delay=2)
    out = play(stream, 60, buffer)
    assert buffer.stats.late == 1
    assert np.array_equal(out[11], frames[11])  # the frames after it are where they belong


def test_silence_suppression_plays_silence_and_resumes_in_step() -> None:
    frames = speech(20) + [np.zeros(FRAME, np.int16)] * 30 + speech(20, seed=2)

    def is_silent(packet: RtpPacket) -> bool:
        return not np.frombuffer(packet.payload, np.int16).any()

    def comfort_noise(packet: Timed[RtpPacket]) -> RtpPacket:
        return RtpPacket(13, packet.item.sequence, packet.item.timestamp, 42, b"\x40")

    stream = impair(packets(frames), Impairment(dtx=True), is_silent, comfort_noise)
    assert len(stream) == 20 + 2 + 1 + 20  # speech, hangover, one CN packet, speech
    voice = [p for p in stream if p.item.payload_type == 0]
    buffer = JitterBuffer(delay=3)
    out = play(voice, 80, buffer)
    assert np.array_equal(np.concatenate(out[:70]), np.concatenate(frames))
    # the last frames of the pause are already followed by the next talk spurt when they
    # play, so they count as concealed; concealing after silence is silence
    assert buffer.stats.concealed <= 3


def test_a_new_sender_or_a_timestamp_jump_restarts_playout() -> None:
    buffer = JitterBuffer(delay=1)
    first, second = speech(2)
    buffer.push(1, 1000, 7, first)
    assert buffer.pop() is None  # filling up
    assert np.array_equal(buffer.pop(), first)  # type: ignore[arg-type]
    buffer.push(9, 90_000_000, 7, second)  # far ahead: not jitter
    assert buffer.stats.restarts == 1
    assert buffer.pop() is None
    assert np.array_equal(buffer.pop(), second)  # type: ignore[arg-type]
    buffer.push(1, 5, 8, first)  # another SSRC
    assert buffer.stats.restarts == 2


def test_a_fast_sender_clock_is_caught_up_by_skipping() -> None:
    buffer = JitterBuffer(delay=2, max_delay=6)
    for index, frame in enumerate(speech(40)):
        buffer.push(index, index * FRAME, 1, frame)
        if index % 4 != 3:  # the sender produces 4 frames for every 3 we play
            buffer.pop()
    assert buffer.stats.skipped > 0


def test_impairments_are_repeatable_and_drop_what_they_say() -> None:
    stream = paced(range(1000))
    network = Impairment(loss=0.2, jitter=0.03, seed=11)
    once, again = impair(stream, network), impair(stream, network)
    assert once == again
    assert 700 < len(once) < 900
    assert all(b.at >= a.at for a, b in itertools.pairwise(once))
    assert impair(stream, Impairment()) == stream


def test_other_packet_lengths_switch_to_sample_placement() -> None:
    frames = speech(30)
    audio = np.concatenate(frames)
    stream = []  # 20 ms packets first, then 10 ms ones, then 30 ms ones
    at, ts, seq = 0.0, 0, 0
    for size in [160] * 6 + [80] * 12 + [240] * 12:
        stream.append(Timed(at, RtpPacket(0, seq, ts, 5, audio[ts : ts + size].tobytes())))
        at, ts, seq = at + size / 8000, ts + size, seq + 1
    shuffled = impair(stream, Impairment(jitter=0.03, seed=2))
    buffer = JitterBuffer(delay=3)
    out = play(shuffled, 40, buffer)
    assert np.array_equal(np.concatenate(out)[: len(audio)], audio)
    assert buffer.stats.concealed == 0 and buffer.stats.late == 0
