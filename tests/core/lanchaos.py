"""Seeded schedules of LAN faults (issue 17) on top of chaos.py's workload:
pauses (SIGSTOP) and link cuts (TCP holds the traffic) of the host, its
successor, a writer or a pair, mixed with chaos.py's crashes (half of them
resetting their connections, as a process that dies does), leaves, restarts
and delay changes, and blips that reset a live host's or successor's
connections (issue 14: a suspicion that must change nothing), slow CPUs
(the host, its successor or a writer handling everything late by a varying
lag, some past ``host_timeout``) and restarts of an identity (a process
killed, its kernel resetting its connections, and started again with the
same identity as a new instance, at once or once a host is visible).
Slow CPUs and restarts come with ``extra=True`` (test_lan_chaos.py), drawn
from their own seeded source: without it a seed's schedule is the one it
was before they existed, which the regression tests replay.

* ``LanKind.SHORT``: one fault at a time (each after the session recovered
  from the last), pauses and cuts shorter than ``isolation_timeout``: nothing
  acknowledged may be undone, counters exact, no rollback reported.
* ``LanKind.LONG``: also faults up to ten ``host_timeout``s (a cut-off node
  then goes on alone) and pairs (host and successor, host and a writer):
  a merge may undo what a minority acknowledged, and the rollback reports
  must then be exact: the writes reported undone are exactly the
  acknowledged writes that are gone.

Both end with one host, every live replica equal, one session.
"""

from __future__ import annotations

import enum
import random

from chaos import (
    CONFIG,
    COUNTER_KEYS,
    Kind,
    Report,
    _rolled_back,
    _Schedule,
    check_quiet,
    live,
    recovered,
)

from p2pstate.core.ids import identity_of
from p2pstate.core.node import Node, Role
from p2pstate.events import WritesRestored, WritesRolledBack
from p2pstate.sim import SimNetwork

__all__ = ["LanKind", "run_lan_schedule"]

T = CONFIG.host_timeout
SHORT = (0.6 * T, 1.2 * T, 3.0 * T)  # all under isolation_timeout (8 T)
LONG = (0.6 * T, 1.2 * T, 3.0 * T, 10.0 * T)
#: A slow CPU's lag (each event's lag is this plus up to as much again).
LAGS = (0.05 * T, 0.2 * T, 0.6 * T, 1.5 * T)


class LanKind(enum.Enum):
    SHORT = "short"
    LONG = "long"


class _LanSchedule(_Schedule):
    def __init__(self, rng: random.Random, report: Report, lan: LanKind, extra: bool) -> None:
        super().__init__(rng, report, 1)
        self.lan = lan
        self.extra = extra
        self.reset_rng = random.Random(report.seed * 31 + 14)
        self.slow_rng = random.Random(report.seed * 37 + 17)
        self.restarts = 0

    def plan(self) -> list[tuple[float, str]]:
        rng = self.rng
        # chaos.py's crashes, leaves, restarts, delays (not its partitions)
        plan = [p for p in super().plan() if p[1] not in ("partition", "heal")]
        if rng.random() < 0.5:
            plan = [p for p in plan if not p[1].startswith(("crash", "leave"))]
        faults = ["pause_host", "pause_successor", "pause_peer", "cut_host", "cut_successor"]
        faults += ["cut_peer"]
        if self.lan is LanKind.LONG:
            faults += ["pause_pair", "cut_pair", "cut_host_writer"]
        start = self.net.now
        for _ in range(rng.randint(1, 3)):
            plan.append((start + rng.uniform(0.0, self.horizon), rng.choice(faults)))
        blips = self.reset_rng
        assert blips is not None
        for _ in range(blips.randint(0, 2)):
            at = start + blips.uniform(0.0, self.horizon)
            plan.append((at, blips.choice(("reset_host", "reset_successor"))))
        slow = self.slow_rng
        for _ in range(slow.randint(0, 2) if self.extra else 0):
            what = slow.choice(("slow_host", "slow_successor", "slow_peer", "restart_host"))
            what = slow.choice((what, "restart_peer"))
            plan.append((start + slow.uniform(0.0, self.horizon), what))
        return sorted(plan)

    def inject(self, what: str) -> None:
        if what.startswith("reset"):
            # a blip: the victim lives on, its links are reset now. One fault
            # at a time, as the others: a reset ends what a link holds, so
            # not while a healed cut still delivers what TCP held.
            net = self.net

            def done() -> bool:
                return recovered(net) and net.now >= net.held_until

            if not self.run_pumping(done, 10.0):
                raise self.report.fail("the session did not recover from the previous fault")
            for v in self._victims(what):
                self.report.faults.append(f"{self.net.now:.3f} {what} {v.me.id[:6]}")
                self.net.reset_links(v.me.id)
            return
        if what.startswith("slow"):
            self._slow(what)
            return
        if what.startswith("restart_"):
            self._restart(what)
            return
        if not what.startswith(("pause", "cut")):
            super().inject(what)
            return
        net, report = self.net, self.report
        if not self.run_pumping(lambda: recovered(net), 10.0):
            raise report.fail("the session did not recover from the previous fault")
        victims = self._victims(what)
        if not victims:
            return
        seconds = self.rng.choice(SHORT if self.lan is LanKind.SHORT else LONG)
        names = " ".join(v.me.id[:6] for v in victims)
        report.faults.append(f"{net.now:.3f} {what} {names} for {seconds:.2f} s")
        for v in victims:
            (net.pause if what.startswith("pause") else net.cut)(v.me.id)
        self.run_pumping(lambda: False, seconds)
        for v in victims:
            if what.startswith("pause"):
                net.resume(v.me.id)
            else:
                net.reconnect(v.me.id)

    def _slow(self, what: str) -> None:
        """A slow CPU for a while: every frame, reset and timer of the victim
        handled late by a lag that varies from event to event."""
        net, rng = self.net, self.slow_rng
        if not self.run_pumping(lambda: recovered(net), 10.0):
            raise self.report.fail("the session did not recover from the previous fault")
        victims = self._victims(what, rng)
        if not victims:
            return
        lag = rng.choice(LAGS)
        seconds = rng.choice(SHORT if self.lan is LanKind.SHORT else LONG)
        nid = victims[0].me.id
        self.report.faults.append(
            f"{net.now:.3f} {what} {nid[:6]} by {lag:.3f}+{lag:.3f} s for {seconds:.2f} s"
        )
        net.slow(nid, lag, jitter=lag)
        self.run_pumping(lambda: False, seconds)
        net.slow(nid, 0.0)

    def _restart(self, what: str) -> None:
        """kill -9 (its kernel resets its connections), then the same identity
        starts again as a new instance: at once (it may find no host yet and
        host alone until the sessions merge) or once a host is visible."""
        net, rng, report = self.net, self.slow_rng, self.report
        if not self.run_pumping(lambda: recovered(net), 10.0):
            raise report.fail("the session did not recover from the previous fault")
        victims = self._victims(what.replace("restart", "x"), rng)
        if not victims:
            return
        victim = victims[0]
        if self.writes_in_flight():
            report.hot_faults += 1
        report.departed.add(victim.me.id)
        net.crash(victim.me.id, reset=True)
        report.faults.append(f"{net.now:.3f} {what} {victim.me.id[:6]} killed")
        self.run_pumping(lambda: False, rng.uniform(0.0, 2.0 * T))
        if rng.random() < 0.5:
            self.run_pumping(lambda: any(n.role is Role.HOST for n in live(net)), 5.0)
        self.restarts += 1
        node = net.add_node(node_id=f"{identity_of(victim.me.id)}.r{self.restarts}")
        report.faults.append(f"{net.now:.3f} {what} {node.me.id[:6]} started again")
        self.newcomers.append(node)

    def _victims(self, what: str, rng: random.Random | None = None) -> list[Node]:
        rng = rng or self.rng
        nodes = [n for n in live(self.net) if n.ready and n.role is not Role.LEAVING]
        hosts = [n for n in nodes if n.role is Role.HOST]
        if len(nodes) < 2 or len(hosts) != 1:
            return []
        host = hosts[0]
        succ = self.net.nodes.get(host.successor_id or "")
        peers = [n for n in nodes if n is not host and n is not succ]
        target = what.split("_", 1)[1]
        if target == "host":
            return [host]
        if target == "successor":
            return [succ] if succ is not None else []
        if target == "peer":
            return [rng.choice(peers)] if peers else []
        if target == "pair":
            return [host, succ] if succ is not None and len(nodes) > 2 else []
        return [host, rng.choice(peers)] if peers else []  # host_writer


def run_lan_schedule(seed: int, lan: LanKind, *, extra: bool = False) -> Report:
    """Run the LAN-fault schedule of *seed* (with slow CPUs and restarts if
    *extra*); raise GuaranteeError (with the seed, faults and trace) when a
    guarantee does not hold."""
    rng = random.Random(seed)
    max_delay = rng.choice((0.001, 0.003, 0.01))
    net = SimNetwork(seed, config=CONFIG, max_delay=max_delay)
    # SHORT is checked as chaos.py's SINGLE (nothing lost); LONG as PARTITION
    # (losses reported), and then for exact reports below.
    kind = Kind.SINGLE if lan is LanKind.SHORT else Kind.PARTITION
    report = Report(seed, kind, net, [], [])
    try:
        _LanSchedule(rng, report, lan, extra).run()
        check_quiet(report)
        _check_exact_reports(report)
    except AssertionError:
        raise
    except Exception as exc:
        raise report.fail(f"{type(exc).__name__}: {exc}") from exc
    return report


def _check_exact_reports(report: Report) -> None:
    """Reported undone and not reported restored since == acknowledged and
    gone, for every writer still here (guarantee 6; never more: a report of
    a write that is still there is a false alarm). A write one merge undid
    and a later merge brought back is reported twice, undone then restored:
    it nets out."""
    net = report.net
    host = next(n for n in live(net) if n.role is Role.HOST)
    data = host.replica.data
    for p in report.pipelines:
        if p.node_id in report.departed or p.node_id not in net.alive:
            continue
        gone = {
            (req, key)
            for key, (value, req) in p.acked.items()
            if (entry := data.get(key)) is None or entry.value != value
        }
        pending = _outstanding(report, p.node_id)
        reported = {(req, key) for req, key in pending if key.startswith("u/")}
        if gone != reported:
            who = p.node_id[:6]
            raise report.fail(f"{who}: undone {sorted(gone)}, reported {sorted(reported)}")
    _check_counter_reports(report)
    if report.kind is Kind.SINGLE:
        for node_id in net.alive:
            for req, key in _rolled_back(net, node_id):
                if key in COUNTER_KEYS:
                    raise report.fail(f"{node_id[:6]}: increment {req} reported undone")


def _reports(
    net: SimNetwork, node_id: str, kind: type[WritesRolledBack | WritesRestored] = WritesRolledBack
) -> list[tuple[int, str]]:
    """Every (request, key) reported undone (or, by *kind*, restored) to
    *node_id*'s own writes, as often as reported: a real game counts each
    report it is given."""
    return [
        (w.request, key)
        for event in net.events.get(node_id, ())
        if isinstance(event, kind)
        for w in event.mine
        for key in w.keys
    ]


def _outstanding(report: Report, node_id: str) -> set[tuple[int, str]]:
    """*node_id*'s writes reported undone and not reported restored since,
    read in the order the events came. A write reported undone while it
    stands reported is an inexact report (a game would count it twice); one
    reported restored that was not reported undone is a declined write a
    merge applied after all (``rollback.applied_after_all``)."""
    pending: set[tuple[int, str]] = set()
    for event in report.net.events.get(node_id, ()):
        if isinstance(event, WritesRestored):
            pending.difference_update((w.request, key) for w in event.mine for key in w.keys)
        elif isinstance(event, WritesRolledBack):
            for w in event.mine:
                for key in w.keys:
                    if (w.request, key) in pending:
                        raise report.fail(f"{node_id[:6]}: ({w.request}, {key}) reported twice")
                    pending.add((w.request, key))
    return pending


def _check_counter_reports(report: Report) -> None:
    """Each counter: the increments acknowledged less the final count is the
    number of its increments reported undone, as issue 17's real-process rows
    count them, net of the restored ones (a write declined in one half and
    applied in the other counts as restored; a writer that left may have had
    one in flight: not checked)."""
    net = report.net
    host = next(n for n in live(net) if n.role is Role.HOST)
    for key in COUNTER_KEYS:
        mine = [c for c in report.counters if c.key == key]
        if not mine or any(c.node_id in report.departed for c in mine):
            continue
        entry = host.replica.data.get(key)
        undone = sum(c.acked for c in mine) - (entry.value if entry is not None else 0)
        writers = {c.node_id for c in mine}
        reported = sum(1 for w in writers for _, k in _reports(net, w) if k == key)
        reported -= sum(1 for w in writers for _, k in _reports(net, w, WritesRestored) if k == key)
        if undone != reported:
            raise report.fail(f"{key}: {undone} increments undone, {reported} reported")
