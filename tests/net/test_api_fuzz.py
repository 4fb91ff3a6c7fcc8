"""Hypothesis drives the public API of a live two-peer session on loopback with
arbitrary keys, values and arguments (issue 15). After every call: it either
succeeded and both replicas agree (the value as hash_value sees it), or it
raised one of the documented exceptions at once; after every example, both
peers still accept a normal write.

CI runs a bounded number of examples (``P2PSTATE_FUZZ_EXAMPLES``, default 150,
well under a minute). The long run is marked ``fuzz_long`` and skipped unless
``P2PSTATE_FUZZ_LONG=1``::

    P2PSTATE_FUZZ_LONG=1 pytest -m fuzz_long tests/net/test_api_fuzz.py
"""

from __future__ import annotations

import enum
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netkit import Join, eventually

import p2pstate
from p2pstate import SharedState

WRITE_TIMEOUT = 6.0
#: A refusal must come well before a write could time out.
AT_ONCE = WRITE_TIMEOUT / 3
#: What a bad call may raise (ValueTooLargeError is a ValueError). Never
#: SessionLostError (a write stuck), a bare P2PStateError (a refusal the API
#: should have made itself) or anything else.
DOCUMENTED = (
    TypeError,
    ValueError,  # BackupError and ValueTooLargeError are ValueErrors too
    KeyError,
    p2pstate.UpdateFailedError,
    p2pstate.DataUnchangedError,
    p2pstate.PermissionDeniedError,
    p2pstate.QuotaExceededError,
    p2pstate.RateLimitedError,
)
#: The session's limits as they start; each example ends by restoring them.
OPEN = {
    "writemode": p2pstate.ANY,
    "max_keys": 100_000,
    "max_total_bytes": 256 * 1024 * 1024,
    "write_rate": 5_000.0,
    "write_burst": 20_000,
}


class Color(str, enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Shout(str):
    def __str__(self) -> str:
        return "SHOUT"


# Every str shape: any code point, lone surrogates included.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
texts = (
    st.text(max_size=12)
    | any_text
    | st.sampled_from(["", "\x00", "a\x00b", "é" * 128, "k" * 256, "\ud800", "\udcff.png"])
    | st.builds(Shout, st.text(max_size=5))
    | st.just(Color.RED)
)
numbers = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([-0.0, math.inf * 0, -math.nan, True, False, Level.HIGH, 2**64, -(2**63) - 1])
)


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


odd = (
    st.sampled_from([object(), {1, 2}, 1j, bytearray(b"ba")])
    | st.builds(_nested, st.sampled_from([64, 65]))  # the nesting limit, either side
    | st.builds(bytes, st.just(70_000))  # over max_value_size
)
leaves = st.none() | texts | numbers | st.binary(max_size=8) | odd
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(texts, inner, max_size=4)
        | st.dictionaries(st.integers() | st.binary(max_size=2), inner, max_size=2)
    ),
    max_leaves=10,
)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """*good* two times in three, so that calls also meet state that exists."""
    return st.integers(0, 2).flatmap(lambda i: good if i else bad)


keys = mostly(st.sampled_from(["k1", "k2", "k3"]), texts | st.integers() | st.binary(max_size=3))
ttls = st.none() | st.sampled_from([1000.0, 0, -1, math.nan, math.inf, 1e9, True, "5"])
flags = st.booleans()


def call_strategy(peer_ids: list[str]) -> st.SearchStrategy[tuple[Any, ...]]:
    """(method name, arguments) of one public call."""
    peer = st.sampled_from(peer_ids) | texts
    oldhash = st.sampled_from(["0" * 32]) | texts | st.integers()
    setting = st.sampled_from(["max_keys", "max_total_bytes", "write_rate", "write_burst"])
    modes = mostly(st.sampled_from([p2pstate.ANY, p2pstate.UNBANNED_ONLY]), texts)
    limit = mostly(st.integers(1, 10**6), numbers | texts)
    return st.one_of(
        st.tuples(st.just("set"), keys, values, flags, flags, flags, ttls),
        st.tuples(st.just("del"), keys),
        st.tuples(st.just("read"), keys),
        st.tuples(st.just("update_many"), st.dictionaries(keys, values, max_size=4)),
        st.tuples(st.just("update_kwargs"), st.dictionaries(texts, values, max_size=3)),
        st.tuples(st.just("update_cas"), keys, oldhash, values, flags),
        st.tuples(st.just("apply_op"), keys, values, flags, values),
        st.tuples(st.just("get_if_changed"), keys, oldhash, flags),
        st.tuples(st.just("transaction"), st.lists(st.tuples(keys, values), max_size=3)),
        st.tuples(st.just("broadcast"), values, flags),
        st.tuples(st.just("send"), peer, values),
        st.tuples(st.just("profile"), values),
        st.tuples(
            st.just("info"),
            st.none() | texts | st.integers(),
            st.dictionaries(texts, texts | st.integers(), max_size=3),
            st.none() | st.integers(-2, 20_000) | st.booleans(),
        ),
        st.tuples(st.just("access"), st.dictionaries(setting, limit, max_size=2), modes),
        st.tuples(
            st.just("acl"), st.sampled_from(["authorize", "unauthorize", "ban", "unban"]), peer
        ),
        st.tuples(st.just("backup"), st.binary(max_size=40) | st.none()),
        st.tuples(st.just("hash"), values),
    )


def _set(s: SharedState, key: Any, value: Any, *flags_and_ttl: Any) -> None:
    wait, ephemeral, owner_only, ttl = flags_and_ttl
    s.set(key, value, wait=wait, ephemeral=ephemeral, owner_only=owner_only, ttl=ttl)
    s.flush()


def _read(s: SharedState, key: Any) -> None:
    assert (key in s) == (s.get(key, s) is not s)
    s.version(key)


def _current(s: SharedState, key: Any, oldhash: Any, use_current: bool) -> Any:
    if use_current and isinstance(key, str) and key in s:
        return p2pstate.hash_value(s[key])
    return oldhash


def _update_cas(s: SharedState, key: Any, oldhash: Any, new: Any, use_current: bool) -> None:
    s.update(key, _current(s, key, oldhash, use_current), new)


def _get_if_changed(s: SharedState, key: Any, oldhash: Any, use_current: bool) -> None:
    s.get_if_changed(key, _current(s, key, oldhash, use_current))


def _transaction(s: SharedState, writes: list[tuple[Any, Any]]) -> None:
    with s.transaction() as t:
        for key, value in writes:
            t[key] = value


def _broadcast(s: SharedState, payload: Any, wait: bool) -> None:
    s.broadcast(payload, wait=wait)
    s.flush()


def _info(s: SharedState, version: Any, metadata: Any, max_players: Any) -> None:
    s.set_session_info(version=version, metadata=metadata, max_players=max_players)


def _access(s: SharedState, limits: dict[str, Any], mode: Any) -> None:
    s.set_access(writemode=mode, **limits)


def _acl(s: SharedState, action: str, peer_id: Any) -> None:
    if action == "ban" and any(peer_id in (p.id, p.id.split(".")[0]) for p in s.peers):
        return  # banning a member of the pair would end the run, rightly
    getattr(s, action)(peer_id)


def _backup(s: SharedState, garbage: bytes | None) -> None:
    """A backup and its restore, or a restore of a file that is no backup."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "state.bak")
        if garbage is None:
            s.backup(path)
        else:
            with open(path, "wb") as f:
                f.write(garbage)
        s.restore(path)


def _hash(s: SharedState, value: Any) -> None:
    assert len(p2pstate.hash_value(value)) == 32 and p2pstate.length_data(value) > 0


CALLS: dict[str, Callable[..., Any]] = {
    "set": _set,
    "del": lambda s, key: s.__delitem__(key),
    "read": _read,
    "update_many": lambda s, items: s.update(items),
    "update_kwargs": lambda s, items: s.update(**items),
    "update_cas": _update_cas,
    "apply_op": lambda s, key, new, create, default: s.apply_op(
        key, lambda _old: new, create=create, defaultvalue=default
    ),
    "get_if_changed": _get_if_changed,
    "transaction": _transaction,
    "broadcast": _broadcast,
    "send": lambda s, peer_id, payload: s.send(peer_id, payload),
    "profile": lambda s, profile: s.set_profile(profile),
    "info": _info,
    "access": _access,
    "acl": _acl,
    "backup": _backup,
    "hash": _hash,
}


def _run(s: SharedState, call: tuple[Any, ...]) -> None:
    CALLS[call[0]](s, *call[1:])


def _view(s: SharedState) -> dict[str, Any] | None:
    """Everything both replicas must agree on, each value as its digest (NaN
    equals NaN there; a value nested to the limit is hashed at its own level).
    None while a change is being applied under our feet."""
    digest = p2pstate.hash_value
    try:
        data = {k: (digest(s[k]), s.version(k)) for k in list(s)}
    except KeyError:
        return None
    return {
        "data": data,
        "info": digest(s.session_info),
        "profiles": {p.id: digest(p.profile) for p in s.peers},
    }


def _check_call(s: SharedState, pair: tuple[SharedState, SharedState], call: Any) -> str:
    """Run one call and check its outcome; returns "ok" or "refused"."""
    start = time.monotonic()
    try:
        _run(s, call)
    except DOCUMENTED as exc:
        took = time.monotonic() - start
        assert not isinstance(exc, UnicodeError), f"{call[0]}: bare {exc!r}"
        assert took < AT_ONCE, f"{call[0]} raised {exc!r} only after {took:.2f} s"
        return "refused"
    a, b = pair
    eventually(lambda: _view(a) == _view(b) is not None, timeout=WRITE_TIMEOUT)
    if call[0] == "set" and call[3]:  # blocking: its value is there (wait=False ones
        # may be refused silently: an owner-only key, a quota the example lowered)
        held = [p.get(call[1], "<absent>") for p in pair]
        assert p2pstate.hash_value(a.get(call[1])) == p2pstate.hash_value(call[2]), (call, held)
    return "ok"


def _still_writes(pair: tuple[SharedState, SharedState], n: int) -> None:
    a, b = pair
    a.set_access(**OPEN)  # a is the admin; limits the example lowered would refuse these
    b["canary"] = n
    a["canary2"] = n
    eventually(lambda: a.get("canary") == n and b.get("canary2") == n)


def _fuzz(join: Join, examples: int) -> None:
    # Input is under test, not failover: a busy machine must not make the
    # pair split (a 0.5 s host_timeout did, in a 20,000-example run at load 12).
    steady = {"write_timeout": WRITE_TIMEOUT, "host_timeout": 3.0, "peer_timeout": 3.0}
    a = join(poll_events=False, **steady)
    b = join(poll_events=False, **steady)
    assert a.is_host and not b.is_host
    pair = (a, b)
    rounds = [0]
    seen: Counter[str] = Counter()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(st.tuples(st.booleans(), call_strategy([a.me.id, b.me.id])), max_size=5))
    def run(calls: list[tuple[bool, Any]]) -> None:
        for on_b, call in calls:
            seen[_check_call(b if on_b else a, pair, call)] += 1
        rounds[0] += 1
        _still_writes(pair, rounds[0])

    run()
    assert a.is_host and a.epoch == b.epoch == 1, "the pair failed over: not what is tested"
    assert seen["ok"] and seen["refused"], seen  # both sides of the property were exercised
    assert a.stats.get("unsendable_writes", 0) == b.stats.get("unsendable_writes", 0) == 0
    assert a.stats.get("internal_errors", 0) == b.stats.get("internal_errors", 0) == 0


# zeroconf's threads draw from `random` while hypothesis generates; not ours.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")


def test_no_input_breaks_a_live_session(join: Join) -> None:
    _fuzz(join, int(os.environ.get("P2PSTATE_FUZZ_EXAMPLES", "150")))


@pytest.mark.fuzz_long
@pytest.mark.timeout(3600)  # 20,000 examples: several minutes, more on a busy machine
@pytest.mark.skipif(not os.environ.get("P2PSTATE_FUZZ_LONG"), reason="set P2PSTATE_FUZZ_LONG=1")
def test_no_input_breaks_a_live_session_long(join: Join) -> None:
    _fuzz(join, 20_000)
