"""Issue 14, goal 6, with real processes on loopback: a host that dies
(kill -9) resets its connections and is replaced on that suspicion; a frozen
host (SIGSTOP) resets nothing and is still found by the heartbeat timeout,
and a freeze shorter than host_timeout changes no host; a live host whose
connections are reset (``ss -K``, as root) answers the probes and stays host.
Outcomes are
asserted, not times (those are in benchmarks/run.py, rows 5a and 5c)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
from netkit import PeerProcess

Spawn = Callable[..., PeerProcess]


def _session(spawn: Spawn) -> list[PeerProcess]:
    peers = []
    for i in range(3):
        p = spawn(name=f"p{i}")
        p.wait_ready()
        peers.append(p)
    assert peers[0].cmd("info")["is_host"]
    peers[0].cmd("set", key="k", value=0)
    for p in peers:
        p.cmd("wait", key="k", value=0)
    return peers


def _wait_for(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def test_kill_9_of_the_host_is_suspected_and_a_survivor_writes(spawn: Spawn) -> None:
    host, successor, writer = _session(spawn)
    host.kill()
    writer.cmd("set", key="k", value=1, timeout=30)  # returns once acknowledged
    assert successor.cmd("info")["is_host"]
    assert successor.cmd("wait", key="k", value=1)["value"] == 1
    stats = [p.cmd("stats")["stats"] for p in (successor, writer)]
    # the survivors' transports saw the drop, and the failover came from it
    assert all(s.get("links_dropped", 0) >= 1 for s in stats), stats
    assert sum(s.get("suspicion_confirmed", 0) for s in stats) >= 1, stats


def test_a_frozen_host_is_replaced_by_the_heartbeat_timeout(spawn: Spawn) -> None:
    host, successor, writer = _session(spawn)
    os.kill(host.pid, signal.SIGSTOP)
    try:
        writer.cmd("set", key="k", value=2, timeout=30)
        assert successor.cmd("info")["is_host"]
        stats = [p.cmd("stats")["stats"] for p in (successor, writer)]
        assert all(s.get("suspected", 0) == 0 for s in stats), stats  # nothing reset
    finally:
        os.kill(host.pid, signal.SIGCONT)


def test_a_freeze_shorter_than_host_timeout_changes_no_host(spawn: Spawn) -> None:
    host, successor, writer = _session(spawn)
    epoch = host.cmd("info")["epoch"]
    os.kill(host.pid, signal.SIGSTOP)
    time.sleep(0.25)  # half of host_timeout
    os.kill(host.pid, signal.SIGCONT)
    writer.cmd("set", key="k", value=3, timeout=30)
    infos = [p.cmd("info") for p in (host, successor, writer)]
    assert [i["is_host"] for i in infos] == [True, False, False], infos
    assert {i["epoch"] for i in infos} == {epoch}, infos
    assert _wait_for(lambda: host.cmd("get", key="k")["value"] == 3, 5, "the write")


def _reset_connections_to(port: int) -> bool:
    """Abort every TCP connection to or from *port* on loopback (the kernel
    resets them: ``ss -K``, root only). False where that is not possible."""
    ok = True
    for side in ("dport", "sport"):
        cmd = ["ss", "-K", "-t", "dst" if side == "dport" else "src", "127.0.0.1"]
        cmd += [side, "=", f":{port}"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        ok = ok and done.returncode == 0
    return ok


@pytest.mark.skipif(shutil.which("ss") is None or os.geteuid() != 0, reason="needs ss -K, as root")
def test_resets_of_a_live_hosts_connections_change_no_host(spawn: Spawn) -> None:
    """A blip: every connection to the host is reset while it lives. The
    peers suspect it, probe it, it answers: no failover, and writes go on."""
    host, successor, writer = _session(spawn)
    epoch = host.cmd("info")["epoch"]
    port = int(host.cmd("info")["endpoint"].rsplit(":", 1)[1])
    for i in range(3):
        if not _reset_connections_to(port):
            pytest.skip("this kernel cannot abort sockets (ss -K)")
        time.sleep(0.3)
        writer.cmd("set", key="k", value=10 + i, timeout=30)
    stats = [p.cmd("stats")["stats"] for p in (successor, writer)]
    if not any(s.get("suspected", 0) for s in stats):
        pytest.skip("ss -K reset nothing here")
    infos = [p.cmd("info") for p in (host, successor, writer)]
    assert [i["is_host"] for i in infos] == [True, False, False], (infos, stats)
    assert {i["epoch"] for i in infos} == {epoch}, (infos, stats)
    assert sum(s.get("suspicion_cleared", 0) for s in stats) >= 1, stats
    assert sum(s.get("suspicion_confirmed", 0) for s in stats) == 0, stats
