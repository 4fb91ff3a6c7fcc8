"""msgpack in, msgpack out, with limits. Nothing is ever pickled.

Values are normalised once, on the way in: tuples become lists and every type
msgpack cannot carry is refused with a :class:`TypeError` naming it. Hashes are
taken over a canonical encoding (map keys sorted) so that equal values hash
equally on every machine and Python version.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterator
from typing import Any

import msgpack

__all__ = [
    "MAX_KEY_BYTES",
    "check_key",
    "check_text",
    "decode",
    "encode",
    "fresh_copy",
    "hash_value",
    "length_data",
    "normalize",
    "normalize_detail",
]

MAX_KEY_BYTES = 255
# Nesting deeper than this is refused; it keeps recursion bounded on hostile input.
MAX_DEPTH = 64


def check_text(label: str, text: object) -> str:
    """Return *text* as a plain str if UTF-8 can carry it, else raise
    TypeError/ValueError naming *label*.

    Python lets a str hold lone surrogates (``"\\ud800"``, or bytes decoded
    with ``errors="surrogateescape"``); they are not Unicode text, cannot be
    encoded, and no peer could ever receive them, so they are refused here,
    before anything is queued."""
    if not isinstance(text, str):
        raise TypeError(f"{label} must be str, not {type(text).__name__}")
    if type(text) is not str:
        text = str.__str__(text)  # the text it holds, whatever its __str__ says
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"{label} holds a lone surrogate {text[exc.start]!r} at position "
                f"{exc.start}: only valid Unicode text can be shared: {text[:40]!r}"
            ) from None
    return text


def check_key(key: object) -> str:
    """Return *key* as a plain str if it is a valid state key, else raise
    TypeError/ValueError. Any valid Unicode text of at most MAX_KEY_BYTES
    bytes in UTF-8 is a key, "" and keys holding NUL included."""
    if not isinstance(key, str):
        raise TypeError(f"keys must be str, not {type(key).__name__}")
    key = check_text("key", key)
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise ValueError(f"key is longer than {MAX_KEY_BYTES} bytes in UTF-8: {key[:40]!r}...")
    return key


#: The one NaN every peer stores and hashes: NaNs made by arithmetic differ
#: in their sign and payload bits, which msgpack would carry as they are.
_NAN = struct.unpack(">d", bytes.fromhex("7ff8000000000000"))[0]


def normalize(value: Any, _depth: int = 0) -> Any:
    """Return a fresh copy of *value* in the form every peer will see.

    Tuples become lists; dict keys must be str; subclasses of the stored
    types become their base type with the same content; every NaN becomes
    one NaN; str must be valid Unicode. The copy means a caller that mutates
    its object after writing it cannot change what was written.
    """
    if _depth > MAX_DEPTH:
        raise ValueError(f"value is nested more than {MAX_DEPTH} levels deep")
    kind = type(value)
    if kind is str:
        return value if value.isascii() else check_text("a str in the value", value)
    if value is None or kind is bool or kind is bytes:
        return value
    if kind is int:
        if not -(2**63) <= value < 2**64:
            raise ValueError("integers must fit in 64 bits")
        return value
    if kind is float:
        return _NAN if math.isnan(value) else value
    if isinstance(value, (list, tuple)):
        return [normalize(item, _depth + 1) for item in value]
    if isinstance(value, dict):
        return _normalize_dict(value, _depth)
    if isinstance(value, (int, float, str, bytes)):
        # Subclasses (IntEnum, str enums) would not survive the trip.
        return normalize(_base_scalar(value), _depth)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(
        f"p2pstate cannot store a value of type {type(value).__name__}; "
        "use None, bool, int, float, str, bytes, list or dict with str keys"
    )


def normalize_detail(detail: Any) -> Any:
    """A write's outcome detail, as normalize, but one level deeper: it may
    hold a stored value inside a map (a conflict's {"key", "exists",
    "value"}), and any value that may be stored must be reportable too."""
    return normalize(detail, -1)


def _normalize_dict(value: dict[Any, Any], depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # dict.items: what the dict holds, as msgpack would see it, not an override.
    for given, v in dict.items(value):
        if not isinstance(given, str):
            raise TypeError(f"dict keys in values must be str, not {type(given).__name__}")
        k = check_text("a dict key in the value", given)
        if k in out:
            raise ValueError(f"dict key {k[:40]!r} appears twice once made a plain str")
        out[k] = normalize(v, depth + 1)
    return out


def _base_scalar(value: Any) -> Any:
    """The plain value a subclass instance holds (its base's own conversion,
    never an override: a ``(str, Enum)`` member is its text, not its name)."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    return bytes(memoryview(value))  # the buffer, not an override of __bytes__


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
