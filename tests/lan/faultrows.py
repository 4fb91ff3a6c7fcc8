"""The rows of issue 17's table, as runnable scenarios: a session of real peers
in network namespaces, writers running ``apply_op`` increments on one counter,
one fault, then the count.

Shared by ``tests/lan/test_real_faults.py`` (one run per row, asserted) and
``benchmarks/faults.py`` (N runs per row, tabulated). A run:

1. starts the host, then the other peers at once (succession is join order,
   read back from the host's member list), and sets the counter to 0;
2. starts the writers (each ``apply_op(COUNTER, n + 1)`` back to back) and
   waits until each has some increments acknowledged;
3. applies the row's fault (SIGSTOP/SIGCONT of a worker's pid, once or as a
   duty cycle, a switch port down and up, a ``close()``, a kill -9 and a
   restart with the same identity) and waits until every writer goes on;
4. stops the writers, waits for the session to settle (one host that every
   survivor follows, equal states), and compares: the final counter on every
   survivor against the increments acknowledged to the writers, and the
   ``WritesRolledBack`` reports against what went missing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from netlab import Lan, Worker, equal_states, one_host, wait_for

COUNTER = "counter"
SECRET = "correct horse battery staple"
#: Acknowledged increments every writer must have before the fault, and after it.
WARMUP_ACKS = 20
#: How long a settled session may take after the writers stop.
SETTLE_S = 20.0


@dataclass
class Run:
    """One session in a Lan: ``peers`` in succession order (host first)."""

    lan: Lan
    peers: list[Worker]
    writers: list[Worker]
    ns_of: dict[int, int]  # worker pid -> namespace index, for cut/restore
    gone: list[Worker] = field(default_factory=list)  # closed or killed
    app: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # every peer's join() options
    #: Increments acknowledged to, and reported undone to, writers killed and
    #: started again (what the killed process was told, read before the kill).
    acked_before: int = 0
    reported_before: int = 0

    @property
    def host(self) -> Worker:
        return self.peers[0]

    @property
    def successor(self) -> Worker:
        return self.peers[1]

    @property
    def survivors(self) -> list[Worker]:
        return [p for p in self.peers if p not in self.gone]

    @contextlib.contextmanager
    def paused(self, *workers: Worker) -> Iterator[None]:
        """SIGSTOP the workers (a frozen laptop, Ctrl-Z); SIGCONT them on the way out."""
        for w in workers:
            os.kill(w.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for w in workers:
                os.kill(w.pid, signal.SIGCONT)

    @contextlib.contextmanager
    def cut(self, worker: Worker) -> Iterator[None]:
        """Pull the worker's cable (its switch port down); plug it back on the way out."""
        ns = self.ns_of[worker.pid]
        self.lan.cut(ns)
        try:
            yield
        finally:
            self.lan.restore(ns)


Fault = Callable[[Run], None]


def pause_host(seconds: float) -> Fault:
    def fault(run: Run) -> None:
        with run.paused(run.host):
            time.sleep(seconds)

    return fault


def pause_host_and_successor(seconds: float) -> Fault:
    def fault(run: Run) -> None:
        with run.paused(run.host, run.successor):
            time.sleep(seconds)

    return fault


def close_host_while_successor_paused(seconds: float) -> Fault:
    def fault(run: Run) -> None:
        start = time.monotonic()
        with run.paused(run.successor):
            run.host.cmd("close", timeout=seconds + 10)
            run.gone.append(run.host)
            time.sleep(max(0.0, seconds - (time.monotonic() - start)))

    return fault


def kill_host(run: Run) -> None:
    os.kill(run.host.pid, signal.SIGKILL)
    run.gone.append(run.host)


def slow(who: Callable[[Run], Worker], seconds: float, stopped: float, period: float) -> Fault:
    """A slow CPU: the worker is stopped *stopped* seconds of every *period*
    (SIGSTOP/SIGCONT from here) for *seconds*. It reads its sockets late, its
    timers fire late, what it sends leaves late, and it runs only part of
    the time, as on a starved or throttled machine."""

    def fault(run: Run) -> None:
        worker = who(run)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with run.paused(worker):
                time.sleep(stopped)
            time.sleep(period - stopped)

    return fault


def _respawn(run: Run, old: Worker) -> Worker:
    """Start *old* again in its namespace with its identity (a new instance)."""
    ns = run.ns_of[old.pid]
    new = spawn_peer(run.lan, ns, run.app, run.options)
    new.wait_ready()
    run.ns_of[new.pid] = ns
    run.peers.append(new)
    return new


def reported_undone(writer: Worker) -> int:
    """The increments *writer* was told a merge undid, net. A counter row's
    writers write the counter only: those reported by number (``more``) are
    increments too; a declined increment applied after all (``applied``) is
    one the count holds beyond those acknowledged."""
    r = writer.cmd("rollbacks", key=COUNTER)
    return int(r["mine"] + r["more"] - r["applied"])


def restart_writer(run: Run) -> None:
    """A writer's game crashes (kill -9) and is started again at once with the
    same identity, while the others go on writing; it writes again. Its
    counter is stopped first, so that what it was told is known exactly."""
    old = run.writers[-1]
    done = old.cmd("stop_count", timeout=30)
    run.acked_before += done["ok"]
    run.reported_before += reported_undone(old)
    os.kill(old.pid, signal.SIGKILL)
    old.proc.wait(10)
    run.gone.append(old)
    new = _respawn(run, old)
    run.writers[-1] = new
    wait_for(lambda: COUNTER in new.cmd("dump")["state"], 20, "the restarted writer to sync")
    new.cmd("count", key=COUNTER)


def restart_host(run: Run) -> None:
    """The host's game crashes (kill -9) and is started again at once with the
    same identity: it must join the successor's session as a member."""
    old = run.host
    os.kill(old.pid, signal.SIGKILL)
    old.proc.wait(10)
    run.gone.append(old)
    _respawn(run, old)


def cut_writer(seconds: float) -> Fault:
    def fault(run: Run) -> None:
        with run.cut(run.writers[0]):
            time.sleep(seconds)

    return fault


def cut_successor(seconds: float) -> Fault:
    def fault(run: Run) -> None:
        with run.cut(run.successor):
            time.sleep(seconds)

    return fault


def cut_host(seconds: float) -> Fault:
    def fault(run: Run) -> None:
        with run.cut(run.host):
            time.sleep(seconds)

    return fault


def host_blips(count: int, down: float, up: float) -> Fault:
    def fault(run: Run) -> None:
        for _ in range(count):
            with run.cut(run.host):
                time.sleep(down)
            time.sleep(up)

    return fault


@dataclass(frozen=True)
class Row:
    id: str
    what: str
    fault: Fault
    peers: int = 7
    writers: int = 4
    host_writes: bool = False
    secret: bool = False
    #: join() options of every peer, as (name, value) pairs.
    options: tuple[tuple[str, Any], ...] = ()


#: Issue 17's table, one row per fault (7 peers: 3 idle, 4 writers), one with a secret,
#: and a control row.
ROWS = [
    # The control: guarantee 2's own case, which holds before issue 17's fix too.
    Row("host-kill", "host kill -9", kill_host),
    Row("host-pause-0.6", "host paused 0.6 s (SIGSTOP/SIGCONT)", pause_host(0.6)),
    Row("host-pause-1.5", "host paused 1.5 s", pause_host(1.5)),
    Row("host-pause-3", "host paused 3 s", pause_host(3.0)),
    Row(
        "pair-pause-1.5", "host and successor paused together 1.5 s", pause_host_and_successor(1.5)
    ),
    Row(
        "close-successor-paused",
        "host close() while its successor is paused 3 s",
        close_host_while_successor_paused(3.0),
    ),
    Row("writer-cut-1.5", "one writer's link cut 1.5 s", cut_writer(1.5)),
    Row("successor-cut-1.5", "the successor's link cut 1.5 s", cut_successor(1.5)),
    Row("host-blips", "6 blips of 0.3 s on the host's link, 0.4 s apart", host_blips(6, 0.3, 0.4)),
    Row(
        "writing-host-cut-1.5",
        "the link of a host that writes cut 1.5 s",
        cut_host(1.5),
        host_writes=True,
    ),
    Row(
        "secret-writer-cut-1.5",
        "with a secret: one writer's link cut 1.5 s",
        cut_writer(1.5),
        secret=True,
    ),
    Row(
        "host-slow-3",
        "slow host CPU: stopped 30 ms of every 50 ms for 3 s",
        slow(lambda run: run.host, 3.0, 0.03, 0.05),
    ),
    Row(
        "writer-slow-3",
        "slow writer CPU: stopped 30 ms of every 50 ms for 3 s",
        slow(lambda run: run.writers[0], 3.0, 0.03, 0.05),
    ),
    Row("writer-restart", "a writer killed -9 and started again, same identity", restart_writer),
    Row("host-restart", "the host killed -9 and started again, same identity", restart_host),
]


def spawn_peer(lan: Lan, i: int, app: str, options: dict[str, Any]) -> Worker:
    """A peer in namespace *i*, with that namespace's identity: each peer its
    own installation, as at a real LAN party, and the same one when it is
    started again there."""
    identity = str(lan.logdir / f"identity-{lan.netns[i]}")
    return lan.spawn(i, app, "faults", name=f"ns{i}", identity_dir=identity, **options)


def start(lan: Lan, row: Row, app: str) -> Run:
    """The host in namespace 0, then every other peer at once; writers as the row says."""
    options: dict[str, Any] = {"secret": SECRET} if row.secret else {}
    options.update(row.options)

    def spawn(i: int) -> Worker:
        return spawn_peer(lan, i, app, options)

    first = spawn(0)
    assert first.wait_ready()["is_host"], "the first peer did not host"
    others = [spawn(i) for i in range(1, row.peers)]
    everyone = [first, *others]
    by_id = {w.id: w for w in everyone}
    wait_for(lambda: len(first.cmd("info")["peers"]) == row.peers, 20, "every peer to join")
    peers = [by_id[i] for i in first.cmd("info")["peers"]]
    wait_for(
        lambda: all(len(p.cmd("info")["peers"]) == row.peers for p in peers),
        10,
        "every peer to know every member",
    )
    others_writing = row.writers - 1 if row.host_writes else row.writers
    writers = [peers[0]] if row.host_writes else []
    writers += peers[len(peers) - others_writing :]
    ns_of = {w.pid: i for i, w in enumerate(everyone)}
    return Run(lan, peers, writers, ns_of, app=app, options=options)


@dataclass
class Outcome:
    """What one run of a row showed."""

    row: str
    acknowledged: int = 0  # apply_op calls that returned, all writers
    finals: list[Any] = field(default_factory=list)  # the counter on every survivor
    reported: int = 0  # rolled-back increments reported to the writers that made them
    errors: dict[str, int] = field(default_factory=dict)  # apply_op calls that raised, by type
    samples: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # no progress, never settled...
    detail: str = ""
    seconds: float = 0.0
    epoch: int = 0  # the survivors' last epoch: 1 when no failover happened

    @property
    def undone(self) -> int | None:
        """Acknowledged increments missing from the final count (None if survivors differ)."""
        if not self.finals or any(f != self.finals[0] for f in self.finals):
            return None
        final = self.finals[0]
        return self.acknowledged - final if isinstance(final, int) else None

    def failures(self) -> list[str]:
        found = list(self.problems)
        if self.errors:
            found.append(f"apply_op raised {self.errors}: {self.samples}")
        if any(f != self.acknowledged for f in self.finals):
            found.append(f"{self.acknowledged} increments acknowledged, counters {self.finals}")
        if self.undone is not None and self.reported != self.undone:
            found.append(f"{self.undone} acknowledged increments undone, {self.reported} reported")
        return found

    def summary(self) -> str:
        return (
            f"{self.row}: {self.acknowledged} acknowledged, counters {sorted(set(self.finals))}, "
            f"undone {self.undone}, reported {self.reported}, errors {self.errors}, "
            f"epoch {self.epoch}, {self.seconds:.1f} s"
        )


def progress(writers: list[Worker], more: int, timeout: float) -> list[str]:
    """Wait until every writer has *more* increments acknowledged than now; who did not."""
    base = {w.pid: w.cmd("info")["counted"] for w in writers}
    deadline = time.monotonic() + timeout
    stuck = list(writers)
    while stuck and time.monotonic() < deadline:
        stuck = [w for w in stuck if w.cmd("info")["counted"] < base[w.pid] + more]
        time.sleep(0.05)
    return [f"writer {w.pid} did not go on within {timeout} s" for w in stuck]


def start_counting(run: Run) -> list[str]:
    """Set the counter to 0, start every writer, wait until each is going; who is not."""
    run.host.cmd("set", key=COUNTER, value=0)
    wait_for(
        lambda: all(COUNTER in w.cmd("dump")["state"] for w in run.writers),
        10,
        "the counter to reach every writer",
    )
    for w in run.writers:
        w.cmd("count", key=COUNTER)
    return progress(run.writers, WARMUP_ACKS, 20)


def _settled(peers: list[Worker]) -> bool:
    return one_host(peers) and equal_states(peers) is not None


def _describe(run: Run) -> str:
    """Each survivor (#n: its place in the first succession order), and the hosts
    each one saw, in order, as (#n, epoch)."""
    place = {p.id: i for i, p in enumerate(run.peers)}
    lines = []
    for peer in run.survivors:
        info = peer.cmd("info")
        rolled = peer.cmd("rollbacks", key=COUNTER)
        seen = [(f"#{place.get(h['new'], '?')}", h["epoch"]) for h in peer.cmd("hosts")["hosts"]]
        stats = peer.cmd("events")["stats"]
        drops = {k[9:]: v for k, v in stats.items() if k.startswith("dropped: ")}
        lines.append(
            f"  #{place[peer.id]}{' (writer)' if peer in run.writers else ''}: "
            f"host={info['is_host']} epoch={info['epoch']} "
            f"counter={peer.cmd('dump')['state'].get(COUNTER)} rolled back: {rolled}; "
            f"hosts seen: {seen}; dropped: {drops}"
        )
    return "\n".join(lines)


def run_row(lan: Lan, row: Row, app: str) -> Outcome:
    """One run of *row* in *lan* (which must have ``row.peers`` namespaces)."""
    began = time.monotonic()
    out = Outcome(row.id)
    run = start(lan, row, app)
    out.problems += start_counting(run)
    row.fault(run)
    writing = [w for w in run.writers if w not in run.gone]
    out.problems += progress(writing, WARMUP_ACKS, 20)
    out.acknowledged = run.acked_before
    errors: dict[str, int] = {}
    for w in writing:
        done = w.cmd("stop_count", timeout=30)
        out.acknowledged += done["ok"]
        out.samples += done["samples"]
        for kind, n in done["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
        if not done["stopped"]:
            out.problems.append(f"writer {w.pid}: a call still blocked 15 s after stop")
    out.errors = errors
    try:
        wait_for(lambda: _settled(run.survivors), SETTLE_S, "one host and equal states")
    except AssertionError as exc:
        out.problems.append(str(exc))
    out.finals = [p.cmd("dump")["state"].get(COUNTER) for p in run.survivors]
    out.epoch = max(p.cmd("info")["epoch"] for p in run.survivors)
    out.reported = run.reported_before + sum(reported_undone(w) for w in writing)
    out.detail = _describe(run)
    out.seconds = time.monotonic() - began
    return out


#: Rows that ``benchmarks/faults.py`` runs with ``ROWS``; CI runs their
#: scenario in tests/lan/test_blips.py (5 peers), which also asserts no failover.
KNOB_ROWS = [
    Row(
        "host-carrier-blips-ht1.2",
        "4 carrier cuts of 0.3 s on the host's link, 1.5 s apart; host_timeout=1.2",
        host_blips(4, 0.3, 1.5),
        options=(("host_timeout", 1.2),),
    ),
]

#: Longer runs for ``benchmarks/faults.py`` only (too slow for every CI run).
LONG_ROWS = [
    Row("host-pause-8", "host paused 8 s", pause_host(8.0)),
    Row("host-pause-20", "host paused 20 s", pause_host(20.0)),
    Row("writer-cut-3", "one writer's link cut 3 s", cut_writer(3.0)),
    Row(
        "host-slow-heavy-3",
        "slow host CPU: stopped 400 ms of every 500 ms for 3 s (just under host_timeout)",
        slow(lambda run: run.host, 3.0, 0.4, 0.5),
    ),
    Row(
        "host-slow-past-timeout-4",
        "slow host CPU: stopped 700 ms of every 800 ms for 4 s (past host_timeout)",
        slow(lambda run: run.host, 4.0, 0.7, 0.8),
    ),
]
