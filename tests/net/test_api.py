"""The SharedState API against real sessions on loopback (several peers in
this process; each has its own sockets, I/O thread and mDNS)."""

from __future__ import annotations

import secrets
import threading
import time

import pytest
from netkit import Join, eventually

import p2pstate
from p2pstate import SharedState


def test_mapping_basics(join: Join) -> None:
    a, b = join(), join()
    assert a.is_host and not b.is_host
    b["n"] = 1
    b["t"] = (1, "x", None)
    a["d"] = {"k": [1.5, b"raw", True]}
    assert a["n"] == 1  # a blocking write is visible everywhere it is acknowledged...
    assert b["t"] == [1, "x", None]  # tuples come back as lists
    eventually(lambda: "d" in b)
    assert b["d"] == {"k": [1.5, b"raw", True]}
    assert sorted(b) == sorted(a.keys()) == ["d", "n", "t"]
    assert len(a) == 3 and "n" in a and "zz" not in a and 5 not in a
    assert b.get("missing", "dflt") == "dflt"
    del b["n"]
    eventually(lambda: "n" not in a)
    with pytest.raises(KeyError):
        del b["n"]
    with pytest.raises(KeyError):
        _ = a["n"]


def test_bad_input_raises_clear_errors(join: Join) -> None:
    s = join(max_value_size=1000)
    with pytest.raises(TypeError, match="set"):
        s["x"] = {1, 2}
    with pytest.raises(TypeError, match="object"):
        s["x"] = object()
    with pytest.raises(TypeError, match="str"):
        s[3] = 1  # type: ignore[index]
    with pytest.raises(ValueError, match="255"):
        s["k" * 256] = 1
    with pytest.raises(p2pstate.ValueTooLargeError):
        s["big"] = "x" * 2000
    with pytest.raises(ValueError):  # ValueTooLargeError is a ValueError too
        s["big"] = b"x" * 2000
    assert p2pstate.length_data("x" * 2000) > 1000
    assert "x" not in s and "big" not in s
    with pytest.raises(TypeError, match="unknown option"):
        p2pstate.join("x", no_such_option=1)


def test_reads_are_copies(join: Join) -> None:
    a, b = join(), join()
    a["l"] = [1, 2]
    mine = a["l"]
    mine.append(3)
    assert a["l"] == [1, 2], "mutating a read value must not change the replica"
    events: list[p2pstate.Event] = []
    b.on_change(events.append)
    a["l2"] = {"x": [1]}
    eventually(lambda: any(isinstance(e, p2pstate.KeyChanged) and e.key == "l2" for e in events))
    changed = next(e for e in events if isinstance(e, p2pstate.KeyChanged) and e.key == "l2")
    changed.value["x"].append(2)
    assert b["l2"] == {"x": [1]}


def test_compare_and_swap_and_get_if_changed(join: Join) -> None:
    a, b = join(), join()
    a["motd"] = "hello"
    h = p2pstate.hash_value("hello")
    assert h == p2pstate.hash_value(b["motd"])
    with pytest.raises(p2pstate.DataUnchangedError):
        b.get_if_changed("motd", h)
    b.update("motd", h, "welcome")
    assert a["motd"] == "welcome" or (eventually(lambda: a["motd"] == "welcome") is None)
    with pytest.raises(p2pstate.UpdateFailedError):
        a.update("motd", h, "stale write")  # the value no longer hashes to h
    assert b["motd"] == "welcome"
    assert b.get_if_changed("motd", h) == "welcome"
    with pytest.raises(KeyError):
        a.update("nokey", h, 1)


def test_update_many_keys_is_one_change(join: Join) -> None:
    a, b = join(), join()
    versions: list[int] = []
    b.on_change(
        lambda e: versions.append(e.version) if isinstance(e, p2pstate.KeyChanged) else None
    )
    a.update({"x": 1, "y": 2}, z=3)
    eventually(lambda: len(versions) == 3)
    assert len(set(versions)) == 1, "an update() is one atomic change with one version"
    assert a.version("x") == a.version("z")


def test_apply_op(join: Join) -> None:
    a, b = join(), join()
    with pytest.raises(KeyError):
        a.apply_op("c", lambda v: v + 1)
    assert a.apply_op("c", lambda v: v + 1, create=True, defaultvalue=10) == 10
    assert b.apply_op("c", lambda v: v + 1) == 11

    def work(s: SharedState) -> None:
        for _ in range(100):
            s.apply_op("c", lambda v: v + 1)

    threads = [threading.Thread(target=work, args=(s,)) for s in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert a["c"] == 411
    eventually(lambda: b["c"] == 411)


def test_events_poll_and_presence(join: Join) -> None:
    a = join(name="alice")
    b = join(name="bob")
    eventually(lambda: any(isinstance(e, p2pstate.PeerJoined) for e in a.poll()))
    assert [p.name for p in a.peers] == ["alice", "bob"]
    assert a.host is not None and a.host.id == a.me.id == b.host.id  # type: ignore[union-attr]
    assert a.me.endpoint.startswith("tcp://127.0.0.1:")
    b["k"] = 1
    got: list[p2pstate.Event] = []
    eventually(
        lambda: bool(got.extend(a.poll()) or any(isinstance(e, p2pstate.KeyChanged) for e in got))
    )
    assert p2pstate.KeyChanged(key="k", value=1, version=b.version("k")) in got
    assert a.poll() == []  # drained, never blocks
    b.close()
    eventually(lambda: any(isinstance(e, p2pstate.PeerLeft) for e in a.poll()))
    assert [p.name for p in a.peers] == ["alice"]


def test_close_releases_everything(join: Join) -> None:
    before = set(threading.enumerate())
    a = join()
    b = join()
    b["x"] = 1
    assert b.closed is False
    a.close()  # the host hands over to b
    eventually(lambda: b.is_host)
    assert b["x"] == 1
    b.close()
    b.close()  # idempotent
    assert a.closed and b.closed
    with pytest.raises(p2pstate.SessionClosedError):
        b["y"] = 2
    time.sleep(0.2)
    assert not [t for t in threading.enumerate() if t not in before and t.is_alive()]


def test_host_advertises_every_allowed_address() -> None:
    from p2pstate.discovery import Discovery

    app = f"addr-{secrets.token_hex(4)}"
    s = p2pstate.join(app, interfaces=["127.0.0.1", "127.0.0.2"], discovery_window=0.3)
    try:
        assert len(s.me.endpoints) == 2
        with Discovery(["127.0.0.1"]) as d:
            records = d.browse(app, "default", 3.0, first=True)
        assert records and set(records[0].endpoints) == set(s.me.endpoints)
    finally:
        s.close()


def test_many_non_blocking_writes_then_flush(join: Join) -> None:
    """Regression: the wake-up queue once overflowed after ~2,000 queued writes."""
    a, b = join(), join()
    for i in range(20_000):
        b.set(f"k{i % 50}", i, wait=False)
    b.flush()
    assert b["k49"] == 19_999
    assert a["k49"] == 19_999 or (eventually(lambda: a["k49"] == 19_999) is None)
    assert b.stats.get("coalesced_writes", 0) > 0, "a frame-rate writer must not pile up writes"


def test_non_blocking_writes_keep_per_key_order(join: Join) -> None:
    a, b = join(), join()
    seen: list[int] = []
    a.on_change(lambda e: seen.append(e.value) if isinstance(e, p2pstate.KeyChanged) else None)
    for i in range(2000):
        b.set("pos", i, wait=False)
    b["pos"] = -1  # a blocking write after them wins
    assert a["pos"] == -1 or (eventually(lambda: a["pos"] == -1) is None)
    eventually(lambda: bool(seen) and seen[-1] == -1)
    values = seen[:-1]
    assert values == sorted(values), "a key's writes were applied out of order"
    assert values[-1] == 1999, "the newest non-blocking value must not be dropped"


def test_poll_events_off_keeps_nothing_for_poll(join: Join) -> None:
    s = join(poll_events=False, max_pending_events=10)
    seen: list[p2pstate.Event] = []
    s.on_change(seen.append)
    for i in range(50):
        s["k"] = i
    # Callbacks run on their own thread: they may still be catching up.
    eventually(lambda: len([e for e in seen if isinstance(e, p2pstate.KeyChanged)]) == 50)
    assert s.poll() == []
    assert s.stats.get("events_dropped", 0) == 0
    s.poll_events = True
    s["k"] = "kept"
    assert p2pstate.KeyChanged(key="k", value="kept", version=s.version("k")) in s.poll()
