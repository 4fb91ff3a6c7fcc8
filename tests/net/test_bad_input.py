"""Bad input to the public API, against real sessions on loopback (issue 15):
every call refuses it at once with a clear error, in the caller's thread, and
the peer goes on writing; a write that cannot be sent fails alone."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any

import pytest
from netkit import Join, eventually, run_cli

import p2pstate
from p2pstate import SharedState

LONE = "\ud800"
# Short enough that a write stuck behind a bad one fails the test quickly.
QUICK = {"write_timeout": 3.0}


def _refused_at_once(call: Callable[[], object], kind: type[Exception] = ValueError) -> str:
    """Run *call*; it must raise *kind* (never a bare UnicodeError) well
    before any timeout. Returns the message."""
    start = time.monotonic()
    with pytest.raises(kind) as excinfo:
        call()
    assert not isinstance(excinfo.value, UnicodeError), repr(excinfo.value)
    assert time.monotonic() - start < 1.0, "refused only after a timeout"
    return str(excinfo.value)


def _goes_on(writer: SharedState, reader: SharedState, key: str = "after") -> None:
    writer[key] = writer.get(key, 0) + 1
    expected = writer[key]
    eventually(lambda: reader.get(key) == expected)


@pytest.mark.parametrize("role", ["host", "joiner"])
def test_a_surrogate_key_is_refused_and_the_peer_goes_on(join: Join, role: str) -> None:
    a, b = join(**QUICK), join(**QUICK)
    s, other = (a, b) if role == "host" else (b, a)
    assert "surrogate" in _refused_at_once(lambda: s.__setitem__(LONE, 1))
    for call in (
        lambda: s.set("x" + LONE, 1, wait=False),
        lambda: s.set(LONE, 1, ephemeral=True, owner_only=True, ttl=5),
        lambda: s.__delitem__(LONE),
        lambda: s.update({LONE: 1}),
        lambda: s.update(LONE, "0" * 32, 1),
        lambda: s.apply_op(LONE, lambda v: v, create=True),
        lambda: s.get_if_changed(LONE, "0" * 32),
        lambda: s.version(LONE),
    ):
        _refused_at_once(call)
    _goes_on(s, other)
    _goes_on(other, s)


@pytest.mark.parametrize("role", ["host", "joiner"])
def test_a_surrogate_in_a_value_is_a_clear_valueerror(join: Join, role: str) -> None:
    a, b = join(**QUICK), join(**QUICK)
    s, other = (a, b) if role == "host" else (b, a)
    bad: list[Callable[[], object]] = [
        lambda: s.__setitem__("k", LONE),
        lambda: s.set("k", {"nested": [LONE]}, wait=False),
        lambda: s.set("k", {LONE: 1}),
        lambda: s.update(k=[LONE]),
        lambda: s.broadcast({"chat": LONE}),
        lambda: s.send(other.me.id, LONE),
        lambda: s.send(LONE, "hi"),
        lambda: s.set_profile({"name": LONE}),
        lambda: s.set_session_info(version=LONE),
        lambda: s.set_session_info(metadata={"mode": LONE}),
        lambda: s.set_session_info(metadata={LONE: "x"}),
        lambda: p2pstate.hash_value(LONE),
        lambda: p2pstate.length_data([LONE]),
    ]
    for call in bad:
        assert "surrogate" in _refused_at_once(call)
    s["k"] = 1
    _refused_at_once(lambda: s.update("k", LONE, 2))
    _refused_at_once(lambda: s.apply_op("k", lambda v: LONE))
    with s.transaction() as t:
        _refused_at_once(lambda: t.__setitem__("t", LONE))
        _refused_at_once(lambda: t.__setitem__(LONE, 1))
        t["t"] = 1
    _goes_on(s, other)
    assert s["t"] == 1 and s["k"] == 1


def test_an_unsendable_write_fails_alone(join: Join) -> None:
    """Below the API's checks: a write that reaches the runtime and cannot be
    encoded gets its own error; the writes after it are sent as usual."""
    a, b = join(**QUICK), join(**QUICK)
    for s, other in ((b, a), (a, b)):
        rt = s._rt
        pending = rt.submit((("set", LONE, 1),), (), wait=True)
        assert pending is not None
        outcome = rt.wait(pending, 2.0)
        assert outcome.status == "unsendable" and "surrogate" in str(outcome.detail)
        rt.submit((("set", "bad", object()),), (), wait=False)
        _goes_on(s, other)
        s.flush()
        assert s.stats["unsendable_writes"] == 2


def test_a_write_over_the_frame_limit_is_refused_and_the_peer_goes_on(join: Join) -> None:
    """Every value fits max_value_size, but together they are more than one
    message may carry: the host could never receive it."""
    opts = {**QUICK, "max_value_size": 20_000, "max_frame_size": 40_000}
    a, b = join(**opts), join(**opts)
    for s, other in ((b, a), (a, b)):
        many = {f"k{i}": "x" * 18_000 for i in range(5)}
        _refused_at_once(functools.partial(s.update, many), p2pstate.ValueTooLargeError)
        with pytest.raises(p2pstate.ValueTooLargeError), s.transaction() as t:
            for k, v in many.items():
                t[k] = v
        _goes_on(s, other)
        assert "k0" not in s and "k0" not in other


def test_flush_takes_a_duration(join: Join) -> None:
    s = join(**QUICK)
    bad = ((math.nan, ValueError), (math.inf, ValueError), (-1, ValueError), ("1", TypeError))
    for timeout, kind in bad:
        _refused_at_once(functools.partial(s.flush, timeout), kind)
    s.set("k", 1, wait=False)
    s.flush(5.0)
    assert s["k"] == 1


def test_numbers_at_the_edges_agree_on_both_peers(join: Join) -> None:
    a, b = join(**QUICK), join(**QUICK)
    b["n"] = [float("inf") * 0, -0.0, 0.0, True, 1, 2**64 - 1, -(2**63)]
    eventually(lambda: "n" in a)
    assert p2pstate.hash_value(a["n"]) == p2pstate.hash_value(b["n"])
    nan, minus_zero = a["n"][:2]
    assert math.isnan(nan) and math.copysign(1, minus_zero) == -1
    # A NaN made another way still compares-and-swaps.
    a.update("n", p2pstate.hash_value([-math.nan, -0.0, 0.0, True, 1, 2**64 - 1, -(2**63)]), 1)
    eventually(lambda: b["n"] == 1)
    with pytest.raises(p2pstate.UpdateFailedError):
        b.update("n", p2pstate.hash_value(True), 2)  # 1 and True are two values


@pytest.mark.parametrize(
    ("args", "options", "kind"),
    [
        (("app" + LONE,), {}, ValueError),
        (("app", "room" + LONE), {}, ValueError),
        (("app",), {"name": "bob" + LONE}, ValueError),
        (("app",), {"timeout": math.nan}, ValueError),
        (("app",), {"timeout": "5"}, TypeError),
        (("app",), {"profile": {"c": LONE}}, ValueError),
        (("app",), {"profile": {"c": object()}}, TypeError),
        (("app",), {"metadata": {"mode": LONE}}, ValueError),
        (("app",), {"version": LONE}, ValueError),
        (("app",), {"max_players": True}, ValueError),
        (("app",), {"secret": LONE}, ValueError),
        (("app",), {"write_timeout": math.nan}, ValueError),
        (("app",), {"heartbeat_interval": math.inf}, ValueError),
        (("app",), {"write_timeout": 1e300}, ValueError),
        (("app",), {"timeout": -1}, ValueError),
        (("app",), {"discovery_window": "1"}, TypeError),
        (("app",), {"max_value_size": 1.5}, TypeError),
        (("app",), {"log_keep": True}, TypeError),
        (("app",), {"profile": {"x": "a" * 70_000}}, p2pstate.ValueTooLargeError),
    ],
)
def test_join_refuses_bad_arguments_before_starting(
    args: tuple[str, ...], options: dict[str, Any], kind: type[Exception]
) -> None:
    _refused_at_once(lambda: p2pstate.join(*args, interfaces=["127.0.0.1"], **options), kind)


@pytest.mark.parametrize(
    ("given", "kind"),
    [
        ({"name": "bob" + LONE}, ValueError),
        ({"metadata": {"mode": LONE}}, ValueError),
        ({"version": LONE}, ValueError),
        ({"timeout": math.nan}, ValueError),
        ({"write_timeout": "1"}, TypeError),
        ({"no_such_option": 1}, TypeError),
    ],
)
def test_quick_join_refuses_bad_arguments_before_browsing(
    app_name: str, given: dict[str, Any], kind: type[Exception]
) -> None:
    call = functools.partial(
        p2pstate.quick_join, app_name, browse_timeout=2.0, interfaces=["127.0.0.1"], **given
    )
    _refused_at_once(call, kind)  # at once: before browse_timeout, and no session made


@pytest.mark.parametrize(
    ("options", "kind"),
    [
        ({"app": "a" + LONE}, ValueError),
        ({"app": "a", "session": LONE}, ValueError),
        ({"app": "a", "version": LONE}, ValueError),
        ({"app": "a", "mode": LONE}, ValueError),
        ({"app": "a", "timeout": math.nan}, ValueError),
    ],
)
def test_browse_refuses_bad_arguments(options: dict[str, Any], kind: type[Exception]) -> None:
    _refused_at_once(lambda: p2pstate.browse(interfaces=["127.0.0.1"], **options), kind)


def test_the_longest_names_work_and_one_more_byte_is_refused(app_name: str) -> None:
    """100 bytes of session name and player name (multi-byte characters, a
    dot, a backslash) travel through mDNS and the lobby intact."""
    session, name = "é.\\" + "é" * 47 + "xx", "é" * 50
    assert len(session.encode()) == len(name.encode()) == 100
    _refused_at_once(lambda: p2pstate.join(app_name, session + "x", interfaces=["127.0.0.1"]))
    _refused_at_once(lambda: p2pstate.join(app_name, name=name + "x", interfaces=["127.0.0.1"]))
    a = p2pstate.join(app_name, session, name=name, discovery_window=0.3, interfaces=["127.0.0.1"])
    try:
        found = p2pstate.browse(app_name, 1.0, session=session, interfaces=["127.0.0.1"])
        assert [info.session for info in found] == [session]
        assert a.me.name == name
    finally:
        a.close()


def test_the_cli_refuses_what_no_peer_can_hold(spawn: Callable[..., Any], app_name: str) -> None:
    """A file name decoded with surrogateescape as a key, a lone surrogate
    escaped in JSON, an int past 64 bits: a clear error, and the session
    goes on."""
    host = spawn(name="host")
    host.wait_ready()
    for args, problem in (
        (("\udcff.png", "1"), "surrogate"),
        (("k", '"\\ud800"'), "surrogate"),
        (("k", "18446744073709551616"), "64 bits"),
    ):
        done = run_cli("set", app_name, *args)
        assert done.returncode == 1 and problem in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    done = run_cli("del", app_name, "\udcff")
    assert done.returncode == 1 and "surrogate" in done.stderr, done.stderr
    assert run_cli("set", app_name, "ok", "1").returncode == 0
    assert host.cmd("get", key="ok")["value"] == 1


def test_acl_calls_refuse_an_identity_no_peer_can_hold(join: Join) -> None:
    a, b = join(**QUICK), join(**QUICK)
    for call in (a.authorize, a.unauthorize, a.ban, a.unban):
        message = _refused_at_once(functools.partial(call, "\ud800"))
        assert "not a peer id or an identity" in message, message
    a.authorize(b.me.id)
    eventually(lambda: len(b.authorized) == 1)
    _goes_on(a, b)


def test_edge_keys_and_values_outlive_a_restart_in_a_store(app_name: str, tmp_path: Any) -> None:
    """Empty and NUL-bearing keys, -0.0, NaN and the largest int go through
    an SQLite store and come back as they were."""
    edge = {"": 1, "a\x00b": 2, "\x00": 3, "é\U0001f600": -0.0, "nan": math.nan, "max": 2**64 - 1}
    path, home = str(tmp_path / "state.db"), str(tmp_path / "identity")
    options: dict[str, Any] = {"store": path, "identity_dir": home, "discovery_window": 0.3}
    s = p2pstate.join(app_name, interfaces=["127.0.0.1"], **options)
    try:
        s.update(edge)
    finally:
        s.close()
    s = p2pstate.join(app_name, interfaces=["127.0.0.1"], **options)
    try:
        assert sorted(s) == sorted(edge)
        assert {k: p2pstate.hash_value(s[k]) for k in s} == {
            k: p2pstate.hash_value(v) for k, v in edge.items()
        }
        assert math.copysign(1, s["é\U0001f600"]) == -1
    finally:
        s.close()


def test_a_conflict_on_a_value_nested_to_the_limit(join: Join) -> None:
    """A refused compare-and-swap reports the current value one level down;
    at the nesting limit that frame was dropped, and the writer (and every
    peer, for the Change) waited forever. Found by the API fuzzer."""
    a, b = join(**QUICK), join(**QUICK)
    deepest: Any = 0
    for _ in range(64):
        deepest = [deepest]
    b["deep"] = deepest
    eventually(lambda: "deep" in a)
    for s in (b, a):
        _refused_at_once(
            functools.partial(s.update, "deep", "0" * 32, 1), p2pstate.UpdateFailedError
        )
    stale = p2pstate.hash_value(deepest)
    b["deep"] = [deepest[0]]  # still 64 deep, another value
    assert a.apply_op("deep", lambda v: v[0]) == deepest[0]  # retried after the conflict
    with pytest.raises(p2pstate.UpdateFailedError):
        b.update("deep", stale, 2)
    _goes_on(a, b)
    _goes_on(b, a)
