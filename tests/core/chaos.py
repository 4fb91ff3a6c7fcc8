"""Seeded fault schedules for the protocol core, and the checks run after each.

A schedule is a pure function of its seed: the nodes, the workload and the
faults all come from ``random.Random(seed)`` and the simulator is seeded with
it too, so ``run_schedule(seed)`` replays a failure exactly.

What a schedule does
--------------------
* Starts 3-5 nodes; each runs a :class:`~p2pstate.sim.Counter` (compare-and-swap
  increments on one of two shared keys) and a :class:`Pipeline` of writes to
  keys of its own, several in flight at once, spread over the fault horizon.
  Every ``"ok"`` outcome is recorded. A node not yet welcomed (its host may
  die first, and it may host a session of its own) writes once it is in
  the session the others write in, as a newcomer started later does.
* Injects faults at random instants (between any two deliveries): crash of the
  host, of its successor or of another peer (a third of crashes also lose what
  the node had in flight), graceful leave of the host or of a peer, a new node
  joining (a restart), a change of message delays (up to 60 ms one way).
  A partition schedule also splits the nodes in two or three groups, once or
  twice, and heals them (messages across a cut are lost).
* Then heals, stops the faults, lets the remaining work finish, waits until
  the session is quiet and stays so, and checks the guarantees.

Which faults the "nothing acknowledged is lost" guarantee covers
-----------------------------------------------------------------
A *single* crash at a time, with time to recover between crashes. Precisely:
a crash or leave is *covered* when it happens while the session is
:func:`recovered` from the previous one: one host; every live node that holds
the session a synced member following it; no newcomer stranded by a host that
died before welcoming it; no dead node left in the membership; and (with two
members or more) a synced successor acknowledging changes. The last node that
holds the session is never crashed. A schedule whose faults are all covered
(``Kind.SINGLE``; a graceful leave counts as a fault too) must lose no
acknowledged write, and its counters must be exact.

``Kind.DOUBLE`` schedules also crash the host and its successor together (or
within one heartbeat): they may lose acknowledged writes (nobody else held
them) and are checked for everything else: one order, equal replicas,
exactly-once (no counter increment applied twice), one host per epoch.

``Kind.PARTITION`` schedules check guarantee 6: after the halves meet there is
one host and one session, and every acknowledged write that the merge lost was
reported to its writer (unless that writer crashed or left) in a
``WritesRolledBack`` event. A newcomer that finds no host there starts its own
session, which merges too.

Checked after every schedule: the run ends quiet (one host, every live node a
member of one session, listed once, nothing pending, equal sequence numbers)
and stays quiet; every live replica is equal (guarantee 4); at most one host
per epoch of a session (guarantee 1, outside partitions); acknowledged writes
present (guarantee 2) or reported (6); counters exact, allowing one increment
more per departed writer that had one in flight (3).
"""

from __future__ import annotations

import enum
import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from p2pstate.core.config import Config
from p2pstate.core.node import Node, Role
from p2pstate.core.writer import Outcome
from p2pstate.events import WritesRolledBack
from p2pstate.sim import Counter, SimNetwork

__all__ = [
    "CONFIG",
    "GuaranteeError",
    "Kind",
    "Pipeline",
    "Report",
    "check_quiet",
    "live",
    "recovered",
    "run_schedule",
]

CONFIG = Config()  # the library's own timings: heartbeat 0.1 s, timeouts 0.5 s
COUNTER_KEYS = ("count/a", "count/b")


class Kind(enum.Enum):
    SINGLE = "single"  # one covered fault at a time: nothing acknowledged is lost
    DOUBLE = "double"  # host and successor crash together: loss allowed
    PARTITION = "partition"  # split and heal: losses must be reported


class GuaranteeError(AssertionError):
    """A guarantee did not hold; the message carries the seed and the trace tail."""


@dataclass
class Pipeline:
    """A writer with up to ``window`` unconditional writes in flight, each to a
    key of its own, recording which were acknowledged."""

    net: SimNetwork
    node_id: str
    total: int
    window: int
    sent: int = 0
    in_flight: int = 0
    acked: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (value, req)

    def pump(self) -> None:
        if not self.net.active(self.node_id):  # crashed, or paused with its game
            return
        node = self.net.nodes[self.node_id]
        if node.role in (Role.LEAVING, Role.CLOSED) or not node.ready:
            return
        while self.in_flight < self.window and self.sent < self.total:
            # an identity started again (``"<id>.r1"``) writes keys of its own
            key = f"u/{self.node_id[:8]}{self.node_id[16:]}/{self.sent}"
            value = self.sent * 7 + 1
            self.sent += 1
            self.in_flight += 1
            self.net.write(
                self.node_id,
                (("set", key, value),),
                (),
                functools.partial(self._done, key=key, value=value),
            )

    def _done(self, outcome: Outcome, *, key: str, value: int) -> None:
        self.in_flight -= 1
        if outcome.status != "ok":
            raise AssertionError(f"unconditional write refused: {outcome}")
        self.acked[key] = (value, outcome.req)

    @property
    def finished(self) -> bool:
        return self.sent == self.total and self.in_flight == 0


@dataclass
class Report:
    """What one schedule did, for the checks and for a failure message."""

    seed: int
    kind: Kind
    net: SimNetwork
    counters: list[Counter]
    pipelines: list[Pipeline]
    departed: set[str] = field(default_factory=set)  # crashed or left on purpose
    faults: list[str] = field(default_factory=list)
    uncovered: int = 0  # crashes that came before the session had recovered
    hot_faults: int = 0  # crashes and leaves that came while writes were in flight
    reported_losses: int = 0  # acknowledged writes a merge undid, and reported
    acl_outcomes: list[str] = field(default_factory=list)  # statuses of the admin's ACL writes

    def fail(self, what: str) -> GuaranteeError:
        return GuaranteeError(
            f"seed {self.seed} ({self.kind.value}): {what}\n"
            f"faults: {self.faults}\n"
            f"reproduce: run_schedule({self.seed}, {self.kind})\n"
            f"--- trace tail ---\n{self.net.trace_tail(80)}"
        )


# ---------------------------------------------------------------- views


def live(net: SimNetwork) -> list[Node]:
    return net.live_nodes()


def recovered(net: SimNetwork) -> bool:
    """The session is whole again after a fault: one host, every live node
    that holds the session a synced member following it, no dead node in the
    membership, and a successor acknowledging changes when there is anyone to
    be one. (A newcomer still joining the host for the first time does not
    count; one whose host died before welcoming it does.)"""
    nodes = [n for n in live(net) if n.ready]
    hosts = [n for n in nodes if n.role is Role.HOST]
    if len(hosts) != 1:
        return False
    host = hosts[0]
    for n in live(net):
        if not n.ready and n.target_id != host.me.id:
            return False  # a newcomer whose host died under it: not over yet
    for n in nodes:
        if n is not host and (n.role is not Role.PEER or n.target_id != host.me.id):
            return False
    members = {m.id for m in host.replica.members}
    if not {n.me.id for n in nodes} <= members <= {n.me.id for n in live(net)}:
        return False
    return len(members) == 1 or host.successor_id is not None


# ---------------------------------------------------------------- the schedule


def run_schedule(
    seed: int,
    kind: Kind = Kind.SINGLE,
    *,
    scale: int = 1,
    trace_messages: bool = False,
    acl: bool = False,
) -> Report:
    """Run the schedule of *seed* and check the guarantees; raise
    :class:`GuaranteeError` (with seed and trace) when one does not hold.
    *scale* multiplies the work, the faults and the length of a run. *acl*
    adds the creator's ACL changes (about identities that never join, so the
    workload's checks hold) at random instants among the faults; every
    replica's access state must still agree (it is in the state digest)."""
    rng = random.Random(seed)
    max_delay = rng.choice((0.001, 0.003, 0.01, 0.03))
    net = SimNetwork(seed, config=CONFIG, max_delay=max_delay, trace_messages=trace_messages)
    report = Report(seed, kind, net, [], [])
    try:
        # A random source of their own, so schedules without ACL changes stay
        # what they were (test_regressions pins seeds).
        _Schedule(rng, report, scale, random.Random(~seed) if acl else None).run()
        check_quiet(report)
    except GuaranteeError:
        raise
    except Exception as exc:
        raise report.fail(f"{type(exc).__name__}: {exc}") from exc
    return report


@dataclass
class _Client:
    """A counter or pipeline that starts its next write(s) at ``due``."""

    work: Counter | Pipeline
    mean_gap: float
    due: float = 0.0


class _Schedule:
    def __init__(
        self,
        rng: random.Random,
        report: Report,
        scale: int,
        acl_rng: random.Random | None = None,
    ) -> None:
        self.rng, self.report, self.scale = rng, report, scale
        self.acl_rng = acl_rng
        # When set, half the crashes reset their connections (a process that
        # dies: the others suspect it at once, Node.suspect); drawn apart, so
        # the schedules of the other kinds stay as they were.
        self.reset_rng: random.Random | None = None
        self.admin: Node | None = None
        self.net = report.net
        self.clients: list[_Client] = []
        self.newcomers: list[Node] = []  # started, not yet welcomed
        # Nodes started with the session but not welcomed when the workload
        # began: newcomers too, whose writes wait until they are in (pump).
        self.outside: set[str] = set()
        self.session_id = ""
        self.paced = True
        self.horizon = rng.uniform(0.4, 1.5) * scale

    # ------------------------------------------------------------ workload

    def start_workload(self, node: Node) -> None:
        rng, net = self.rng, self.net
        counter = Counter(net, node.me.id, rng.choice(COUNTER_KEYS), rng.randint(3, 8) * self.scale)
        pipeline = Pipeline(
            net, node.me.id, total=rng.randint(4, 12) * self.scale, window=rng.randint(1, 4)
        )
        self.report.counters.append(counter)
        self.report.pipelines.append(pipeline)
        # Spread each client's writes over the fault horizon, so faults land
        # while writes are in flight.
        self.clients.append(_Client(counter, self.horizon / counter.left, net.now))
        self.clients.append(_Client(pipeline, self.horizon * pipeline.window / pipeline.total))

    def pump(self) -> None:
        now = self.net.now
        for node in [n for n in self.newcomers if n.ready]:
            # A newcomer that found no host hosts a session of its own until
            # it meets this one; what it writes there is a merge's to undo
            # (PARTITION schedules check that), so it starts writing once in.
            if self.report.kind is Kind.PARTITION or node.replica.session_id == self.session_id:
                self.newcomers.remove(node)
                self.start_workload(node)
        if self.outside:
            self.admit_outsiders()
        for client in self.clients:
            # The same draws whether or not an outsider may write yet, so the
            # schedules of the other nodes stay what they were.
            if not self.paced:
                if client.work.node_id not in self.outside:
                    client.work.pump()
            elif now >= client.due:
                if client.work.node_id not in self.outside:
                    client.work.pump()
                client.due = now + self.rng.uniform(0.0, 2 * client.mean_gap)

    def admit_outsiders(self) -> None:
        """An outsider may write once it is in the session the others write
        in (the schedule's, or the one that session merged into)."""
        waiting = self.outside | {n.me.id for n in self.newcomers}
        sessions = {self.session_id} | {
            n.replica.session_id for n in live(self.net) if n.ready and n.me.id not in waiting
        }
        for nid in sorted(self.outside):
            node = self.net.nodes[nid]
            if node.ready and node.replica.session_id in sessions:
                self.outside.discard(nid)

    def run_pumping(self, done: Callable[[], bool], limit: float) -> bool:
        def check() -> bool:
            self.pump()
            return done()

        return self.net.run_until(check, limit)

    def writes_in_flight(self) -> bool:
        return any(n.writer.pending for n in live(self.net))

    # ------------------------------------------------------------ the run

    def run(self) -> None:
        rng, net, report = self.rng, self.net, self.report
        first = net.add_node()
        net.run(0.02)
        for _ in range(rng.randint(2, 4)):
            net.add_node()
            net.run(rng.uniform(0.0, 0.02))
        if not net.run_until(lambda: recovered(net), 3.0):
            raise report.fail("the session did not form")
        assert first.role is Role.HOST
        self.admin = first
        self.session_id = first.replica.session_id
        for node in live(net):
            self.start_workload(node)
            if not node.ready and report.kind is not Kind.PARTITION:
                self.outside.add(node.me.id)
        self.inject_faults()
        self.quiet_down()

    def plan(self) -> list[tuple[float, str]]:
        rng, start, kind = self.rng, self.net.now, self.report.kind
        crashes = (
            "crash_host",
            "crash_host",
            "crash_successor",
            "crash_peer",
            "leave_host",
            "leave_peer",
        )
        plan = [(rng.uniform(0.0, self.horizon), rng.choice(crashes))]
        plan += [
            (rng.uniform(0.0, self.horizon), rng.choice(crashes))
            for _ in range(rng.randint(0, 2) * self.scale)
        ]
        plan += [
            (rng.uniform(0.0, self.horizon), "restart")
            for _ in range(rng.randint(0, 2) * self.scale)
        ]
        plan += [(rng.uniform(0.0, self.horizon), "delay") for _ in range(rng.randint(0, 2))]
        if self.acl_rng is not None:
            plan += [
                (self.acl_rng.uniform(0.0, self.horizon), "acl")
                for _ in range(self.acl_rng.randint(2, 6))
            ]
        if kind is Kind.DOUBLE:
            plan.append((rng.uniform(0.0, self.horizon), "crash_pair"))
        if kind is Kind.PARTITION:
            if rng.random() < 0.5:
                plan = [p for p in plan if not p[1].startswith(("crash", "leave"))]
            at = rng.uniform(0.0, self.horizon)
            for _ in range(rng.choice((1, 1, 2))):
                plan.append((at, "partition"))
                at += rng.uniform(0.2, 2.0)
                plan.append((at, "heal"))
                at += rng.uniform(0.0, 1.0)
        return sorted((start + at, what) for at, what in plan)

    def inject_faults(self) -> None:
        for at, what in self.plan():
            self.run_pumping(
                functools.partial(self._reached, at), max(0.0, at - self.net.now) + 1e-9
            )
            self.inject(what)

    def _reached(self, at: float) -> bool:
        return self.net.now >= at

    def inject(self, what: str) -> None:
        rng, net, report = self.rng, self.net, self.report
        if what == "delay":
            net.set_delay(0.0002, rng.choice((0.001, 0.003, 0.01, 0.03, 0.06)))
            report.faults.append(f"{net.now:.3f} delay {net.max_delay}")
            return
        if what == "partition":
            nodes = live(net)
            rng.shuffle(nodes)
            cut = rng.randint(1, max(1, len(nodes) - 1))
            groups = [{n.me.id for n in nodes[:cut]}]
            if len(nodes) - cut >= 2 and rng.random() < 0.25:  # three ways
                cut2 = rng.randint(cut + 1, len(nodes) - 1)
                groups.append({n.me.id for n in nodes[cut:cut2]})
            hold = rng.random() < 0.5  # what crosses the cut arrives after the heal
            net.partition(*groups, hold=hold)
            report.faults.append(
                f"{net.now:.3f} partition {[len(g) for g in groups]}/{len(nodes)}"
                + (" (held)" if hold else "")
            )
            return
        if what == "acl":
            self.change_acl()
            return
        if what == "heal":
            net.heal()
            report.faults.append(f"{net.now:.3f} heal")
            return
        if what == "restart":
            # A new process joins; it finds a host through discovery, so wait
            # for one to be visible (mid-failover there is none to find).
            def visible() -> bool:
                return any(n.role is Role.HOST for n in live(net))

            if report.kind is not Kind.PARTITION and not self.run_pumping(visible, 5.0):
                raise report.fail("no host to join")
            node = net.add_node()
            report.faults.append(f"{net.now:.3f} restart {node.me.id[:6]}")
            self.newcomers.append(node)
            return
        # A crash or a leave: wait for the session to recover from the last one.
        if report.kind is not Kind.PARTITION and not self.run_pumping(lambda: recovered(net), 10.0):
            raise report.fail("the session did not recover from the previous fault")
        nodes = [n for n in live(net) if n.ready and n.role is not Role.LEAVING]
        if len(nodes) <= 1:
            return  # never the last node that holds the session
        hosts = [n for n in nodes if n.role is Role.HOST]
        host = hosts[0] if hosts else None
        peers = [n for n in nodes if n is not host]
        succ_id = host.successor_id if host is not None else None
        successor = net.nodes[succ_id] if succ_id and succ_id in net.alive else None
        victims: list[Node]
        if what in ("crash_host", "leave_host") and host is not None:
            victims = [host]
        elif what == "crash_successor" and successor is not None:
            victims = [successor]
        elif what == "crash_pair" and host is not None and successor is not None and len(nodes) > 2:
            victims = [host, successor]
        elif what in ("crash_peer", "leave_peer") and peers:
            victims = [rng.choice(peers)]
        else:
            return
        gap = rng.uniform(0.0, CONFIG.heartbeat_interval)
        for i, victim in enumerate(victims):
            if i:
                self.run_pumping(lambda: False, gap)
                report.uncovered += 1
            if self.writes_in_flight():
                report.hot_faults += 1
            report.departed.add(victim.me.id)
            if what.startswith("leave"):
                net.leave(victim.me.id)
            else:
                reset = self.reset_rng is not None and self.reset_rng.random() < 0.5
                net.crash(victim.me.id, lose_in_flight=rng.random() < 0.3, reset=reset)
            report.faults.append(f"{net.now:.3f} {what} {victim.me.id[:6]}")

    def change_acl(self) -> None:
        """The creator authorizes, bans... an identity that never joins."""
        rng, net, admin = self.acl_rng, self.net, self.admin
        assert rng is not None and admin is not None
        if admin.me.id not in net.alive or admin.role in (Role.LEAVING, Role.CLOSED):
            return
        action = rng.choice(("authorize", "unauthorize", "ban", "unban"))
        # In the form of an identity ("3333…"), as the host requires.
        op = ("acl", action, f"{rng.randrange(4):x}" * 16)
        net.write(admin.me.id, (op,), (), self._acl_done)
        self.report.faults.append(f"{net.now:.3f} acl {op[1]} {op[2]}")

    def _acl_done(self, outcome: Outcome) -> None:
        # "denied" once a merge made another session's creator the admin
        if outcome.status not in ("ok", "denied"):
            raise AssertionError(f"ACL change refused: {outcome}")
        self.report.acl_outcomes.append(outcome.status)

    def quiet_down(self) -> None:
        """No more faults: heal, let the live writers finish, wait for quiet."""
        net, report = self.net, self.report
        net.heal()
        net.set_delay(net.min_delay, min(net.max_delay, 0.003))
        self.paced = False

        def done() -> bool:
            return (
                net.now > net.held_until  # stale news from a healed cut has all arrived
                and all(c.left == 0 for c in report.counters if _writing(net, c.node_id))
                and all(p.finished for p in report.pipelines if _writing(net, p.node_id))
                and net.quiet()
            )

        if not self.run_pumping(done, 30.0):
            stuck = [n.me.id[:6] + ":" + n.role.name for n in live(net)]
            raise report.fail(f"no quiet within 30 s of sim time; live nodes {stuck}")
        net.run(0.3)  # heartbeats only: nothing may change any more
        if not net.quiet():
            raise report.fail("the session did not stay quiet")


def _writing(net: SimNetwork, node_id: str) -> bool:
    return node_id in net.alive and net.nodes[node_id].role not in (Role.LEAVING, Role.CLOSED)


# ---------------------------------------------------------------- checks


def check_quiet(report: Report) -> None:
    """The guarantees, checked once the session is quiet."""
    net, kind = report.net, report.kind
    nodes = live(net)
    hosts = [n for n in nodes if n.role is Role.HOST]
    if len(hosts) != 1:
        raise report.fail(f"{len(hosts)} hosts at the end")
    host = hosts[0]
    # one session, everyone a member once
    for n in nodes:
        ids = [m.id for m in n.replica.members]
        if len(ids) != len(set(ids)):
            raise report.fail(f"{n.me.id[:6]} lists a member twice: {ids}")
        if set(ids) != {x.me.id for x in nodes}:
            raise report.fail(f"{n.me.id[:6]} membership {ids} is not the live nodes")
        if n.replica.session_id != host.replica.session_id:
            raise report.fail(f"{n.me.id[:6]} is in another session")
    # guarantee 4: one order, equal replicas
    digests = {net.state_digest(n) for n in nodes}
    if len(digests) != 1:
        raise report.fail(f"replicas differ: {[(n.me.id[:6], n.replica.seq) for n in nodes]}")
    # guarantee 1: one host per epoch of a session (a partition may make two,
    # which then merge)
    if kind is not Kind.PARTITION:
        for (session_id, epoch), who in sorted(net.hosts_by_term.items()):
            if len(who) > 1:
                raise report.fail(
                    f"epoch {epoch} of session {session_id} had hosts {sorted(w[:6] for w in who)}"
                )
    data = host.replica.data
    # guarantee 2 (and 6): acknowledged writes are there, or reported
    for p in report.pipelines:
        rolled = _rolled_back(net, p.node_id)
        for key, (value, req) in p.acked.items():
            entry = data.get(key)
            if entry is not None and entry.value == value:
                continue
            if kind is Kind.SINGLE or (kind is Kind.DOUBLE and report.uncovered == 0):
                raise report.fail(f"acknowledged write {key}={value} (req {req}) lost")
            if kind is Kind.PARTITION and p.node_id not in report.departed:
                if (req, key) not in rolled:
                    raise report.fail(
                        f"acknowledged write {key}={value} (req {req}) lost in the merge "
                        "and not reported to its writer"
                    )
                report.reported_losses += 1
    # guarantee 3: counters exact (a departed writer may have had one in flight)
    for key in COUNTER_KEYS:
        mine = [c for c in report.counters if c.key == key]
        if not mine:
            continue
        acked = sum(c.acked for c in mine)
        slack = sum(1 for c in mine if c.node_id in report.departed and c.in_flight)
        entry = data.get(key)
        value = entry.value if entry is not None else 0
        if kind is Kind.PARTITION:
            continue  # a merge may roll increments back (reported above for pipelines)
        if value > acked + slack:
            raise report.fail(f"{key} = {value}: more than {acked} acked + {slack} in flight")
        if kind is Kind.SINGLE and value < acked:
            raise report.fail(f"{key} = {value}: {acked} increments were acknowledged")


def _rolled_back(net: SimNetwork, node_id: str) -> set[tuple[int, str]]:
    out: set[tuple[int, str]] = set()
    for event in net.events.get(node_id, ()):
        if isinstance(event, WritesRolledBack):
            for w in event.mine:
                out.update((w.request, k) for k in w.keys)
    return out


def describe(report: Report) -> dict[str, Any]:
    """A short summary of a run, for debugging by hand."""
    return {
        "seed": report.seed,
        "kind": report.kind.value,
        "now": round(report.net.now, 3),
        "faults": report.faults,
        "live": [(n.me.id[:6], n.role.name, n.epoch, n.replica.seq) for n in live(report.net)],
    }
