"""Peers in separate processes on loopback: the behaviour a LAN game sees."""

from __future__ import annotations

import time
from collections.abc import Callable

from netkit import PeerProcess

Spawn = Callable[..., PeerProcess]


def _one_session(peers: list[PeerProcess]) -> None:
    infos = [p.cmd("info") for p in peers]
    hosts = {i["host"] for i in infos}
    assert len(hosts) == 1, infos
    assert sum(i["is_host"] for i in infos) == 1, infos
    for i in infos:
        assert sorted(i["peers"]) == sorted(j["id"] for j in infos), infos


def test_three_processes_share_state(spawn: Spawn) -> None:
    a = spawn(name="alice")
    assert a.wait_ready()["is_host"]
    b, c = spawn(name="bob"), spawn(name="carol")
    assert not b.wait_ready()["is_host"] and not c.wait_ready()["is_host"]
    b.cmd("set", key="greeting", value={"text": "hi", "n": [1, 2]})
    for p in (a, c):
        assert p.cmd("wait", key="greeting", value={"text": "hi", "n": [1, 2]})["value"] == {
            "text": "hi",
            "n": [1, 2],
        }
    c.cmd("set", key="from_c", value=3)
    a.cmd("set", key="from_a", value="x")
    for p in (a, b, c):
        p.cmd("wait", key="from_c", value=3)
        p.cmd("wait", key="from_a", value="x")
    dumps = [p.cmd("dump")["state"] for p in (a, b, c)]
    assert (
        dumps[0]
        == dumps[1]
        == dumps[2]
        == {
            "greeting": {"text": "hi", "n": [1, 2]},
            "from_c": 3,
            "from_a": "x",
        }
    )
    _one_session([a, b, c])


def test_two_processes_racing_apply_op_end_exact(spawn: Spawn) -> None:
    a = spawn()
    a.wait_ready()
    b = spawn()
    b.wait_ready()
    a.cmd("set", key="count", value=0)
    b.cmd("wait", key="count", value=0)
    a.cmd("incr", job="j", key="count", n=200)
    b.cmd("incr", job="j", key="count", n=200)
    assert a.cmd("join_job", job="j")["done"] == 200
    assert b.cmd("join_job", job="j")["done"] == 200
    assert a.cmd("wait", key="count", value=400)["value"] == 400
    assert b.cmd("wait", key="count", value=400)["value"] == 400


def test_late_peer_joins_the_running_session(spawn: Spawn) -> None:
    a = spawn()
    first = a.wait_ready()
    a.cmd("set", key="before", value=1)
    time.sleep(0.5)  # the host has been alone for a while: no second session may appear
    b = spawn()
    joined = b.wait_ready()
    assert not joined["is_host"]
    assert joined["host"] == first["id"]
    assert b.cmd("get", key="before")["value"] == 1
    _one_session([a, b])


def test_peers_started_together_end_with_one_host(spawn: Spawn) -> None:
    peers = [spawn() for _ in range(4)]
    for p in peers:
        p.wait_ready()
    # Two may both have hosted at first; mDNS lets them meet and one gives way.
    deadline = time.monotonic() + 10
    while True:
        infos = [p.cmd("info") for p in peers]
        if len({i["host"] for i in infos}) == 1 and len(infos[0]["peers"]) == 4:
            break
        assert time.monotonic() < deadline, infos
        time.sleep(0.1)
    _one_session(peers)
    peers[0].cmd("set", key="k", value="v")
    for p in peers:
        assert p.cmd("wait", key="k", value="v")["value"] == "v"
