"""A host loses its link (no FIN, no RST: its switch port goes down) in the middle
of a writer's stream; later the cable comes back."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from netlab import Lan, Worker, equal_states, one_host, unavailable_reason, wait_for

_REASON = unavailable_reason()
if _REASON is not None:
    pytest.skip(_REASON, allow_module_level=True)

pytestmark = pytest.mark.netns


def _state(w: Worker) -> dict[str, object]:
    state: dict[str, object] = w.cmd("dump")["state"]
    return state


def _settled(peers: list[Worker]) -> bool:
    """One host that every peer follows, at one epoch, and equal states."""
    return one_host(peers) and equal_states(peers) is not None


def test_host_link_down_then_back(make_lan: Callable[[int], Lan], app_name: str) -> None:
    lan = make_lan(3)
    host = lan.spawn(0, app_name, name="host")
    assert host.wait_ready()["is_host"]
    successor = lan.spawn(1, app_name, name="successor")
    assert not successor.wait_ready()["is_host"]
    writer = lan.spawn(2, app_name, name="writer")
    writer.wait_ready()
    wait_for(lambda: len(host.cmd("info")["peers"]) == 3, 10, "all three to join")
    assert host.cmd("info")["peers"] == [host.id, successor.id, writer.id]

    writer.cmd("stream", prefix="k", interval=0.005)
    wait_for(lambda: writer.cmd("info")["acked"] >= 50, 10, "the writer to get going")

    lan.cut(0)
    cut_at = time.monotonic()
    wait_for(lambda: successor.cmd("info")["is_host"], 5, "the successor to take over")
    takeover_s = time.monotonic() - cut_at
    before = writer.cmd("info")["acked"]
    wait_for(
        lambda: writer.cmd("info")["acked"] >= before + 100, 10, "the writer to go on after it"
    )
    done = writer.cmd("stop_stream")
    assert done["stopped"]
    assert done["errors"] == []
    acked = done["acked"]

    survivors = [successor, writer]
    wait_for(lambda: _settled(survivors), 5, "the survivors to settle")
    for peer in survivors:
        state = _state(peer)
        missing = [k for k in acked if state.get(k) != int(k[1:])]
        assert missing == [], f"acknowledged writes lost on {peer.pid}: {missing[:10]}"
        assert peer.cmd("info")["host"] == successor.id

    # Still cut off, the old host believes it hosts: alone, its write is acknowledged.
    old = host.cmd("info")
    assert old["is_host"]
    assert old["epoch"] < successor.cmd("info")["epoch"]
    host.cmd("set", key="isolated", value=1)

    lan.restore(0)
    restored_at = time.monotonic()
    everyone = [host, successor, writer]
    wait_for(lambda: _settled(everyone), 10, "the old host to rejoin as a peer")
    rejoin_s = time.monotonic() - restored_at
    info = host.cmd("info")
    assert not info["is_host"]
    assert info["host"] == successor.id
    state = _state(host)
    assert "isolated" not in state
    assert all(state.get(k) == int(k[1:]) for k in acked)
    rolled = host.cmd("events")["rolled"]
    assert {(r["writer"], key) for r in rolled for key in r["keys"]} == {(host.id, "isolated")}
    assert all(r["mine"] for r in rolled)
    for peer in (successor, writer):
        assert peer.cmd("events")["rolled"] == []
    print(f"takeover {takeover_s:.2f} s after the cut; rejoined {rejoin_s:.2f} s after restore")
