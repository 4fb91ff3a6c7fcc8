"""The faults of a LAN party on the bare core: pauses (SIGSTOP, a frozen
laptop) and link cuts (a Wi-Fi blip, a pulled cable: TCP holds the traffic
and delivers it late), with seven players of whom four run counters, as in
issue 17. A :class:`Party` tracks what each writer was told and what was
reported undone, so a test can check that nothing acknowledged was lost and
that every report is exact."""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pstate.core.node import Node, Role
from p2pstate.events import WritesRestored, WritesRolledBack
from p2pstate.sim import Counter, SimNetwork

KEY = "count"


@dataclass
class Party:
    net: SimNetwork
    nodes: list[Node]
    counters: list[Counter] = field(default_factory=list)

    @property
    def host(self) -> Node:
        hosts = [n for n in self.net.live_nodes() if n.role is Role.HOST]
        assert len(hosts) == 1, [(n.me.id[:6], n.epoch) for n in hosts]
        return hosts[0]

    def successor(self) -> Node:
        succ = self.host.successor_id
        assert succ is not None
        return self.net.nodes[succ]

    def writer(self) -> Node:
        """A writing peer that is neither host nor successor."""
        busy = {self.host.me.id, self.host.successor_id}
        return next(self.net.nodes[c.node_id] for c in self.counters if c.node_id not in busy)

    def run(self, seconds: float) -> None:
        def pump() -> bool:
            for c in self.counters:
                c.pump()
            return False

        self.net.run_until(pump, seconds)

    def run_until_one_host(self, limit: float = 10.0) -> None:
        """Run (writers on) until exactly one node hosts."""

        def one() -> bool:
            for c in self.counters:
                c.pump()
            return sum(1 for n in self.net.live_nodes() if n.role is Role.HOST) == 1

        assert self.net.run_until(one, limit), self.net.trace_tail(40)

    def settle(self, limit: float = 30.0) -> bool:
        """Let the counters finish and the session go quiet."""
        net = self.net

        def done() -> bool:
            for c in self.counters:
                c.pump()
            return (
                net.now > net.held_until
                and all(c.left == 0 for c in self.counters if c.node_id in net.alive)
                and net.quiet()
            )

        return net.run_until(done, limit)

    def acked(self) -> int:
        return sum(c.acked for c in self.counters)

    def reported(self) -> int:
        """Acknowledged increments reported undone (WritesRolledBack), less
        those reported back since (WritesRestored)."""
        net = 0
        for events in self.net.events.values():
            for e in events:
                if isinstance(e, (WritesRolledBack, WritesRestored)):
                    sign = 1 if isinstance(e, WritesRolledBack) else -1
                    # the counters write KEY only: those reported by number too
                    net += sign * (sum(1 for w in e.mine if KEY in w.keys) + e.more)
        return net

    def final(self) -> int:
        entry = self.host.replica.data.get(KEY)
        return entry.value if entry is not None else 0

    def check(self, *, may_lose: bool = False) -> None:
        """One host, equal replicas, and the count equal to the acknowledged
        increments less exactly those reported undone (none, unless
        *may_lose*)."""
        assert self.settle(), self.net.trace_tail(80)
        digests = {self.net.state_digest(n) for n in self.net.live_nodes()}
        assert len(digests) == 1, self.net.trace_tail(40)
        undone = self.acked() - self.final()
        assert undone == self.reported(), (undone, self.reported(), self.net.trace_tail(60))
        if not may_lose:
            assert undone == 0, (undone, self.net.trace_tail(60))


def party(
    seed: int,
    *,
    players: int = 7,
    writers: int = 4,
    per_writer: int = 400,
    discovery_interval: float = 0.2,
) -> Party:
    """*players* nodes in one session; the last *writers* run counters (the
    host is node 0 and writes too when *writers* == *players*). A long
    *discovery_interval* models mDNS that is slow to show a second host."""
    net = SimNetwork(seed, discovery_interval=discovery_interval)
    nodes = [net.add_node()]
    for _ in range(players - 1):
        net.run(0.02)
        nodes.append(net.add_node())
    assert net.run_until(net.quiet, 5.0), net.trace_tail()
    p = Party(net, nodes)
    p.counters = [Counter(net, n.me.id, KEY, per_writer) for n in nodes[players - writers :]]
    p.run(0.3)
    return p
