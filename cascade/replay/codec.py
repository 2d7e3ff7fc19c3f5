"""Frames, spans and the values they hold as JSON, with numpy arrays kept bit-exact.

``encode`` turns a value into JSON-ready data and ``decode`` turns it back into
an equal value of the same type: dataclasses (every frame, ``Word``, ``Span``)
by type name and init fields, tuples, dicts with any keys, numpy scalars, and
arrays, whose raw bytes go to a ``Blobs`` buffer (stored once per content)
with their dtype (byte order included) and shape. JSON floats round-trip
exactly. Tagged values are single-key objects whose key starts with ``$``; a
plain dict with such a key is itself tagged, so nothing is ambiguous.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib
import sys
from typing import Any

import numpy as np
import numpy.typing as npt


class Blobs:
    """Raw array bytes in one buffer; identical contents are stored once."""

    def __init__(self, data: bytes = b"") -> None:
        self._parts = [data] if data else []
        self._size = len(data)
        self._data: bytes | None = data
        self._seen: dict[bytes, int] = {}

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = b"".join(self._parts)
            self._parts = [self._data]
        return self._data

    def put(self, array: npt.NDArray[Any]) -> dict[str, Any]:
        if array.dtype.hasobject:
            raise TypeError(f"cannot record an array of {array.dtype} (objects, not numbers)")
        raw = np.ascontiguousarray(array).tobytes()
        key = hashlib.blake2b(raw, digest_size=16).digest() + array.dtype.str.encode()
        offset = self._seen.get(key)
        if offset is None:
            offset = self._seen[key] = self._size
            self._parts.append(raw)
            self._size += len(raw)
            self._data = None
        return {"dtype": array.dtype.str, "shape": list(array.shape), "offset": offset,
                "bytes": len(raw)}

    def get(self, ref: dict[str, Any]) -> npt.NDArray[Any]:
        dtype = np.dtype(str(ref["dtype"]))
        shape = tuple(int(n) for n in ref["shape"])
        offset, size = int(ref["offset"]), int(ref["bytes"])
        if offset < 0 or offset + size > self._size:
            raise ValueError(f"array at bytes {offset}..{offset + size} lies outside the "
                             f"blob data ({self._size} bytes)")
        count = int(np.prod(shape, dtype=np.int64))
        if count * dtype.itemsize != size:
            raise ValueError(f"array of shape {list(shape)} and dtype {dtype.str} cannot "
                             f"take {size} bytes")
        flat = np.frombuffer(self.data, dtype=dtype, count=count, offset=offset)
        return flat.reshape(shape).copy()


def type_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _resolve(name: str) -> type:
    """The dataclass a recording names; only modules already loaded, or Cascade's own."""
    module_name, _, qualname = name.partition(":")
    module = sys.modules.get(module_name)
    if module is None and (module_name == "cascade" or module_name.startswith("cascade.")):
        module = importlib.import_module(module_name)
    if module is None:
        raise ValueError(f"type {name} comes from module {module_name}, which is not "
                         "loaded: install the adapter package that defines it")
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if not (isinstance(found, type) and dataclasses.is_dataclass(found)):
        raise ValueError(f"{name} is not a frame or other dataclass")
    return found


def encode(value: Any, blobs: Blobs) -> Any:
    """JSON-ready data for ``value`` (arrays go to ``blobs``)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):
        return {"$number": [value.dtype.str, value.item()]}
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, np.ndarray):
        return {"$array": blobs.put(value)}
    if isinstance(value, list):
        return [encode(v, blobs) for v in value]
    if isinstance(value, tuple):
        return {"$tuple": [encode(v, blobs) for v in value]}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: encode(v, blobs) for k, v in value.items()}
        return {"$dict": [[encode(k, blobs), encode(v, blobs)] for k, v in value.items()]}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: encode(getattr(value, f.name), blobs)
                  for f in dataclasses.fields(value) if f.init}
        return {"$dataclass": [type_name(type(value)), fields]}
    raise TypeError(f"cannot record a value of type {type(value).__name__}: {value!r:.80}")


def decode(data: Any, blobs: Blobs) -> Any:
    """The value ``encode`` was given (raises ValueError on malformed data)."""
    if isinstance(data, list):
        return [decode(v, blobs) for v in data]
    if not isinstance(data, dict):
        return data
    if len(data) == 1:
        (tag, body), = data.items()
        if tag.startswith("$"):
            return _decode_tagged(tag, body, blobs)
    return {k: decode(v, blobs) for k, v in data.items()}


def _decode_tagged(tag: str, body: Any, blobs: Blobs) -> Any:
    if tag == "$tuple":
        return tuple(decode(v, blobs) for v in body)
    if tag == "$dict":
        return {decode(k, blobs): decode(v, blobs) for k, v in body}
    if tag == "$array":
        return blobs.get(body)
    if tag == "$number":
        dtype, value = body
        return np.dtype(str(dtype)).type(value)
    if tag == "$bytes":
        return base64.b64decode(body)
    if tag == "$dataclass":
        name, fields = body
        cls = _resolve(str(name))
        return cls(**{str(k): decode(v, blobs) for k, v in fields.items()})
    raise ValueError(f"unknown tag {tag}")


def equal(a: Any, b: Any) -> bool:
    """Deep equality that compares arrays by dtype and content, and types exactly."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal(v, b[k]) for k, v in a.items())
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return all(equal(getattr(a, f.name), getattr(b, f.name))
                   for f in dataclasses.fields(a))
    return bool(a == b) or (a != a and b != b)  # NaN equals NaN here
