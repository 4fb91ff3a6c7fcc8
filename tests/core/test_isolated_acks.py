"""An isolated host acknowledges nothing, not even through its successor.

A host that hears no majority of its last agreed membership stops
acknowledging (README, *Majorities*): the other side may elect a host
without what it took meanwhile. Its successor answers a writer when it is
asked to acknowledge a change, so no path may ask it while the host is
isolated: a successor that says hello again (it missed changes across the
split) was asked at once, and the writer was told its write held.
"""

from __future__ import annotations

from simsession import Session

from p2pstate.core import host as hostmod
from p2pstate.core.writer import Outcome


def test_an_isolated_host_does_not_ask_a_returning_successor_to_acknowledge() -> None:
    s = Session(1)
    h, s1, s2, w, a, b = s.start(6)
    assert h.successor == s1.me.id
    s.net.partition({h.me.id, s2.me.id, w.me.id}, {s1.me.id, a.me.id, b.me.id})
    s.net.run(1.5)  # past peer_timeout: the host is isolated
    assert h.liveness.isolated_since is not None
    told: list[tuple[bool, Outcome]] = []

    def answered(outcome: Outcome) -> None:
        told.append((hostmod.durable_point(h) >= outcome.seq, outcome))

    s.net.write(w.me.id, (("set", "k", 1),), (), answered)
    s.net.run(0.5)
    s.net.heal()
    s.run_until(lambda: bool(told), 5.0)
    # answered only once the write is durable at a host that may acknowledge
    assert all(durable for durable, _ in told), (told, s.tail())
