"""msgpack in, msgpack out, with limits. Nothing is ever pickled.

Values are normalised once, on the way in: tuples become lists and every type
msgpack cannot carry is refused with a :class:`TypeError` naming it. Hashes are
taken over a canonical encoding (map keys sorted) so that equal values hash
equally on every machine and Python version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import msgpack

__all__ = [
    "MAX_KEY_BYTES",
    "check_key",
    "decode",
    "encode",
    "fresh_copy",
    "hash_value",
    "length_data",
    "normalize",
]

MAX_KEY_BYTES = 255
# Nesting deeper than this is refused; it keeps recursion bounded on hostile input.
MAX_DEPTH = 64


def check_key(key: object) -> str:
    """Return *key* if it is a valid state key, else raise TypeError/ValueError."""
    if not isinstance(key, str):
        raise TypeError(f"keys must be str, not {type(key).__name__}")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ValueError(f"key is longer than {MAX_KEY_BYTES} bytes in UTF-8: {key[:40]!r}...")
    return key


def normalize(value: Any, _depth: int = 0) -> Any:
    """Return a fresh copy of *value* in the form every peer will see.

    Tuples become lists; dict keys must be str. The copy means a caller that
    mutates its object after writing it cannot change what was written.
    """
    if _depth > MAX_DEPTH:
        raise ValueError(f"value is nested more than {MAX_DEPTH} levels deep")
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
            raise ValueError("integers must fit in 64 bits")
        if type(value) not in (type(None), bool, int, float, str, bytes):
            # Subclasses (IntEnum, str enums) would not survive the trip.
            return _base_scalar(value)
        return value
    if isinstance(value, (list, tuple)):
        return [normalize(item, _depth + 1) for item in value]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"dict keys in values must be str, not {type(k).__name__}")
            out[k] = normalize(v, _depth + 1)
        return out
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(
        f"p2pstate cannot store a value of type {type(value).__name__}; "
        "use None, bool, int, float, str, bytes, list or dict with str keys"
    )


def _base_scalar(value: Any) -> Any:
    for base in (bool, int, float, str):
        if isinstance(value, base):
            return base(value)
    if isinstance(value, bytes):
        return bytes(value)
    raise TypeError(f"p2pstate cannot store a value of type {type(value).__name__}")


def encode(obj: Any) -> bytes:
    """Encode a wire object or a normalised value."""
    return msgpack.packb(obj, use_bin_type=True)


def decode(data: bytes, *, max_size: int) -> Any:
    """Decode bytes from the network. Raises ValueError on anything malformed.

    msgpack bounds every length by the size of the buffer, so a frame cannot
    make us allocate more than its own size in containers."""
    if len(data) > max_size:
        raise ValueError(f"frame of {len(data)} bytes is over the {max_size} byte limit")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
        )
    except (
        ValueError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
    ) as exc:
        raise ValueError(f"malformed msgpack: {exc}") from None
    except Exception as exc:  # noqa: BLE001 (msgpack raises odd types on hostile input)
        raise ValueError(f"malformed msgpack: {type(exc).__name__}: {exc}") from None


def decode_all(data: bytes, *, max_size: int, max_objects: int) -> Iterator[Any]:
    """Decode the msgpack objects laid end to end in *data*, one at a time.

    Raises ValueError on anything malformed, on a truncated last object, and
    past *max_objects*, so a small frame cannot expand into millions of them.
    Objects before the fault have been yielded already."""
    if len(data) > max_size:
        raise ValueError(f"frame of {len(data)} bytes is over the {max_size} byte limit")
    unpacker = msgpack.Unpacker(
        raw=False, strict_map_key=True, use_list=True, max_buffer_size=max(len(data), 1)
    )
    unpacker.feed(data)
    count = 0
    while True:
        start = unpacker.tell()
        try:
            obj = unpacker.unpack()
        except msgpack.OutOfData:
            if start != len(data):
                raise ValueError("malformed msgpack: truncated") from None
            return
        except Exception as exc:  # noqa: BLE001 (msgpack raises odd types on hostile input)
            raise ValueError(f"malformed msgpack: {type(exc).__name__}: {exc}") from None
        count += 1
        if count > max_objects:
            raise ValueError(f"more than {max_objects} messages in one frame")
        yield obj


def fresh_copy(value: Any) -> Any:
    """A copy of a normalised value that shares nothing with it (lists and
    dicts are rebuilt; decoding is much faster than deepcopy)."""
    if isinstance(value, (list, dict)):
        return msgpack.unpackb(encode(value), raw=False)
    return value


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def hash_value(value: Any) -> str:
    """A stable hex digest of *value*, equal on every machine and Python version.

    Equal values (after normalisation: a tuple equals the list with the same
    items, dict order does not matter) give equal hashes.
    """
    packed = encode(_canonical(normalize(value)))
    return hashlib.sha256(packed).hexdigest()[:32]


def length_data(value: Any) -> int:
    """The encoded size of *value* in bytes, as it counts against ``max_value_size``."""
    return len(encode(normalize(value)))
