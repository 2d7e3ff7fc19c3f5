"""Frames, spans and values survive encoding exactly: types, every field, array bits."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math

import numpy as np
import pytest

from cascade import frames
from cascade.frames import AgentAudio, Event, Frame, Transcript, UserAudio, Word
from cascade.replay.codec import Blobs, decode, encode, equal
from cascade.tracing import Span


def round_trip(value: object) -> object:
    blobs = Blobs()
    text = json.dumps(encode(value, blobs))
    return decode(json.loads(text), Blobs(blobs.data))


def sample(cls: type[Frame]) -> Frame:
    """An instance of ``cls`` with a distinctive value in every field."""
    values: dict[str, object] = {"conversation": "c7", "turn": 3, "time": 1.0 / 3.0}
    for f in dataclasses.fields(cls):
        if f.name in values:
            continue
        kind = str(f.type)
        if kind == "PCM":
            values[f.name] = np.array([-32768, -1, 0, 1, 32767], np.int16)
        elif kind == "int":
            values[f.name] = 22050
        elif kind == "float":
            values[f.name] = 0.1 + 0.2
        elif kind == "bool":
            values[f.name] = True
        elif kind == "str":
            values[f.name] = f"{f.name} ünïcode \"quoted\""
        elif kind.startswith("tuple[Word"):
            values[f.name] = (Word("hi", 0.1, 0.35, 0.99), Word("there", 0.4, 0.7, 0.5))
        elif kind.startswith("dict"):
            values[f.name] = {"digit": "5", "$odd": "key"}
        else:
            raise AssertionError(f"{cls.__name__}.{f.name}: no sample for {kind}")
    return cls(**values)  # type: ignore[arg-type]


FRAME_TYPES = [c for _, c in inspect.getmembers(frames, inspect.isclass)
               if issubclass(c, Frame) and c.__module__ == frames.__name__]


@pytest.mark.parametrize("cls", FRAME_TYPES, ids=lambda c: c.__name__)
def test_every_frame_type_round_trips_with_every_field(cls: type[Frame]) -> None:
    frame = sample(cls)
    back = round_trip(frame)
    assert type(back) is cls
    assert equal(back, frame)
    for f in dataclasses.fields(cls):
        value = getattr(back, f.name)
        if isinstance(value, np.ndarray):
            assert value.dtype == np.int16 and value.tobytes() == getattr(frame, f.name).tobytes()
            assert value.flags.writeable  # stages may work on it in place


def test_audio_is_bit_exact_and_stored_once() -> None:
    pcm = np.random.default_rng(1).integers(-32768, 32767, 16000, dtype=np.int16)
    blobs = Blobs()
    first = encode(UserAudio(conversation="c", turn=1, time=0.0, pcm=pcm, sample_rate=16000),
                   blobs)
    second = encode(AgentAudio(conversation="c", turn=1, time=0.5, pcm=pcm.copy(),
                               sample_rate=16000, text="x"), blobs)
    assert len(blobs.data) == pcm.nbytes  # same content: one copy
    assert first["$dataclass"][1]["pcm"] == second["$dataclass"][1]["pcm"]
    back = decode(first, Blobs(blobs.data))
    assert back.pcm.tobytes() == pcm.tobytes()


def test_other_arrays_keep_dtype_byte_order_and_shape() -> None:
    for array in (np.arange(12, dtype=">i4").reshape(3, 4),
                  np.array([0.1, -np.inf, np.nan], np.float32),
                  np.zeros((0,), np.int16)):
        back = round_trip(array)
        assert isinstance(back, np.ndarray)
        assert back.dtype == array.dtype and back.shape == array.shape
        assert back.tobytes() == array.tobytes()


def test_values_keep_their_types() -> None:
    value = {"tuple": (1, (2.5, "x")), "list": [None, True], 3: "int key",
             "$tag": "escaped", "np": np.float32(0.1), "nan": math.nan, "b": b"\x00\xff"}
    back = round_trip(value)
    assert equal(back, value)
    assert isinstance(back, dict) and type(back["np"]) is np.float32
    assert type(back["tuple"]) is tuple and type(back["tuple"][1]) is tuple


def test_spans_round_trip() -> None:
    span = Span("c", 2, "llm", "llm", 1.1, 2.2, {"text": "hi", "ttft": None, "n": 3})
    assert round_trip(span) == span


def test_unsupported_values_are_refused_by_name() -> None:
    with pytest.raises(TypeError, match="set"):
        encode({1, 2}, Blobs())


def test_damaged_references_are_reported() -> None:
    blobs = Blobs(b"\x00" * 4)
    with pytest.raises(ValueError, match="outside the blob data"):
        blobs.get({"dtype": "<i2", "shape": [4], "offset": 0, "bytes": 8})
    with pytest.raises(ValueError, match="not loaded"):
        decode({"$dataclass": ["nowhere.module:Thing", {}]}, blobs)
    with pytest.raises(ValueError, match="not a frame"):
        decode({"$dataclass": ["cascade.frames:PCM", {}]}, blobs)


def test_equal_compares_arrays_by_dtype_and_content() -> None:
    a = Transcript(conversation="c", turn=1, time=0.0, text="a", final=True)
    assert equal(a, dataclasses.replace(a))
    assert not equal(a, dataclasses.replace(a, text="b"))
    assert not equal(np.zeros(2, np.int16), np.zeros(2, np.int32))
    assert not equal(Event(conversation="c", turn=1, time=0, name="x"),
                     Event(conversation="c", turn=1, time=0.0, name="x"))  # int vs float
