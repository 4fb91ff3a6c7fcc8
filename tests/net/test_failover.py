"""Host failover with real processes on loopback: kill -9 and graceful leave."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from netkit import PeerProcess

Spawn = Callable[..., PeerProcess]


def _wait_for(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _host_of(peers: list[PeerProcess]) -> PeerProcess | None:
    for p in peers:
        if p.cmd("info")["is_host"]:
            return p
    return None


def test_kill_host_three_times_during_apply_op(spawn: Spawn) -> None:
    """Four writers x 250 increments while three hosts in a row are kill -9'ed."""
    hosts = []
    for i in range(3):
        h = spawn(name=f"host{i}")
        h.wait_ready()
        hosts.append(h)
    assert hosts[0].cmd("info")["is_host"]
    writers = []
    for i in range(4):
        w = spawn(name=f"writer{i}")
        w.wait_ready()
        writers.append(w)
    writers[0].cmd("set", key="count", value=0)
    for w in writers:
        w.cmd("wait", key="count", value=0)
        w.cmd("incr", job="inc", key="count", n=250)
    live = hosts + writers
    for victim in hosts:
        seen = writers[-1].cmd("get", key="count")["value"]
        _wait_for(
            lambda seen=seen: writers[-1].cmd("get", key="count")["value"] >= seen + 40,
            30,
            "writers to make progress",
        )
        assert victim.cmd("info")["is_host"], "succession should make the next one host"
        victim.kill()
        live.remove(victim)
        _wait_for(lambda: _host_of(live), 10, "a new host")
    for w in writers:
        assert w.cmd("join_job", job="inc", timeout=90)["done"] == 250
    for w in writers:
        assert w.cmd("wait", key="count", value=1000)["value"] == 1000
    infos = [w.cmd("info") for w in writers]
    assert len({i["host"] for i in infos}) == 1
    assert infos[0]["epoch"] >= 4


def test_graceful_handoff_ten_times_with_a_writer(spawn: Spawn) -> None:
    hosts = []
    for i in range(10):
        h = spawn(name=f"h{i}")
        hosts.append(h)
    for h in hosts:
        h.wait_ready()
    _wait_for(
        lambda: len({h.cmd("info")["host"] for h in hosts}) == 1, 15, "the hosts to settle on one"
    )
    writer = spawn(name="writer")
    writer.wait_ready()
    writer.cmd("writes", job="w", prefix="k", n=1500)
    live = list(hosts)
    for _ in range(10):
        host = _wait_for(lambda: _host_of(live), 10, "a host")
        host.cmd("close", timeout=10)
        live.remove(host)
        time.sleep(0.1)
    assert writer.cmd("join_job", job="w", timeout=60)["done"] == 1500
    state = writer.cmd("dump")["state"]
    assert all(state.get(f"k{i}") == i for i in range(1500)), "a write was lost"
    assert writer.cmd("info")["is_host"]  # the last one standing hosts alone
    # Every handoff was explicit: the writer never had to time a host out.
    assert writer.cmd("stats")["stats"].get("host_lost", 0) == 0


def test_peer_started_after_a_failover_finds_the_new_host(spawn: Spawn) -> None:
    old = spawn(name="old")
    old.wait_ready()
    heir = spawn(name="heir")
    heir.wait_ready()
    heir.cmd("set", key="kept", value=[1, 2, 3])
    old.kill()  # its mDNS record lingers in caches: no goodbye was sent
    _wait_for(lambda: heir.cmd("info")["is_host"], 10, "the heir to take over")
    late = spawn(name="late")
    info = late.wait_ready()
    assert info["host"] == heir.cmd("info")["id"]
    assert not info["is_host"]
    assert late.cmd("get", key="kept")["value"] == [1, 2, 3]
    assert heir.cmd("info")["epoch"] == 2
