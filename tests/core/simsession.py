"""Helpers for the protocol-core tests: everything runs in the simulator, no
sockets, no sleeps, no threads. Times are simulated seconds.

(A module of its own rather than conftest.py: other test folders have a
conftest.py too, and ``from conftest import`` would find whichever came first.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from p2pstate.core.access import Access
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


# ---------------------------------------------------------------- players by id
# Node ids of the form "<identity>.<instance>" ("bob.2" is player bob started
# again), for the tests of permissions, bans and owner-only keys.


def start_players(
    *ids: str, access: Access | None = None, seed: int = 1
) -> tuple[Session, list[Node]]:
    """A session created by ``ids[0]`` (its admin) that the others then join, in order."""
    session = Session(seed, access=access)
    nodes = [session.net.add_node(ids[0], node_id=ids[0])]
    for node_id in ids[1:]:
        session.net.run(0.02)
        nodes.append(session.net.add_node(node_id, node_id=node_id))
    assert session.settle(), session.tail()
    return session, nodes


def done(session: Session, node: Node, *ops: tuple[Any, ...]) -> Outcome:
    """Write *ops* from *node* and wait for the outcome."""
    out = session.write(node, ops)
    assert session.run_until(lambda: bool(out)), session.tail()
    return out[0]


def join_player(session: Session, node_id: str) -> Node:
    """Start *node_id* and run until it is in, or refused."""
    node = session.net.add_node(node_id, node_id=node_id)
    assert session.run_until(lambda: node.ready or node.refused is not None), session.tail()
    if node.ready:
        assert session.settle(), session.tail()
    return node


def member_ids(node: Node) -> list[str]:
    return [m.id for m in node.replica.members]
