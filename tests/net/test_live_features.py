"""Presence, ephemeral / owner-only / ttl keys, messages and transactions
with real peers on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from netkit import Join, PeerProcess, eventually, saw_event

import p2pstate


def test_ephemeral_key_of_a_killed_owner_is_deleted(spawn: Callable[..., PeerProcess]) -> None:
    host = spawn(name="host")
    host.wait_ready()
    owner = spawn(name="owner")
    owner.wait_ready()
    watcher = spawn(name="watcher")
    watcher.wait_ready()
    owner.cmd("set", key="owner:pos", value=[1, 2], ephemeral=True)
    owner.cmd("set", key="owner:score", value=7)
    watcher.cmd("wait", key="owner:pos", value=[1, 2])
    owner.kill()
    assert watcher.cmd("wait", key="owner:pos", value=None)["value"] is None
    assert watcher.cmd("get", key="owner:score")["value"] == 7  # not ephemeral: stays
    assert host.cmd("get", key="owner:pos")["value"] is None
    assert saw_event(watcher, "KeyDeleted")


def test_owner_only_and_ttl(join: Join) -> None:
    a, b = join(), join()
    b.set("b:name", "bob", owner_only=True)
    with pytest.raises(p2pstate.PermissionDeniedError):
        a["b:name"] = "mallory"
    with pytest.raises(PermissionError):
        del a["b:name"]
    b["b:name"] = "bobby"
    assert a["b:name"] == "bobby" or eventually(lambda: a["b:name"] == "bobby") is None
    start = time.monotonic()
    a.set("flash", "boom", ttl=0.4)
    eventually(lambda: "flash" not in b, 5.0)
    assert time.monotonic() - start >= 0.35
    with pytest.raises(ValueError, match="ttl"):
        a.set("x", 1, ttl=-1)


def test_broadcast_send_and_profile(join: Join) -> None:
    a = join(name="ann", profile={"color": "red"})
    b = join(name="bob")
    c = join(name="cat")
    got: dict[str, list[p2pstate.Event]] = {"a": [], "b": [], "c": []}
    for label, s in (("a", a), ("b", b), ("c", c)):
        s.on_change(got[label].append)
    assert b.peers[0].profile == {"color": "red"}
    assert b.peers[0].joined_at > 1_600_000_000
    for i in range(5):
        a.broadcast({"chat": f"hi {i}"})
    b.send(c.me.id, "just for you")
    for label in ("b", "c"):
        eventually(
            lambda label=label: (
                len([e for e in got[label] if isinstance(e, p2pstate.Message)])
                >= (5 if label == "b" else 6)
            )
        )
    to_b = [e for e in got["b"] if isinstance(e, p2pstate.Message)]
    assert [m.payload for m in to_b] == [{"chat": f"hi {i}"} for i in range(5)]
    assert to_b[0].sender.name == "ann" and to_b[0].to is None
    to_c = [e for e in got["c"] if isinstance(e, p2pstate.Message)]
    assert to_c[-1].payload == "just for you" and to_c[-1].to == c.me.id
    assert not [e for e in got["a"] if isinstance(e, p2pstate.Message)], "not to the sender"
    assert len(a) == 0, "messages are not state"
    with pytest.raises(KeyError):
        a.send("0123456789abcdef", "nobody there")
    with pytest.raises(p2pstate.ValueTooLargeError):
        a.broadcast("x" * 100_000)
    with pytest.raises(p2pstate.ValueTooLargeError, match="profile"):
        b.set_profile({"bio": "x" * 10_000})  # a host would refuse it (MAX_PROFILE_BYTES)
    b.set_profile({"color": "blue", "ready": True})
    eventually(lambda: any(isinstance(e, p2pstate.PeerUpdated) for e in got["a"]))
    assert next(p for p in a.peers if p.id == b.me.id).profile == {"color": "blue", "ready": True}


def test_transactions(join: Join) -> None:
    a, b = join(), join()
    a.update({"gold": 10, "inventory": []})
    eventually(lambda: "inventory" in b)
    with b.transaction() as t:
        t["gold"] = t["gold"] - 7
        t["inventory"] = [*t["inventory"], "sword"]
    assert a["gold"] == 3 or eventually(lambda: a["gold"] == 3) is None
    assert a["inventory"] == ["sword"]
    with pytest.raises(p2pstate.UpdateFailedError), b.transaction() as t:
        gold = t["gold"]
        a["gold"] = 100  # someone else spends or earns meanwhile
        t["gold"] = gold - 1
        t["inventory"] = [*t["inventory"], "shield"]
    eventually(lambda: b["gold"] == 100)
    assert b["inventory"] == ["sword"], "a failed transaction writes nothing"
    with pytest.raises(RuntimeError), b.transaction() as t:
        t["gold"] = 0
        raise RuntimeError("changed my mind")
    assert b["gold"] == 100
    with b.transaction() as t:  # reading a missing key makes "still missing" a condition
        assert "shop" not in t
        t["shop"] = "open"
    assert a.get("shop") == "open" or eventually(lambda: a.get("shop") == "open") is None
