"""codec: normalisation, stable hashes, limits."""

from __future__ import annotations

import enum
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstate.codec import (
    MAX_KEY_BYTES,
    check_key,
    decode,
    encode,
    hash_value,
    length_data,
    normalize,
)

# A value that exercises every storable type. Its digest is pinned: if this
# test fails, the hash encoding changed, and peers of different versions would
# disagree on every compare-and-swap. Change it only on purpose.
PINNED_VALUE = {
    "name": "ship",
    "pos": [1, 2.5],
    "tags": ("a", None),
    "ok": True,
    "raw": b"\x00\x01",
    "n": -7,
}
PINNED_DIGEST = "eaa745f12950453c904e7ac0ab8363e7"

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def test_hash_is_pinned() -> None:
    assert hash_value(PINNED_VALUE) == PINNED_DIGEST


def test_hash_of_simple_values_is_pinned() -> None:
    assert hash_value(None) == "e4ff5e7d7a7f08e9800a3e25cb774533"
    assert hash_value([]) == "9e076ceaf246b6003d9c2680a2b4cf0b"


def test_hash_is_32_hex_digits() -> None:
    digest = hash_value("x")
    assert len(digest) == 32
    int(digest, 16)


def test_dict_order_does_not_matter() -> None:
    a = {"a": 1, "b": {"x": 1, "y": 2}}
    b = {"b": {"y": 2, "x": 1}, "a": 1}
    assert list(a) != list(b)
    assert hash_value(a) == hash_value(b)


def test_tuples_equal_lists() -> None:
    assert hash_value((1, (2, 3))) == hash_value([1, [2, 3]])
    assert normalize((1, (2, 3))) == [1, [2, 3]]


def test_different_values_hash_differently() -> None:
    assert hash_value(1) != hash_value("1")
    assert hash_value([1, 2]) != hash_value([2, 1])
    assert hash_value(b"a") != hash_value("a")


def test_nan_is_storable() -> None:
    assert math.isnan(normalize(float("nan")))
    assert hash_value(float("nan")) == hash_value(float("nan"))


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ({1, 2}, "set"),
        (frozenset(), "frozenset"),
        (object(), "object"),
        ([1, {2}], "set"),
        ({"k": object()}, "object"),
        (1j, "complex"),
    ],
)
def test_unsupported_types_are_refused_by_name(value: Any, name: str) -> None:
    with pytest.raises(TypeError, match=rf"\b{name}\b"):
        hash_value(value)
    with pytest.raises(TypeError, match=rf"\b{name}\b"):
        normalize(value)


def test_dict_keys_must_be_str() -> None:
    with pytest.raises(TypeError, match="int"):
        normalize({1: 2})


def test_integers_must_fit_64_bits() -> None:
    assert normalize(2**64 - 1) == 2**64 - 1
    assert normalize(-(2**63)) == -(2**63)
    with pytest.raises(ValueError, match="64 bits"):
        normalize(2**64)
    with pytest.raises(ValueError, match="64 bits"):
        normalize(-(2**63) - 1)


def test_nesting_is_bounded() -> None:
    deep: Any = 1
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ValueError, match="nested"):
        normalize(deep)


def test_enum_subclasses_become_plain() -> None:
    class Color(enum.IntEnum):
        RED = 3

    out = normalize({"c": Color.RED})
    assert out == {"c": 3}
    assert type(out["c"]) is int


def test_normalize_copies() -> None:
    inner = [1]
    value = {"a": inner}
    out = normalize(value)
    inner.append(2)
    assert out == {"a": [1]}


def test_key_limits() -> None:
    assert check_key("k" * MAX_KEY_BYTES) == "k" * MAX_KEY_BYTES
    with pytest.raises(ValueError, match="255 bytes"):
        check_key("k" * (MAX_KEY_BYTES + 1))
    # the limit is in UTF-8 bytes, not characters
    assert check_key("é" * (MAX_KEY_BYTES // 2))
    with pytest.raises(ValueError):
        check_key("é" * (MAX_KEY_BYTES // 2 + 1))
    with pytest.raises(TypeError, match="int"):
        check_key(5)
    with pytest.raises(TypeError, match="bytes"):
        check_key(b"key")


def test_length_data_counts_the_encoding() -> None:
    assert length_data("abc") == 4
    assert length_data((1, 2)) == length_data([1, 2]) == 3


def test_decode_limits_and_errors() -> None:
    assert decode(encode([1, "a"]), max_size=100) == [1, "a"]
    with pytest.raises(ValueError, match="limit"):
        decode(encode("x" * 100), max_size=10)
    with pytest.raises(ValueError, match="malformed"):
        decode(b"\xc1", max_size=10)
    with pytest.raises(ValueError, match="malformed"):
        decode(encode(1) + b"\x00", max_size=10)


@given(values)
def test_hash_is_a_function_of_the_normalised_value(value: Any) -> None:
    assert hash_value(value) == hash_value(normalize(value))
    # what a peer decodes from the wire hashes the same as what was written
    assert hash_value(decode(encode(normalize(value)), max_size=1 << 20)) == hash_value(value)


@given(st.dictionaries(st.text(max_size=5), st.integers(-1000, 1000), max_size=6), st.randoms())
def test_hash_ignores_insertion_order(d: dict[str, int], rnd: Any) -> None:
    items = list(d.items())
    rnd.shuffle(items)
    assert hash_value(dict(items)) == hash_value(d)
