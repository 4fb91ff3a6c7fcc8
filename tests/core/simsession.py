"""Helpers for the protocol-core tests: everything runs in the simulator, no
sockets, no sleeps, no threads. Times are simulated seconds.

(A module of its own rather than conftest.py: other test folders have a
conftest.py too, and ``from conftest import`` would find whichever came first.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from p2pstate.core.config import Config
from p2pstate.core.node import Node, Role
from p2pstate.core.writer import Outcome
from p2pstate.sim import SimNetwork

# The library's defaults, spelt out: the scenario tests reason in these units.
CONFIG = Config(heartbeat_interval=0.1, host_timeout=0.5, peer_timeout=0.5, hello_retry=0.1)


class Session:
    """A SimNetwork with a few conveniences for writing scenarios."""

    def __init__(self, seed: int = 1, **kwargs: Any) -> None:
        kwargs.setdefault("config", CONFIG)
        self.net = SimNetwork(seed, **kwargs)

    def start(self, n: int, *, spacing: float = 0.02) -> list[Node]:
        """Start *n* nodes one after another and wait until they are one session."""
        nodes = [self.net.add_node("n0")]
        for i in range(1, n):
            self.net.run(spacing)
            nodes.append(self.net.add_node(f"n{i}"))
        assert self.settle(), self.tail()
        return nodes

    def settle(self, limit: float = 10.0) -> bool:
        return self.net.run_until(self.net.quiet, limit)

    def write(
        self,
        node: Node,
        ops: tuple[tuple[Any, ...], ...],
        conds: tuple[tuple[Any, ...], ...] = (),
    ) -> list[Outcome]:
        """Submit a write; the returned list fills with its outcome."""
        out: list[Outcome] = []
        self.net.write(node.me.id, ops, conds, out.append)
        return out

    def put(self, node: Node, key: str, value: Any) -> Outcome:
        """Write and wait for the outcome."""
        out = self.write(node, (("set", key, value),))
        assert self.net.run_until(lambda: bool(out), 5.0), self.tail()
        return out[0]

    def run_until(self, done: Callable[[], bool], limit: float = 5.0) -> bool:
        return self.net.run_until(done, limit)

    def live(self) -> list[Node]:
        return self.net.live_nodes()

    def host(self) -> Node:
        hosts = [n for n in self.live() if n.role is Role.HOST]
        assert len(hosts) == 1, (hosts, self.tail())
        return hosts[0]

    def values(self, node: Node) -> dict[str, Any]:
        return {k: e.value for k, e in node.replica.data.items()}

    def digests(self) -> set[str]:
        return {self.net.state_digest(n) for n in self.live()}

    def members(self, node: Node) -> list[str]:
        return [m.id for m in node.replica.members]

    def tail(self, lines: int = 40) -> str:
        return f"seed {self.net.seed}\n{self.net.trace_tail(lines)}"
