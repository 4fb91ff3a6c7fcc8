"""A host that hears no majority says so (issue 17), on real processes on
loopback: ``SharedState.isolated`` and ``IsolationChanged`` events."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from netkit import Join, PeerProcess, eventually

import p2pstate


def test_host_of_two_is_isolated_when_its_peer_dies_then_goes_on(
    join: Join, spawn: Callable[..., PeerProcess]
) -> None:
    """A game of two: the peer is kill -9'ed. The host hears no majority, so
    it is isolated and its writes wait; after isolation_timeout (8 x
    host_timeout) it goes on alone and the waiting write completes."""
    host = join(name="host")
    peer = spawn(name="peer")
    peer.wait_ready()
    eventually(lambda: len(host.peers) == 2)
    assert host.is_host and not host.isolated
    host["before"] = 1
    peer.kill()
    eventually(lambda: host.isolated, timeout=5.0)
    host.set("during", 2, wait=False)  # waits for a majority, or for the timeout
    events: list[p2pstate.Event] = []

    def back() -> bool:
        events.extend(host.poll())
        return any(isinstance(e, p2pstate.IsolationChanged) and not e.isolated for e in events)

    eventually(back, timeout=10.0)
    assert not host.isolated
    flips = [e.isolated for e in events if isinstance(e, p2pstate.IsolationChanged)]
    assert flips[-2:] == [True, False]
    host.flush(timeout=5.0)  # the write made while isolated went through
    host["after"] = 3  # acknowledged alone now
    assert (host["before"], host["during"], host["after"]) == (1, 2, 3)


def test_in_majority_mode_a_host_of_two_never_goes_on_alone(
    join: Join, spawn: Callable[..., PeerProcess]
) -> None:
    """join(durability="majority"): the same game of two, the peer killed.
    The host stays isolated well past isolation_timeout and acknowledges
    nothing: a blocking write runs out its write_timeout (it stays queued,
    and waits for a majority)."""
    host = join(name="host", durability="majority", isolation_timeout=0.6, write_timeout=1.0)
    peer = spawn(name="peer")
    peer.wait_ready()
    eventually(lambda: len(host.peers) == 2)
    host["before"] = 1
    peer.kill()
    eventually(lambda: host.isolated, timeout=5.0)
    with pytest.raises(p2pstate.SessionLostError):
        host["during"] = 2  # 1 s: well past isolation_timeout (0.6 s)
    assert host.is_host and host.isolated


def test_join_checks_the_durability_options() -> None:
    with pytest.raises(ValueError, match="durability"):
        p2pstate.join("app", durability="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="isolation_timeout"):
        p2pstate.join("app", isolation_timeout=0.1)
