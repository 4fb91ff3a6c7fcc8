"""A deterministic simulated LAN for the protocol core.

It drives many :class:`~p2pstate.core.node.Node` objects in one process with
a simulated clock and a seeded random source: per-link FIFO delivery with
random delay, crashes, partitions (messages across a cut are lost, as when a
cable is pulled), pauses of one node (SIGSTOP, a frozen laptop: it handles
nothing, its inbound messages queue), link cuts of one node (its traffic both
ways is held, as TCP holds it, and delivered in order when the link returns)
slow nodes (a starved CPU: it reads its sockets late, its timers fire late,
what it sends leaves late), connection resets (a crashed process's kernel
resets its connections: every
other node's transport sees the drop within a few ms and tells its core,
``Node.suspect``; a blip resets a live node's connections the same way) and
a stand-in for mDNS. Every message goes through the real
wire codec. The same seed gives the same run, so a failing test prints a seed
and a trace that reproduce it exactly.

:class:`SimNetwork` holds the nodes and the clock and steps them; the links
and their faults are :class:`~p2pstate.simfaults.Wire`,
:class:`~p2pstate.simfaults.Faults` and :class:`~p2pstate.simfaults.Slow`,
and the methods a test calls to cause a fault (``crash``, ``pause``,
``cut``, ``slow``, ``partition``...) come from the mixin
:class:`~p2pstate.simfaults.FaultControls`; the mDNS stand-in is ``_Mdns`` (hosts
seen once started) and ``_StartupLan`` (copies started together).

Copies started together (``start_together``) run the runtime's own start-up
election (core/startup.py) on what they see of each other's mDNS records,
which :class:`StartFaults` can lose, delay or cut short.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .codec import hash_value
from .core.access import Access
from .core.config import Config
from .core.node import Node, Role, Send
from .core.ops import Cond, IfAbsent, IfHash, Op, Set
from .core.startup import Advert, Decision, Fail, Host, Join, Startup, candidate_notice
from .core.status import Status
from .core.writer import Outcome
from .errors import ProtocolError
from .events import Event
from .messages import (
    WIRE_VERSION,
    ChangeMsg,
    Hello,
    Message,
    Redirect,
    Refused,
    Welcome,
    from_frame,
    to_frame,
)
from .simfaults import FaultControls, Faults, Slow, Wire

__all__ = ["Counter", "SimNetwork", "StartFaults", "random_start_faults"]

_MAX_FRAME = 16 * 1024 * 1024


class SimNetwork(FaultControls):
    """Nodes on a simulated network, stepped by ``run``; its fault controls
    (``crash``, ``pause``, ``partition``...) are :class:`~p2pstate.simfaults.FaultControls`."""

    def __init__(
        self,
        seed: int,
        *,
        config: Config | None = None,
        min_delay: float = 0.0002,
        max_delay: float = 0.003,
        tick: float = 0.01,
        discovery_interval: float = 0.2,
        trace_messages: bool = False,
        access: Access | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.config = config or Config()
        #: Modes and limits of every session a node here creates.
        self.access = access
        # The links and what goes wrong on them (simfaults.py).
        self._wire = Wire(self.rng, min_delay, max_delay)
        self._faults = Faults(self._wire)
        self._slow = Slow(self.rng)
        self.tick_interval = tick
        self.discovery_interval = discovery_interval
        self.now = 0.0
        self.nodes: dict[str, Node] = {}
        self.alive: set[str] = set()
        self.group = self._faults.group  # partition group of each node
        self.trace: list[str] = []
        self.trace_messages = trace_messages
        self.on_outcome: dict[str, Callable[[Outcome], None]] = {}
        #: Every node that hosted at each epoch (recorded whenever a node acts).
        self.hosts_by_epoch: dict[int, set[str]] = {}
        #: The same per (session id, epoch): a node that found no host to join
        #: starts a session of its own, at epoch 1 too, until the two merge.
        self.hosts_by_term: dict[tuple[str, int], set[str]] = {}
        #: The events each node reported, in order (``Node.take_events``).
        self.events: dict[str, list[Event]] = {}
        self._seen: dict[str, tuple[Role, int]] = {}
        self._next_tick = 0.0
        self._next_discovery = 0.0
        self._mdns = _Mdns(self)  # hosts seen, after start-up
        #: Frames that failed to decode and were dropped.
        self.bad_frames = 0
        self._lan = _StartupLan(self)  # copies started together
        #: Paused nodes, and nodes whose link is cut.
        self.paused = self._faults.paused
        self.cut_off = self._faults.cut_off
        # (receiver, sender) of the fresh-connection frame being handled
        self._answering: tuple[str, str] | None = None
        # how late the frames being flushed leave (a slow node's writes)
        self._sending_late = 0.0

    # ------------------------------------------------------------ population

    def add_node(
        self,
        name: str | None = None,
        *,
        host: bool | None = None,
        node_id: str | None = None,
        initial: tuple[tuple[str, Any, int, str, int, float], ...] = (),
        initial_seq: int = 0,
        stored_access: Access | None = None,
    ) -> Node:
        """Start a node: it joins a visible host, or hosts a new session
        (starting from *initial* at *initial_seq* and *stored_access*, as
        from a store).
        *node_id* (``"<identity>.<instance>"``) restarts an identity."""
        node = self._make_node(name, node_id)
        node_id = node.me.id
        visible = self._mdns.visible_hosts(node_id)
        if host is True or (host is None and not visible):
            node.start_host(
                f"s{self.rng.getrandbits(32):08x}",
                self.now,
                access=self.access,
                initial=initial,
                initial_seq=initial_seq,
                stored_access=stored_access,
            )
            self._log(node_id, "hosts a new session")
        else:
            best = max(visible, key=lambda n: n.rank())  # as the runtime chooses
            node.join(best.me.id, best.me.endpoints, self.now)
            self._mdns.join_started[node_id] = self.now
            self._log(node_id, f"joins {best.me.id[:6]}")
        self._flush(node)
        return node

    def _make_node(self, name: str | None, node_id: str | None) -> Node:
        node_id = node_id or f"{self.rng.getrandbits(64):016x}"
        if node_id in self.nodes:
            raise ValueError(f"node id {node_id!r} is taken")
        node = Node(
            node_id=node_id,
            name=name or f"n{len(self.nodes)}",
            endpoints=(f"sim://{node_id}",),
            config=self.config,
        )
        self.nodes[node_id] = node
        self.alive.add(node_id)
        self.group[node_id] = 0
        self.events[node_id] = []
        return node

    def leave(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.leave(self.now)
        self._log(node_id, f"leaves ({node.role.name})")
        self._flush(node)

    def active(self, node_id: str) -> bool:
        """Alive and not paused: its timers run and its game can write."""
        return node_id in self.alive and node_id not in self.paused

    # ------------------------------------------------------------ driving

    def write(
        self,
        node_id: str,
        ops: tuple[tuple[Any, ...], ...],
        conds: tuple[tuple[Any, ...], ...] = (),
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> int:
        node = self.nodes[node_id]
        req = node.submit(ops, conds, now=self.now)
        if on_outcome is not None:
            self.on_outcome[f"{node_id}/{req}"] = on_outcome
        # a slow machine's I/O thread picks the write up late
        self._sending_late = self._slow.draw(node_id)
        try:
            self._flush(node)
        finally:
            self._sending_late = 0.0
        return req

    def run(self, duration: float) -> None:
        self.run_until(lambda: False, duration)

    def run_until(self, done: Callable[[], bool], limit: float) -> bool:
        end = self.now + limit
        while self.now < end:
            if done():
                return True
            self._step(end)
        return done()

    def _step(self, end: float) -> None:
        nxt = min(self._next_tick, self._next_discovery, end)
        if self._wire.reset_due(nxt):
            self._deliver_reset()
            return
        if self._wire.due(nxt):
            self._deliver_frame()
            return
        self.now = nxt
        if self.now >= self._next_discovery:
            self._next_discovery = self.now + self.discovery_interval
            self._mdns.discover()
        if self.now >= self._next_tick:
            self._next_tick = self.now + self.tick_interval
            self._lan.tick()
            for nid in sorted(self.alive - self.paused):
                if not self._slow.timer_due(nid, self.now):
                    continue  # a slow node's timers fire late
                node = self.nodes[nid]
                node.tick(self.now)
                self._flush(node)

    def _deliver_frame(self) -> None:
        """The next frame reaches its node (or a fault keeps it)."""
        at, order, to, frame, sender = self._wire.pop()
        self.now = max(self.now, at)
        fresh = order in self._wire.fresh
        self._wire.fresh.discard(order)
        arrived = order in self._slow.deferred
        self._slow.deferred.discard(order)
        alive = to in self.alive
        faults = self._faults
        if faults.intercepts(to, frame, sender, alive=alive, fresh=fresh, arrived=arrived):
            return
        if alive and not arrived and self._slow.behind(to, self.now):
            # a slow node reads it late, after what it read before
            late = self._wire.push(self._slow.handled_at(to, self.now), to, frame, sender)
            self._slow.deferred.add(late)
            if fresh:
                self._wire.fresh.add(late)
            return
        if to in self.alive:
            node = self.nodes[to]
            try:
                msg = from_frame(frame, max_size=_MAX_FRAME)
            except ProtocolError as exc:
                # what an adapter does: drop the frame, count it, go on
                self.bad_frames += 1
                self._log(to, f"drops a bad frame: {exc}")
                return
            if self.trace_messages:
                self._log(to, f"<- {msg.sender[:6]} {_describe(msg)}")
            # its answer goes back over the connection it came on
            self._answering = (to, sender) if fresh else None
            if not self._lan.hello(to, msg):
                node.receive(msg, self.now)
            self._flush(node)
            self._answering = None

    def _deliver_reset(self) -> None:
        at, order, to, about = self._wire.pop_reset()
        self.now = max(self.now, at)
        if to not in self.alive:
            return
        if order in self._slow.deferred:
            self._slow.deferred.discard(order)
        elif self._slow.behind(to, self.now):  # its socket monitor is read late too
            late = self._wire.push_reset(self._slow.handled_at(to, self.now), to, about)
            self._slow.deferred.add(late)
            return
        if not self.active(to) or {to, about} & self.cut_off:
            self._faults.hold_reset(to, about)
            return
        node = self.nodes[to]
        self._log(to, f"suspects {about[:6]}")
        node.suspect(about, self.now)
        self._flush(node)

    def flush(self, node: Node) -> None:
        """Send what *node* queued: for a test that called one of its methods
        directly (the simulator flushes after everything it does itself)."""
        self._flush(node)

    def _flush(self, node: Node) -> None:
        nid = node.me.id
        seen = (node.role, node.epoch)
        if self._seen.get(nid) != seen:
            self._seen[nid] = seen
            self._log(nid, f"is {node.role.name} at epoch {node.epoch} seq {node.replica.seq}")
            if node.role is Role.HOST and nid in self.alive:
                self.hosts_by_epoch.setdefault(node.epoch, set()).add(nid)
                term = (node.replica.session_id, node.epoch)
                self.hosts_by_term.setdefault(term, set()).add(nid)
        if node.outbox:
            alive = nid in self.alive
            for send in node.take_outbox():
                if alive:
                    self._post(nid, send.to, send.msg, fresh=self._fresh(nid, send))
        if node.outcomes:
            for outcome in node.take_outcomes():
                callback = self.on_outcome.pop(f"{nid}/{outcome.req}", None)
                if callback is not None:
                    callback(outcome)
        if node.events:
            events = node.take_events()
            if nid in self.alive:
                self.events[nid].extend(events)

    def _fresh(self, nid: str, send: Send) -> bool:
        """Whether *send* goes over a connection of its own: a probe
        (``Send.fresh``), or the answer to one, which the runtime's host
        sends back over the probe's connection (``Transport``)."""
        answer = isinstance(send.msg, (Welcome, Redirect, Refused))
        return send.fresh or (answer and self._answering == (nid, send.to))

    def _post(self, nid: str, to: str, msg: Message, *, fresh: bool = False) -> None:
        """Send *msg* from *nid* to *to* over their link, or over a fresh
        connection (lost across a cut or a partition: ``Faults.loses_fresh``)."""
        if to not in self.nodes:
            return
        frame = to_frame(msg)
        if fresh:
            if self._faults.loses_fresh(nid, to):
                self._log(nid, f"fresh connection to {to[:6]} not made")
            else:
                self._wire.push_fresh(self.now + self._sending_late, nid, to, frame)
        elif not self._faults.blocks(nid, to, frame):  # a partition loses or holds it
            self._wire.send(self.now + self._sending_late, nid, to, frame)

    # ------------------------------------------------------------ start-up

    def start_together(
        self,
        node_ids: list[str],
        *,
        window: float = 0.5,
        timeout: float = 5.0,
        record_delay: float = 0.1,
        faults: StartFaults | None = None,
        machine: type[Startup] = Startup,
    ) -> list[Node]:
        """Start copies at the same moment, each running the start-up election
        of the real runtime (:class:`~p2pstate.core.startup.Startup`): it
        advertises a candidate record, browses for *window*, then joins or
        hosts as its machine decides. A record reaches the others
        *record_delay* after it is published (mDNS announces are not instant).
        *faults* spoil what each copy sees of the others' records and Hellos;
        *machine* may be a variant (a test disabling a rule shows what the
        rule is for)."""
        return self._lan.start(
            node_ids,
            window=window,
            timeout=timeout,
            record_delay=record_delay,
            faults=faults,
            machine=machine,
        )

    def starting(self) -> bool:
        """Some copy started together is still deciding."""
        return self._lan.starting()

    # ------------------------------------------------------------ checks

    def live_nodes(self) -> list[Node]:
        return [self.nodes[n] for n in sorted(self.alive) if self.nodes[n].role is not Role.CLOSED]

    def quiet(self) -> bool:
        """Settled: every live node is ready, there is one host, every live node
        lists exactly the live nodes as members, no write is pending and all
        hold the same seq."""
        live = self.live_nodes()
        if not live or any(n.role not in (Role.HOST, Role.PEER) for n in live):
            return False
        hosts = [n for n in live if n.role is Role.HOST]
        if len(hosts) != 1 or any(n.writer.pending for n in live):
            return False
        ids = {n.me.id for n in live}
        if any({m.id for m in n.replica.members} != ids for n in live):
            return False
        return len({n.replica.seq for n in live}) == 1

    def state_digest(self, node: Node) -> str:
        r = node.replica
        return hash_value(
            {
                "data": {k: [e.value, e.version] for k, e in r.data.items()},
                "members": [m.id for m in r.members],
                "host": r.host_id,
                "seq": r.seq,
                "access": r.access.to_wire(),
            }
        )

    def _log(self, who: str, what: str) -> None:
        self.trace.append(f"{self.now:9.4f} {who[:6]:>6} {what}")

    def trace_tail(self, lines: int = 60) -> str:
        """The end of the trace, for a failing test to print."""
        return "\n".join(self.trace[-lines:])


@dataclass
class StartFaults:
    """What goes wrong while copies start together (see start_together)."""

    #: (observer, subject): the observer never sees the subject's candidate record.
    lost: set[tuple[str, str]] = field(default_factory=set)
    #: (observer, subject) -> how many seconds late the observer sees the
    #: subject's candidate record. (Host records are never lost nor late.)
    late: dict[tuple[str, str], float] = field(default_factory=dict)
    #: (sender, receiver) -> seconds after the receiver's start before which
    #: the sender's Hellos to it do not arrive (they arrive then, in order).
    hellos_late: dict[tuple[str, str], float] = field(default_factory=dict)
    #: node -> seconds after its start when it crashes if still starting.
    crash: dict[str, float] = field(default_factory=dict)
    #: node -> how much later than the others it starts.
    offset: dict[str, float] = field(default_factory=dict)
    #: node -> its own join() timeout, when it is not the default.
    timeout: dict[str, float] = field(default_factory=dict)


def random_start_faults(rng: random.Random, node_ids: list[str]) -> StartFaults:
    """Seeded faults for copies started together: candidate records lost or
    late, Hellos held back, late starters, silent candidates (never all of
    them) and an impatient copy that gives up.

    Of every two copies, one sees the other's candidate record in time (one
    direction is spared): when neither sees the other before it decides, no
    rule can stop both from hosting (they do not know of each other), and
    the merge that follows is guarantee 6's, not the start-up's. And one
    copy at most misses a given copy's record: when two miss the lowest
    copy, they can gather players around one of them while the lowest
    gathers the rest, and both host (a known limit of the election, which
    has no message between starting copies to learn of it)."""
    faults = StartFaults()
    missed: set[str] = set()
    for i, a in enumerate(node_ids):
        for b in node_ids[i + 1 :]:
            observer, subject = (a, b) if rng.random() < 0.5 else (b, a)
            fault = rng.random()
            if subject in missed or fault >= 0.6:
                continue
            missed.add(subject)
            if fault < 0.3:
                faults.lost.add((observer, subject))
            else:
                faults.late[(observer, subject)] = rng.uniform(0.0, 1.2)
    for a in node_ids:
        for b in node_ids:
            if a != b and rng.random() < 0.1:
                faults.hellos_late[(a, b)] = rng.uniform(0.0, 1.5)
    for nid in node_ids:
        if rng.random() < 0.2:
            faults.offset[nid] = rng.uniform(0.0, 0.8)
    for nid in rng.sample(node_ids, len(node_ids) - 1):  # one copy stays
        if rng.random() < 0.05:
            faults.timeout[nid] = rng.uniform(0.4, 1.0)
        elif rng.random() < 0.15:
            faults.crash[nid] = rng.uniform(0.0, 2.0)
    return faults


class _Mdns:
    """The stand-in for mDNS once started: which hosts a node sees, and what
    discovery gives every discovery_interval: hosts see each other (and
    merge), a stuck first join tries again."""

    def __init__(self, net: SimNetwork) -> None:
        self.net = net
        #: When each node made its last first-join attempt (add_node).
        self.join_started: dict[str, float] = {}

    def visible_hosts(self, node_id: str) -> list[Node]:
        net = self.net
        return [
            n
            for nid, n in net.nodes.items()
            if nid in net.alive
            and nid != node_id
            and n.role is Role.HOST
            and net.group[nid] == net.group[node_id]
            and not {nid, node_id} & net.cut_off  # no multicast across a pulled cable
        ]

    def discover(self) -> None:
        """What mDNS gives: hosts see each other; a stuck first join retries."""
        net = self.net
        for nid in sorted(net.alive - net.paused):
            node = net.nodes[nid]
            if node.role is Role.HOST:
                for other in self.visible_hosts(nid):
                    node.observe_host(other.me.id, other.me.endpoints, other.epoch, net.now)
                    net.flush(node)
            elif node.role is Role.JOINING and not node.ready:
                started = self.join_started.get(nid, net.now)
                if net.now - started > 1.0:
                    self._retry_join(node)
            elif node.role is Role.JOINING:  # lost its host: what zeroconf's watch shows
                for other in self.visible_hosts(nid):
                    sid = other.replica.session_id
                    node.observe_host(
                        other.me.id, other.me.endpoints, other.epoch, net.now, session_id=sid
                    )
                    net.flush(node)

    def _retry_join(self, node: Node) -> None:
        net, nid = self.net, node.me.id
        visible = self.visible_hosts(nid)
        self.join_started[nid] = net.now
        if visible:
            best = max(visible, key=lambda n: n.rank())  # as the runtime chooses
            node.join(best.me.id, best.me.endpoints, net.now)
        else:
            sid = f"s{net.rng.getrandbits(32):08x}"
            node.start_host(sid, net.now, access=net.access)
        net.flush(node)


@dataclass
class _Starter:
    """One copy started by start_together, while it starts."""

    machine: Startup
    start: float
    window: float
    record_delay: float
    crash_at: float | None
    faults: StartFaults
    begun: bool = False
    #: When its candidate record goes (it hosts, is welcomed or gives up).
    until: float = float("inf")
    #: The records its machine was last given.
    fed: dict[tuple[str, bool], Advert] = field(default_factory=dict)


class _StartupLan:
    """Copies started together (SimNetwork.start_together): their elections,
    and what each sees of the others' mDNS records while it starts."""

    def __init__(self, net: SimNetwork) -> None:
        self.net = net
        self.starters: dict[str, _Starter] = {}
        # When each node's host record appeared and went.
        self.host_since: dict[str, float] = {}
        self.host_until: dict[str, float] = {}

    def start(
        self,
        node_ids: list[str],
        *,
        window: float = 0.5,
        timeout: float = 5.0,
        record_delay: float = 0.1,
        faults: StartFaults | None = None,
        machine: type[Startup] = Startup,
    ) -> list[Node]:
        """See SimNetwork.start_together."""
        faults = faults or StartFaults()
        for nid, node in self.net.nodes.items():  # hosts already there advertise
            if node.role is Role.HOST:
                self.host_since.setdefault(nid, 0.0)
        nodes = []
        for nid in node_ids:
            node = self.net._make_node(None, nid)
            start = self.net.now + faults.offset.get(nid, 0.0)
            self.starters[nid] = _Starter(
                machine=machine(
                    node_id=nid,
                    secured=False,
                    wire=WIRE_VERSION,
                    discovery_window=window,
                    hello_retry=self.net.config.hello_retry,
                    deadline=start + faults.timeout.get(nid, timeout),
                ),
                start=start,
                window=window,
                record_delay=record_delay,
                crash_at=start + faults.crash[nid] if nid in faults.crash else None,
                faults=faults,
            )
            self.net._log(nid, f"starts at {start:.3f}")
            nodes.append(node)
        return nodes

    def starting(self) -> bool:
        """Some copy started together is still deciding."""
        return any(not s.machine.done and nid in self.net.alive for nid, s in self.starters.items())

    def tick(self) -> None:
        if not self.starters or not self.starting():
            return
        for nid, node in self.net.nodes.items():  # when each host record appears and goes
            if node.role is Role.HOST:
                self.host_since.setdefault(nid, self.net.now)
            elif nid in self.host_since and node.ready and nid in self.net.alive:
                self.host_until.setdefault(nid, self.net.now)
        for nid in sorted(self.starters):
            starter = self.starters[nid]
            if nid in self.net.alive and not starter.machine.done and self.net.now >= starter.start:
                self._tick_one(nid, starter)

    def _tick_one(self, nid: str, starter: _Starter) -> None:
        node, machine = self.net.nodes[nid], starter.machine
        if node.ready:  # welcomed: its candidate record goes
            machine.joined()
            starter.until = self.net.now
            return
        if starter.crash_at is not None and self.net.now >= starter.crash_at:
            self.net.crash(nid)  # a silent candidate: its record lives on
            return
        if self.net.now >= machine.deadline:  # join() gives up and closes
            self.net._log(nid, "gives up starting")
            node.leave(self.net.now)
            self.net.alive.discard(nid)
            starter.until = self.net.now
            return
        hosts = self._feed(nid, starter)
        if not starter.begun:
            if not hosts and self.net.now < starter.start + starter.window:
                return
            starter.begun = True
            self._carry_out(nid, machine.begin(self.net.now))
        else:
            self._carry_out(nid, machine.tick(self.net.now))

    def _feed(self, nid: str, starter: _Starter) -> bool:
        """Give *nid*'s machine the records it sees now; True if any is a host's."""
        seen: dict[tuple[str, bool], Advert] = {}
        for other in sorted(self.net.nodes):
            if other == nid:
                continue
            at = self.net.now - starter.record_delay
            late = at - starter.faults.late.get((nid, other), 0.0)
            lost = (nid, other) in starter.faults.lost
            for advert in self._adverts_at(other, at):  # host records arrive
                if advert.epoch > 0:
                    seen[(other, True)] = advert
            for advert in self._adverts_at(other, late):
                if advert.epoch == 0 and not lost:
                    seen[(other, False)] = advert
        for key in starter.fed.keys() - seen.keys():
            starter.machine.gone(key[0], host=key[1], now=self.net.now)
        for key, advert in seen.items():
            if starter.fed.get(key) != advert:
                starter.machine.seen(advert)
        starter.fed = seen
        return any(host for _, host in seen)

    def _adverts_at(self, nid: str, at: float) -> list[Advert]:
        """The records *nid* had published at time *at* (a crashed copy's stay)."""
        node, out = self.net.nodes[nid], []
        starter = self.starters.get(nid)
        endpoints = node.me.endpoints
        if starter is not None and starter.start <= at < starter.until:
            out.append(Advert(node_id=nid, endpoints=endpoints, epoch=0, wire=WIRE_VERSION))
        if self.host_since.get(nid, float("inf")) <= at < self.host_until.get(nid, float("inf")):
            players = len(node.replica.members)
            advert = Advert(
                node_id=nid,
                endpoints=endpoints,
                epoch=node.epoch,
                players=players,
                wire=WIRE_VERSION,
            )
            out.append(advert)
        return out

    def hello(self, to: str, msg: Message) -> bool:
        """A Hello reaching a copy that is still starting goes to its machine
        (the core would drop it), as does the "candidate, keep asking me" of
        a copy it chose; True if it went there, or was held back."""
        starter = self.starters.get(to)
        node = self.net.nodes[to]
        if (
            starter is None
            or starter.machine.done
            or node.ready
            or node.role not in (Role.IDLE, Role.JOINING)
        ):
            return False
        if isinstance(msg, Redirect) and msg.reason == "candidate":
            starter.machine.answered(msg.sender, self.net.now)
            return True
        if not isinstance(msg, Hello):
            return False
        late = starter.faults.hellos_late.get((msg.sender, to))
        if late is not None and self.net.now < starter.start + late:
            at = starter.start + late + self.net.rng.uniform(self.net.min_delay, self.net.max_delay)
            self.net._wire.push(at, to, to_frame(msg), msg.sender)
            return True
        self._carry_out(to, starter.machine.hello(msg, self.net.now))
        notice = candidate_notice(to, node.me.endpoints)
        for held in starter.machine.take_answers():
            self.net._post(to, held.sender, notice)
        return True

    def _carry_out(self, nid: str, decision: Decision | None) -> None:
        node = self.net.nodes[nid]
        if isinstance(decision, Join):
            self.net._log(nid, f"chooses {decision.node_id[:6]}")
            node.join(decision.node_id, decision.endpoints, self.net.now)
        elif isinstance(decision, Host):
            self.net._log(
                nid,
                f"hosts; welcomes {len(decision.hellos)} held Hellos, "
                f"{decision.unanswered} rivals unanswered",
            )
            node.start_host(
                f"s{self.net.rng.getrandbits(32):08x}", self.net.now, access=self.net.access
            )
            self.host_since[nid] = self.net.now
            self.starters[nid].until = self.net.now
            for hello in decision.hellos:
                node.receive(hello, self.net.now)
        elif isinstance(decision, Fail):
            self.net._log(nid, f"fails to start: {decision.reason.value}")
            node.leave(self.net.now)
        self.net._flush(node)


def _describe(msg: Message) -> str:
    name = type(msg).__name__
    if isinstance(msg, ChangeMsg):
        c = msg.change
        ack = " ack" if msg.ack else ""
        return f"{name} e{msg.epoch} #{c.seq} ({c.epoch},{c.origin[:6]}){ack}"
    return f"{name} e{msg.epoch}"


class Counter:
    """A client doing ``apply_op(key, +1)`` n times, one at a time, as the API
    does: read locally, compare-and-swap at the host, retry on conflict."""

    def __init__(self, net: SimNetwork, node_id: str, key: str, n: int) -> None:
        self.net, self.node_id, self.key, self.left = net, node_id, key, n
        self.acked = 0
        self.in_flight = False
        self.conflicts = 0
        self._current: Any = None
        self._known = False

    def pump(self) -> None:
        if self.in_flight or self.left == 0 or not self.net.active(self.node_id):
            return
        node = self.net.nodes[self.node_id]
        if node.role in (Role.LEAVING, Role.CLOSED) or not node.ready:
            return
        if not self._known:
            entry = node.replica.data.get(self.key)
            self._current = entry.value if entry is not None else None
        old = self._current
        ops: tuple[Op, ...]
        conds: tuple[Cond, ...]
        if old is None:
            ops, conds = (Set(self.key, 1),), (IfAbsent(self.key),)
        else:
            ops, conds = (Set(self.key, old + 1),), (IfHash(self.key, hash_value(old)),)
        self.in_flight = True
        self.net.write(self.node_id, ops, conds, self._done)

    def _done(self, outcome: Outcome) -> None:
        self.in_flight = False
        if outcome.status == Status.OK:
            self.acked += 1
            self.left -= 1
            self._known = False
        elif outcome.status in (Status.CONFLICT, Status.MISSING):
            self.conflicts += 1
            detail = outcome.detail if isinstance(outcome.detail, dict) else {}
            self._known = "value" in detail
            self._current = detail.get("value")
        else:
            raise AssertionError(f"unexpected outcome {outcome}")
