"""The wire format: every frame type round-trips exactly; bad payloads say what is wrong."""

from __future__ import annotations

import dataclasses
import struct

import msgpack
import numpy as np
import pytest

from cascade import frames as f
from cascade.distributed.wire import VERSION, Envelope, WireError, decode, encode
from cascade.tracing import Span

PCM = np.array([0, 1, -1, 32767, -32768, 1234], dtype=np.int16)
BASE = {"conversation": "call-7", "turn": 3, "time": 12.345678901234}
FRAMES: list[f.Frame] = [
    f.Frame(**BASE), f.SystemFrame(**BASE), f.DataFrame(**BASE),
    f.UserAudio(**BASE, pcm=PCM, sample_rate=16000),
    f.SpeechStarted(**BASE), f.SpeechStopped(**BASE, started=11.5),
    f.Transcript(**BASE, text="héllo, wörld", final=True, avg_logprob=-0.25,
                 no_speech_prob=0.01, words=(f.Word("héllo", 1.0, 1.5, 0.9),
                                             f.Word("wörld", 1.5, 2.0, 0.8)),
                 speech_start=1.0, speech_end=2.0),
    f.EndOfTurn(**BASE, text="hello", reason="silence", speech_end=2.0),
    f.ResumeReply(**BASE, resumes=2, reason="timeout"),
    f.LLMText(**BASE, text="Sure.", last=True), f.LLMReply(**BASE, text="Sure. Anything?"),
    f.ToolCallRequested(**BASE, call_id="call_1", name="get_weather",
                        arguments='{"city": "Paris"}'),
    f.AgentAudio(**BASE, pcm=PCM, sample_rate=22050, text="Sure.", clause_seconds=0.4,
                 clause_end=True, reply_end=False),
    f.AgentSpeechStarted(**BASE), f.AgentSpeechStopped(**BASE, spoken_text="Su",
                                                       interrupted=True),
    f.Interrupt(**BASE, reason="speech"), f.Cancel(**BASE, reason="hangup"),
    f.ErrorFrame(**BASE, stage="asr", message="boom"), f.EndOfStream(**BASE),
    f.Event(**BASE, name="dtmf", data={"digit": "5"}),
]


def same(a: f.Frame, b: f.Frame) -> bool:
    if type(a) is not type(b):
        return False
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray):
            if not (isinstance(y, np.ndarray) and y.dtype == np.int16 and np.array_equal(x, y)):
                return False
        elif x != y or type(x) is not type(y):
            return False
    return True


def test_every_frame_type_is_covered() -> None:
    defined = {c for c in vars(f).values() if isinstance(c, type) and issubclass(c, f.Frame)}
    assert defined == {type(frame) for frame in FRAMES}


@pytest.mark.parametrize("frame", FRAMES, ids=lambda fr: type(fr).__name__)
def test_frames_round_trip_exactly(frame: f.Frame) -> None:
    env = Envelope("frame", "call-7", "asr", seq=42, key=(41, 2), epoch=3, turn=3,
                   time=99.125, meta={"a": 7}, frame=frame)
    back = decode(encode(env))
    assert back.frame is not None and same(frame, back.frame)
    assert (back.kind, back.conversation, back.stage, back.seq, back.key, back.epoch,
            back.turn, back.time, back.meta) == ("frame", "call-7", "asr", 42, (41, 2), 3, 3,
                                                 99.125, {"a": 7})


def test_audio_costs_its_bytes_plus_a_small_header() -> None:
    pcm = np.zeros(320, np.int16)
    frame = f.UserAudio(conversation="c1", turn=1, time=1.0, pcm=pcm, sample_rate=16000)
    size = len(encode(Envelope("frame", "c1", "asr", seq=1000, epoch=1, turn=1, time=1.0,
                               frame=frame)))
    assert 640 < size < 640 + 120


def test_numpy_scalars_travel_as_plain_numbers() -> None:
    frame = f.Transcript(conversation="c", turn=1, time=np.float64(1.5), text="x", final=True,
                         avg_logprob=np.float32(-0.5))  # type: ignore[arg-type]
    back = decode(encode(Envelope("frame", frame=frame))).frame
    assert isinstance(back, f.Transcript) and back.avg_logprob == -0.5
    assert type(back.time) is float


def test_spans_round_trip() -> None:
    span = Span("call", 2, "asr", "asr", 1.0, 1.25, {"text": "hi", "rejected": None})
    assert decode(encode(Envelope("span", span=span))).span == span


def payload(header: dict[str, object], body: bytes = b"", version: int = VERSION) -> bytes:
    packed = msgpack.packb(header, use_bin_type=True)
    return struct.pack(">BI", version, len(packed)) + packed + body


AUDIO = {"conversation": "c", "turn": 1, "time": 0.0, "sample_rate": 16000}


@pytest.mark.parametrize(("data", "message"), [
    (b"", "too short"),
    (b"\x01\x00", "too short"),
    (payload({"k": "frame"}, version=9), "version 9 is not supported"),
    (struct.pack(">BI", VERSION, 1000) + b"\x80", "does not fit"),
    (struct.pack(">BI", VERSION, 2) + b"\xc1\xc1", "not valid msgpack"),
    (payload([1, 2]), "must be a msgpack map"),  # type: ignore[arg-type]
    (payload({"k": "teleport"}), "unknown kind 'teleport'"),
    (payload({"k": "frame", "f": "Nope", "d": {}}), "unknown frame type 'Nope'"),
    (payload({"k": "frame", "f": "UserAudio", "d": AUDIO}, b"\x00\x01\x02"), "odd number"),
    (payload({"k": "frame", "f": "UserAudio", "d": {**AUDIO, "turn": "one"}}, b"\x00\x00"),
     "UserAudio.turn: expected an integer"),
    (payload({"k": "frame", "f": "LLMText", "d": {"conversation": "c", "turn": 1}}),
     "missing: last, text, time"),
    (payload({"k": "frame", "f": "LLMText", "d": {"conversation": "c", "turn": 1, "time": 0.0,
                                                  "text": "x", "last": 1}}),
     "expected true/false"),
    (payload({"k": "frame", "f": "SpeechStarted", "d": {"conversation": "c", "turn": 1,
                                                        "time": 0.0}}, b"xx"),
     "carries no audio"),
    (payload({"k": "frame", "tc": "now"}), "trace context"),
    (payload({"k": "span", "sp": {"name": "asr"}}), "bad 'span' message"),
    (payload({"k": "frame"}, b"junk"), "no frame"),
])
def test_bad_payloads_raise_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message):
        decode(data)


def test_frames_of_unknown_types_cannot_be_sent() -> None:
    @dataclasses.dataclass(slots=True, kw_only=True)
    class Mine(f.Frame):
        blob: object

    with pytest.raises(WireError, match="register_frame"):
        encode(Envelope("frame", frame=Mine(conversation="c", turn=1, time=0.0, blob=1)))
