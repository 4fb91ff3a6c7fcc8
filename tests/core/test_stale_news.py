"""Regressions: messages that TCP held during a split and delivered after the
heal ("stale news"). Found by the network-namespace tests; reproduced here on
the bare core with a harness that holds what crosses a cut and releases it
link by link, in order, at a moment the test picks."""

from __future__ import annotations

from p2pstate.core.config import Config
from p2pstate.core.node import Node, Role
from p2pstate.events import WritesRolledBack
from p2pstate.messages import from_frame, to_frame

MAX = 1 << 24
#: Long enough for a side without a majority to go on alone.
LONE = Config().host_timeout + Config().lone_after + 0.5


class Lab:
    """Nodes named by letters; node ids order like the letters (a < b < ...)."""

    def __init__(self, names: str) -> None:
        self.ids = {k: k.lower() * 16 for k in names}
        self.name_of = {v: k for k, v in self.ids.items()}
        self.nodes = {
            k: Node(node_id=self.ids[k], name=k, endpoints=(f"sim://{self.ids[k]}",)) for k in names
        }
        self.side = dict.fromkeys(names, 0)
        self.dead: set[str] = set()
        self.blocked: set[tuple[str, str]] = set()
        self.wire: list[tuple[str, str, bytes]] = []
        self.held: list[tuple[str, str, bytes]] = []
        self.acked: dict[str, list[str]] = {k: [] for k in names}
        self.rolled: dict[str, list[str]] = {k: [] for k in names}
        self.pending: dict[tuple[str, int], str] = {}
        self.now = 0.0

    def flush(self, k: str) -> None:
        node = self.nodes[k]
        for s in node.take_outbox():
            to = self.name_of[s.to]
            cut = self.side[k] != self.side[to] or (k, to) in self.blocked
            (self.held if cut else self.wire).append((k, to, to_frame(s.msg)))
        for o in node.take_outcomes():
            key = self.pending.pop((k, o.req), None)
            if key and o.status == "ok":
                self.acked[k].append(key)
        for e in node.take_events():
            if isinstance(e, WritesRolledBack):
                self.rolled[k].extend(key for w in e.mine for key in w.keys)

    def deliver_one(self) -> None:
        _, to, frame = self.wire.pop(0)
        if to not in self.dead:
            self.nodes[to].receive(from_frame(frame, max_size=MAX), self.now)
            self.flush(to)

    def step(self, dt: float = 0.01) -> None:
        while self.wire:
            self.deliver_one()
        self.now += dt
        for k, node in self.nodes.items():
            if k not in self.dead:
                node.tick(self.now)
                self.flush(k)

    def settle(self, seconds: float) -> None:
        for _ in range(round(seconds / 0.01)):
            self.step()

    def start(self) -> None:
        first, *rest = self.nodes
        self.nodes[first].start_host("session", self.now)
        self.flush(first)
        for k in rest:
            self.nodes[k].join(self.ids[first], self.nodes[first].me.endpoints, self.now)
            self.flush(k)
            self.settle(0.1)

    def write(self, k: str, key: str) -> None:
        req = self.nodes[k].submit((("set", key, k),), (), now=self.now)
        self.pending[(k, req)] = key
        self.flush(k)

    def release(self, link: tuple[str, str]) -> None:
        self.blocked.discard(link)
        self.wire.extend(h for h in self.held if h[:2] == link)
        self.held[:] = [h for h in self.held if h[:2] != link]

    def meet(self, a: str, b: str) -> None:
        """mDNS: two hosts see each other's advertisement."""
        na, nb = self.nodes[a], self.nodes[b]
        na.observe_host(self.ids[b], nb.me.endpoints, nb.epoch, self.now)
        nb.observe_host(self.ids[a], na.me.endpoints, na.epoch, self.now)
        self.flush(a)
        self.flush(b)

    def hosts(self) -> list[tuple[int, str]]:
        return sorted(
            (n.epoch, k)
            for k, n in self.nodes.items()
            if k not in self.dead and n.role is Role.HOST
        )


def test_a_stale_failover_hello_does_not_make_a_second_host() -> None:
    """B, joining the host a merge sent it to, gets C's Hello from the split
    (asking B to take over from A): it must not become a second epoch-2 host."""
    lab = Lab("ABCD")
    lab.start()
    lab.side["C"] = lab.side["D"] = 1  # split {A, B} | {C, D}: C and D ask B (held)
    lab.settle(LONE)  # two of four: C hosts after isolation_timeout
    assert lab.nodes["C"].role is Role.HOST and lab.nodes["C"].epoch == 2
    lab.side["C"] = lab.side["D"] = 0  # heal; the C -> B connection comes up last
    lab.blocked.update({("C", "B"), ("D", "B")})
    # (C's Hellos to A, from while it waited for a majority, are dropped too:
    # with them A counts C as its own player and wins, another story)
    lab.held[:] = [h for h in lab.held if h[:2] not in (("D", "A"), ("C", "A"))]
    for link in {h[:2] for h in lab.held} - lab.blocked:
        lab.release(link)
    lab.meet("A", "C")
    nodes = lab.nodes
    while not (nodes["B"].role is Role.JOINING and nodes["B"].target_id == lab.ids["C"]):
        lab.deliver_one()
    stale = next(h for h in lab.held if h[:2] == ("C", "B"))
    nodes["B"].receive(from_frame(stale[2], max_size=MAX), lab.now)
    lab.flush("B")
    hosts = lab.hosts()
    assert len({epoch for epoch, _ in hosts}) == len(hosts), hosts
    lab.release(("C", "B"))
    lab.release(("D", "B"))
    lab.settle(3.0)
    assert len(lab.hosts()) == 1
    live = [n for k, n in nodes.items() if k not in lab.dead]
    assert len({(n.replica.seq, n.replica.last_origin) for n in live}) == 1


def test_a_welcome_answering_an_older_hello_is_not_taken() -> None:
    """D's Hellos from the split reach B only after the heal, and B answers
    each: D must take only the answer to its latest Hello, or it splices two
    histories, and acknowledged writes vanish unreported."""
    lab = Lab("ABCDE")
    lab.start()
    lab.write("A", "before")
    lab.settle(0.2)
    lab.side["C"] = lab.side["D"] = 1  # split {A, B, E} | {C, D}
    lab.settle(LONE / 2)  # C hosts {C, D} at epoch 2
    lab.dead.add("A")  # A crashes; B hosts {B, E} at epoch 2
    lab.settle(LONE / 2)
    for i in range(12):  # the {C, D} half writes more: its seq runs ahead
        lab.write("C" if i % 2 else "D", f"cd-{i}")
        lab.settle(0.05)
    lab.write("B", "be-0")
    lab.write("E", "be-1")
    lab.settle(0.3)
    assert lab.nodes["B"].role is lab.nodes["C"].role is Role.HOST
    lab.side["C"] = lab.side["D"] = 0  # heal; D -> B connects last
    lab.held[:] = [h for h in lab.held if h[1] not in lab.dead]
    lab.blocked.add(("D", "B"))
    for link in {h[:2] for h in lab.held} - lab.blocked:
        lab.release(link)
    lab.meet("B", "C")
    nodes = lab.nodes
    while not (nodes["D"].role is Role.JOINING and nodes["D"].target_id == lab.ids["B"]):
        lab.step(0.001)
    lab.release(("D", "B"))
    lab.settle(3.0)
    live = [k for k in nodes if k not in lab.dead]
    (_, host), *others = lab.hosts()
    assert not others
    data = {k: dict(nodes[k].replica.data) for k in live}
    for k in live:
        assert set(data[k]) == set(data[host]), f"{k} differs from the host {host}"
        undone = sorted(key for key in lab.acked[k] if key not in data[host])
        assert undone == sorted(lab.rolled[k]), f"{k}: lost {undone}, reported {lab.rolled[k]}"
