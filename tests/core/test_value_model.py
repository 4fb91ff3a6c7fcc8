"""The value model's edge cases (issue 15): what a key or a value may be, what
it becomes on the way in, and how it hashes. The same functions check the
API's input and what arrives from the wire, so every peer holds one rule."""

from __future__ import annotations

import enum
import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstate.codec import (
    MAX_DEPTH,
    check_key,
    check_text,
    decode,
    encode,
    hash_value,
    length_data,
    normalize,
)
from p2pstate.errors import ProtocolError
from p2pstate.messages import Change, ChangeMsg, Result, Write, _op, from_frame, to_frame

LONE = "\ud800"  # a lone surrogate: a Python str, but not Unicode text UTF-8 can carry


def _clean_value_error(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """A ValueError of p2pstate's own, not msgpack's UnicodeEncodeError."""
    assert not isinstance(excinfo.value, UnicodeError), repr(excinfo.value)
    assert "surrogate" in str(excinfo.value)


@pytest.mark.parametrize(
    "key", [LONE, "a" + LONE, "\udcff.png", "ok/\udc80"], ids=["lone", "tail", "escape", "path"]
)
def test_a_key_with_a_lone_surrogate_is_refused(key: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        check_key(key)
    _clean_value_error(excinfo)


@pytest.mark.parametrize(
    "value",
    [LONE, [1, LONE], {"k": LONE}, {LONE: 1}, {"a": [{"b": ("x", LONE)}]}],
    ids=["str", "in-list", "dict-value", "dict-key", "deep"],
)
def test_a_value_with_a_lone_surrogate_is_refused_clearly(value: Any) -> None:
    for check in (normalize, hash_value, length_data):
        with pytest.raises(ValueError) as excinfo:
            check(value)
        _clean_value_error(excinfo)


def test_valid_unicode_outside_the_bmp_is_fine() -> None:
    value = {"emoji \U0001f600": "\U0001f600 é 中"}
    assert decode(encode(normalize(value)), max_size=100) == value
    assert check_key("\U0001f600") == "\U0001f600"


def test_check_text_names_the_field() -> None:
    assert check_text("name", "alice") == "alice"
    with pytest.raises(ValueError, match="name") as excinfo:
        check_text("name", "al" + LONE)
    _clean_value_error(excinfo)
    with pytest.raises(TypeError, match="name"):
        check_text("name", b"alice")


def test_empty_and_nul_keys_are_keys() -> None:
    assert check_key("") == ""
    assert check_key("a\x00b") == "a\x00b"


def _bits(x: float) -> str:
    return struct.pack(">d", x).hex()


def test_every_nan_is_one_value() -> None:
    """NaNs made by arithmetic differ in sign bit (inf * 0 is negative on x86);
    stored, hashed or compared-and-swapped, a NaN is one value."""
    made = float("inf") * 0
    negative = -float("nan")
    assert math.isnan(made) and math.isnan(negative)
    assert _bits(normalize(made)) == _bits(normalize(negative)) == _bits(math.nan)
    assert hash_value(made) == hash_value(negative) == hash_value(float("nan"))
    assert hash_value([made]) == hash_value([math.nan])
    assert _bits(decode(encode(normalize({"x": negative})), max_size=100)["x"]) == _bits(math.nan)


def test_minus_zero_and_number_types_keep_apart() -> None:
    """Values equal under Python's == but of another type or sign are
    different values: they hash differently, so a compare-and-swap tells them
    apart, and each comes back as it went in."""
    distinct = [0, 0.0, -0.0, False, 1, 1.0, True]
    assert len({hash_value(v) for v in distinct}) == len(distinct)
    back = decode(encode(normalize(distinct)), max_size=100)
    assert [(type(v), _bits(float(v))) for v in back] == [
        (type(v), _bits(float(v))) for v in distinct
    ]


def test_infinities_are_values() -> None:
    assert normalize([math.inf, -math.inf]) == [math.inf, -math.inf]


class Color(str, enum.Enum):
    RED = "red"


class Lying(str):
    def __str__(self) -> str:
        return "something else"


class Raw(bytes):
    def __bytes__(self) -> bytes:
        return b"forged"


class Level(enum.IntEnum):
    HIGH = 3


class Fraction(float):
    def __float__(self) -> float:
        return 0.0


def test_subclasses_become_their_base_with_the_same_content() -> None:
    """A str subclass is stored as the text it holds (as msgpack or json would
    send it), not as whatever its __str__ says: Color.RED is "red", not
    "Color.RED"."""
    out = normalize([Color.RED, Lying("x"), Level.HIGH, Fraction(2.5), Raw(b"b")])
    assert out == ["red", "x", 3, 2.5, b"b"]
    assert [type(v) for v in out] == [str, str, int, float, bytes]
    assert hash_value(Color.RED) == hash_value("red")


def test_subclass_keys_become_str() -> None:
    key = check_key(Color.RED)
    assert key == "red" and type(key) is str
    out = normalize({Color.RED: 1, Lying("y"): 2})
    assert out == {"red": 1, "y": 2}
    assert all(type(k) is str for k in out)


class Loud(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        return [("forged", 1)]


def test_dict_subclasses_store_what_they_hold() -> None:
    out = normalize(Loud(real=2))
    assert out == {"real": 2} and type(out) is dict


def test_two_keys_that_become_one_are_refused() -> None:
    class Twin(str):
        def __hash__(self) -> int:
            return id(self)

        def __eq__(self, other: object) -> bool:
            return self is other

    with pytest.raises(ValueError, match="twice"):
        normalize({Twin("k"): 1, Twin("k"): 2})


def test_nesting_limit_is_exact() -> None:
    ok: Any = 1
    for _ in range(MAX_DEPTH):
        ok = [ok]
    assert hash_value(ok)
    with pytest.raises(ValueError, match="nested"):
        normalize([ok])
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(ValueError, match="nested"):
        normalize(looped)


def test_the_wire_holds_the_same_rule() -> None:
    """What the API refuses, a peer's Write cannot sneak in either; a NaN from
    the wire is the one NaN too."""
    with pytest.raises(ProtocolError):
        _op(["set", "k", _nest(MAX_DEPTH + 2)])
    op = _op(["set", "k", -float("nan")])
    assert _bits(op[2]) == _bits(math.nan)


def _nest(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


# What the API accepts, the wire carries and every peer decodes alike: the
# property behind "nothing that passed validation may fail later".
_any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=8)
_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**65), max_value=2**65)
    | st.floats(allow_nan=True)
    | _any_text
    | st.binary(max_size=8)
    | st.sampled_from([Color.RED, Level.HIGH, Lying("x"), Raw(b"r"), bytearray(b"y")])
)
_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner)
        | st.dictionaries(_any_text, inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(key=_any_text, value=_values, oldhash=_any_text)
def test_what_the_api_accepts_every_peer_decodes_alike(key: str, value: Any, oldhash: str) -> None:
    try:
        plain_key, plain = check_key(key), normalize(value)
        oldhash = check_text("oldhash", oldhash)
    except (TypeError, ValueError) as exc:
        assert not isinstance(exc, UnicodeError)
        return
    ops = (("set", plain_key, plain), ("msg", "", plain), ("profile", {"v": plain}))
    msg = Write(
        sender="a.1", epoch=1, req=1, acked_upto=0, ops=ops, conds=(("hash", key, oldhash),)
    )
    got = from_frame(to_frame(msg), max_size=1 << 20)
    assert isinstance(got, Write)
    assert got.ops[0][1] == plain_key and got.conds[0][2] == oldhash
    assert hash_value(got.ops[0][2]) == hash_value(plain) == hash_value(value)


def test_a_conflict_on_a_value_nested_to_the_limit_still_decodes() -> None:
    """A refused compare-and-swap carries the current value one level down
    ({"key", "exists", "value"}) in the Result and in the Change every peer
    applies: a value nested to the limit must not make that frame undecodable
    (it was dropped, and the writer and every peer waited forever). Found by
    the API fuzzer (issue 15)."""
    deepest = _nest(MAX_DEPTH)
    assert normalize(deepest) == deepest
    detail = {"key": "k", "exists": True, "value": deepest}
    result = Result(sender="h.1", epoch=1, req=3, status="conflict", detail=detail, seq=9)
    got = from_frame(to_frame(result), max_size=1 << 20)
    assert isinstance(got, Result) and got.detail == detail
    change = Change(
        seq=9, epoch=1, origin="h.1", writer="p.1", req=3, status="conflict", detail=detail
    )
    sent = ChangeMsg(sender="h.1", epoch=1, change=change, ack=True)
    back = from_frame(to_frame(sent), max_size=1 << 20)
    assert isinstance(back, ChangeMsg) and back.change.detail == detail
