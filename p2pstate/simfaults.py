"""The simulated LAN's links and the faults on them, for :mod:`p2pstate.sim`.

:class:`Wire` is the queue of frames in flight: per-link FIFO delivery after
a seeded random delay. :class:`Faults` says what a fault does to a frame: a
partition loses it (or, with ``hold``, keeps it until the heal), a paused
node's inbound frames wait until it resumes, and a cut node's links hold
their frames both ways, in order, until it reconnects, as TCP holds them.
A slow node (a busy or throttled CPU) handles each frame, reset and timer
late by its lag, in the order they came (:class:`Slow`). Connection resets
(``Node.suspect``) are reported in the same delivery order as the frames; a
paused or cut-off node learns of them once back.

:class:`FaultControls` is the part of :class:`~p2pstate.sim.SimNetwork` that
a test calls to make these faults happen (``net.crash``, ``net.pause``,
``net.cut``, ``net.slow``, ``net.partition``...): a mixin that tells the
classes above and writes the trace.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable
from typing import Protocol

__all__ = ["FaultControls", "Faults", "Slow", "Wire"]

Link = tuple[str, str]  # (from, to)
Delivery = tuple[float, int, str, bytes, str]  # (at, order, to, frame, from)
Reset = tuple[float, int, str, str]  # (at, order, to, about)


class Wire:
    """Frames in flight, popped in delivery order (per link: the sent order)."""

    def __init__(self, rng: random.Random, min_delay: float, max_delay: float) -> None:
        self.rng = rng
        self.min_delay, self.max_delay = min_delay, max_delay
        self.queue: list[Delivery] = []
        # a transport seeing its link to *about* drop; ordered with the frames
        self.resets: list[Reset] = []
        self._order = 0
        # the orders of frames sent over a fresh connection (``push_fresh``)
        self.fresh: set[int] = set()
        self._link_free: dict[Link, float] = {}
        #: When the last frame released by a heal or a reconnect arrives.
        self.held_until = 0.0

    def push(self, at: float, to: str, frame: bytes, sender: str) -> int:
        """Deliver *frame* at *at*, after what is already due then; its order."""
        self._order += 1
        heapq.heappush(self.queue, (at, self._order, to, frame, sender))
        return self._order

    def send(self, now: float, sender: str, to: str, frame: bytes) -> None:
        """One frame over its link: a random delay, never before the last one."""
        delay = self.rng.uniform(self.min_delay, self.max_delay)
        link = (sender, to)
        at = max(now + delay, self._link_free.get(link, 0.0))
        self._link_free[link] = at
        self.push(at, to, frame, sender)

    def push_fresh(self, now: float, sender: str, to: str, frame: bytes) -> None:
        """One frame over a new connection of its own: after a random delay,
        not behind what the link from *sender* to *to* holds or has queued."""
        self.push(now + self.rng.uniform(self.min_delay, self.max_delay), to, frame, sender)
        self.fresh.add(self._order)

    def release_late(self, link: Link, frames: list[bytes], now: float) -> None:
        """Frames held across a healed partition: after up to a second (TCP's
        retransmissions, zmq's reconnection backoff), each after a delay."""
        at = max(now, self._link_free.get(link, 0.0)) + self.rng.uniform(0.0, 1.0)
        for frame in frames:
            at += self.rng.uniform(self.min_delay, self.max_delay)
            self.push(at, link[1], frame, link[0])
        self._released(link, at)

    def release_burst(self, link: Link, frames: list[bytes], now: float, backoff: float) -> None:
        """Frames held by a cut link: after up to *backoff*, back to back."""
        at = max(now, self._link_free.get(link, 0.0)) + self.rng.uniform(0.0, backoff)
        at += self.rng.uniform(self.min_delay, self.max_delay)
        for frame in frames:
            at += 1e-5  # one retransmitted window
            self.push(at, link[1], frame, link[0])
        self._released(link, at)

    def _released(self, link: Link, at: float) -> None:
        self._link_free[link] = at
        self.held_until = max(self.held_until, at)

    def drop_from(self, sender: str) -> None:
        """Lose what *sender* has in flight."""
        self.queue = [d for d in self.queue if d[4] != sender]
        heapq.heapify(self.queue)

    def due(self, until: float) -> bool:
        """Whether a frame arrives by *until*."""
        return bool(self.queue) and self.queue[0][0] <= until

    def pop(self) -> Delivery:
        return heapq.heappop(self.queue)

    def push_reset(self, at: float, to: str, about: str) -> int:
        """Tell *to* at *at* that its link to *about* dropped; its order."""
        self._order += 1
        heapq.heappush(self.resets, (at, self._order, to, about))
        return self._order

    def reset_due(self, until: float) -> bool:
        """Whether a reset is reported by *until*, before the next frame."""
        if not self.resets or self.resets[0][0] > until:
            return False
        return not self.queue or self.resets[0][:2] < self.queue[0][:2]

    def pop_reset(self) -> Reset:
        return heapq.heappop(self.resets)

    def hurry(self, to: str, orders: set[int], now: float) -> None:
        """What *orders* name, to *to*, arrives by *now*, in its order: a CPU
        that is fast again drains the backlog it had read."""
        self.queue = [
            (min(at, now), order, dest, frame, sender) if dest == to and order in orders else item
            for item in self.queue
            for at, order, dest, frame, sender in (item,)
        ]
        heapq.heapify(self.queue)
        self.resets = [
            (min(at, now), order, dest, about) if dest == to and order in orders else item
            for item in self.resets
            for at, order, dest, about in (item,)
        ]
        heapq.heapify(self.resets)


class Faults:
    """Partitions, pauses and link cuts, and the frames they hold."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        #: The partition group of each node (0: not named by the partition).
        self.group: dict[str, int] = {}
        self.partitioned_ever = False
        self._hold = False
        self._held: dict[Link, list[bytes]] = {}
        #: Paused nodes, and the frames that reached each while paused.
        self.paused: set[str] = set()
        self._backlog: dict[str, list[tuple[bytes, str]]] = {}
        #: Nodes whose link is cut, and what their links hold meanwhile.
        self.cut_off: set[str] = set()
        self._link_held: dict[Link, list[bytes]] = {}
        # (to, about): resets a paused or cut-off node learns of once back
        self._resets_held: list[tuple[str, str]] = []

    def partition(self, groups: Iterable[set[str]], *, hold: bool) -> None:
        self.partitioned_ever = True
        self._hold = hold
        for nid in self.group:
            self.group[nid] = 0
        for i, g in enumerate(groups, start=1):
            for nid in g:
                self.group[nid] = i

    def heal(self, now: float) -> int:
        """One group again; what the partition held follows. Returns its count."""
        for nid in self.group:
            self.group[nid] = 0
        held, self._held = self._held, {}
        for link, frames in sorted(held.items()):
            self.wire.release_late(link, frames, now)
        return sum(len(f) for f in held.values())

    def blocks(self, sender: str, to: str, frame: bytes) -> bool:
        """At sending: a partition between the two loses *frame*, or holds it
        for after the heal."""
        if self.group[sender] == self.group[to]:
            return False
        if self._hold:
            self._held.setdefault((sender, to), []).append(frame)
        return True

    def loses_fresh(self, sender: str, to: str) -> bool:
        """At sending: a new connection across a partition or a pulled cable
        is never made (its SYN is lost; TCP tries again only a second later)."""
        cut = sender in self.cut_off or to in self.cut_off
        return cut or self.group[sender] != self.group[to]

    def intercepts(
        self,
        to: str,
        frame: bytes,
        sender: str,
        *,
        alive: bool,
        fresh: bool = False,
        arrived: bool = False,
    ) -> bool:
        """At arrival: a cut link holds *frame* (per link, in the order it
        would have arrived), or loses it if *fresh* (its connection is not
        made yet); a paused node's sockets keep it. A frame that *arrived*
        already (a slow node reads it late) is past any cable."""
        if not arrived and (to in self.cut_off or sender in self.cut_off):
            if not fresh:
                self._link_held.setdefault((sender, to), []).append(frame)
            return True
        if to in self.paused and alive:
            self._backlog.setdefault(to, []).append((frame, sender))
            return True
        return False

    def pause(self, node_id: str) -> None:
        self.paused.add(node_id)

    def resume(self, node_id: str, now: float, drain: float = 0.0) -> int:
        """The backlog arrives from now, in order, spread over *drain*
        seconds. Returns its length."""
        self.paused.discard(node_id)
        self._release_resets(now)  # its transport reads them before the backlog
        backlog = self._backlog.pop(node_id, [])
        for i, (frame, sender) in enumerate(backlog):
            at = now + drain * i / max(1, len(backlog) - 1)
            self.wire.push(at, node_id, frame, sender)
        return len(backlog)

    def cut(self, node_id: str) -> None:
        self.cut_off.add(node_id)

    def reconnect(self, node_id: str, now: float, backoff: float) -> int:
        """Every held link whose other end is not cut off either releases
        its frames. Returns how many."""
        self.cut_off.discard(node_id)
        self._release_resets(now)
        released = 0
        for link in sorted(self._link_held):
            if link[0] in self.cut_off or link[1] in self.cut_off:
                continue  # the other end is still cut off
            frames = self._link_held.pop(link)
            self.wire.release_burst(link, frames, now, backoff)
            released += len(frames)
        return released

    def hold_reset(self, to: str, about: str) -> None:
        """A paused process reads the event when it resumes; a reset crosses
        a pulled cable once it is back."""
        self._resets_held.append((to, about))

    def _release_resets(self, now: float) -> None:
        held, self._resets_held = self._resets_held, []
        for to, about in held:
            self.wire.push_reset(now, to, about)


class Slow:
    """Slow nodes: a machine whose CPU is starved handles everything late.

    Each frame or reset that reaches a slow node is handled ``lag`` (plus up
    to ``jitter``) after it arrived, never before the one that arrived ahead
    of it (one thread reads one socket queue); its timers fire late by as
    much; what it sends then leaves late because it is sent late."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        #: node -> (lag, jitter) in seconds.
        self.lag: dict[str, tuple[float, float]] = {}
        # when each slow node is done with what it has read so far
        self._busy_until: dict[str, float] = {}
        # when each slow node's timers run next
        self._next_tick: dict[str, float] = {}
        #: the orders of frames and resets already held back once
        self.deferred: set[int] = set()

    def set(self, node_id: str, lag: float, jitter: float) -> None:
        if lag <= 0.0 and jitter <= 0.0:
            self.lag.pop(node_id, None)
        else:
            self.lag[node_id] = (lag, jitter)

    def draw(self, node_id: str) -> float:
        """This event's lag for *node_id* (0 when it is not slow)."""
        lag, jitter = self.lag.get(node_id, (0.0, 0.0))
        return lag + (self.rng.uniform(0.0, jitter) if jitter > 0.0 else 0.0)

    def handled_at(self, node_id: str, now: float) -> float:
        """When *node_id* handles an event that reaches it at *now*."""
        at = max(now + self.draw(node_id), self._busy_until.get(node_id, 0.0))
        self._busy_until[node_id] = at
        return at

    def catch_up(self, node_id: str, now: float) -> None:
        """*node_id* is fast again: from *now* on it is not behind."""
        self._busy_until[node_id] = min(self._busy_until.get(node_id, 0.0), now)

    def behind(self, node_id: str, now: float) -> bool:
        """Whether an event reaching *node_id* at *now* waits: it is slow, or
        still busy with what it read while it was."""
        return node_id in self.lag or self._busy_until.get(node_id, 0.0) > now

    def timer_due(self, node_id: str, now: float) -> bool:
        """Whether a slow node's timers run at *now* (each run is late by its
        lag); always for a node that is not slow."""
        if node_id not in self.lag:
            return True
        if now < self._next_tick.get(node_id, 0.0):
            return False
        self._next_tick[node_id] = now + self.draw(node_id)
        return True


class _Sim(Protocol):
    """What :class:`FaultControls` needs of the simulator it is mixed into."""

    rng: random.Random
    now: float
    alive: set[str]
    _wire: Wire
    _faults: Faults
    _slow: Slow

    def _log(self, who: str, what: str) -> None: ...

    def reset_links(self, node_id: str, *, max_delay: float = 0.002) -> None: ...


class FaultControls:
    """The fault controls of :class:`~p2pstate.sim.SimNetwork` (``net.pause``,
    ``net.partition``...): each tells :class:`Wire`, :class:`Faults` or
    :class:`Slow` what happened and writes it to the trace."""

    @property
    def min_delay(self: _Sim) -> float:
        return self._wire.min_delay

    @property
    def max_delay(self: _Sim) -> float:
        return self._wire.max_delay

    @property
    def held_until(self: _Sim) -> float:
        """When the last message held across a healed cut is delivered."""
        return self._wire.held_until

    @property
    def partitioned_ever(self: _Sim) -> bool:
        return self._faults.partitioned_ever

    def crash(
        self: _Sim, node_id: str, *, lose_in_flight: bool = False, reset: bool = False
    ) -> None:
        """kill -9: the node stops; what it had in flight still arrives, unless
        *lose_in_flight* (the machine lost power, or its cable went with it).
        Without *reset* it is silent (a frozen machine, a pulled cable): only
        timeouts find it. With *reset*, its kernel resets its connections, as
        when a process dies on a machine that lives on (``reset_links``)."""
        self.alive.discard(node_id)
        if lose_in_flight:
            self._wire.drop_from(node_id)
        self._log(
            node_id, "crashes" + (" and loses what it had in flight" if lose_in_flight else "")
        )
        if reset:
            self.reset_links(node_id)

    def reset_links(self: _Sim, node_id: str, *, max_delay: float = 0.002) -> None:
        """The connections to *node_id* are reset: every other running node
        that is not cut off learns it (``Node.suspect``) after its own delay
        of up to *max_delay*, as a socket monitor reports it. *node_id* may
        be alive (a blip): then it learns of every link's reset too, and
        answers the probes, and no failover follows."""
        self._log(node_id, "connections reset")
        for nid in sorted(self.alive - {node_id}):
            for to, about in ((nid, node_id), (node_id, nid)):
                at = self.now + self.rng.uniform(
                    self._wire.min_delay, max(self._wire.min_delay, max_delay)
                )
                self._wire.push_reset(at, to, about)

    def partition(self: _Sim, *groups: set[str], hold: bool = False) -> None:
        """Cut the network into groups; nodes not named are in group 0.

        What crosses a cut is lost, or with ``hold`` kept and delivered in
        order after the heal, each link after its own delay, as TCP's
        retransmissions and zmq's reconnection backoff deliver it: stale news
        arriving late, in an order no sender chose."""
        self._faults.partition(groups, hold=hold)
        self._log("-", f"partition {[sorted(x[:6] for x in g) for g in groups]}")

    def heal(self: _Sim) -> None:
        held = self._faults.heal(self.now)
        self._log("-", f"heal ({held} held messages follow)")

    def pause(self: _Sim, node_id: str) -> None:
        """SIGSTOP: the node runs no timers and handles nothing; what is sent
        to it waits (its sockets' buffers) until :meth:`resume`."""
        self._faults.pause(node_id)
        self._log(node_id, "pauses")

    def resume(self: _Sim, node_id: str, *, drain: float = 0.0) -> None:
        """SIGCONT: the node handles its backlog now, late, with the state it
        had, then its timers see the clock jump. A *drain* spreads the
        backlog over that many seconds: a process woken on a busy machine
        reads its sockets slowly, and old news then trickles in."""
        waited = self._faults.resume(node_id, self.now, drain)
        self._log(node_id, f"resumes ({waited} messages waited)")

    def cut(self: _Sim, node_id: str) -> None:
        """Pull one node's cable: nothing it sends or is sent arrives, but
        nothing is lost either (TCP retransmits): every link to or from it
        holds its messages, in order, until :meth:`reconnect`."""
        self._faults.cut(node_id)
        self._log(node_id, "link cut")

    def reconnect(self: _Sim, node_id: str, *, backoff: float = 0.2) -> None:
        """The cable is back: each held link delivers what it held, in order
        and back to back, after up to *backoff* seconds (TCP's retransmission
        timer)."""
        released = self._faults.reconnect(node_id, self.now, backoff)
        self._log(node_id, f"link back ({released} held messages follow)")

    def slow(self: _Sim, node_id: str, lag: float, *, jitter: float = 0.0) -> None:
        """A slow CPU (a throttled laptop, a machine swapping): from now on
        *node_id* handles each frame, connection reset and timer *lag* (plus
        up to *jitter*) seconds late, in the order they reached it, and what
        its game writes leaves as late. ``slow(node_id, 0)`` ends it: what
        it had read by then is handled at once, in order."""
        self._slow.set(node_id, lag, jitter)
        if node_id not in self._slow.lag:  # fast again: it drains what it had read
            self._slow.catch_up(node_id, self.now)
            self._wire.hurry(node_id, self._slow.deferred, self.now)
        self._log(node_id, f"slow by {lag * 1000:.0f}+{jitter * 1000:.0f} ms")

    @property
    def slowed(self: _Sim) -> dict[str, tuple[float, float]]:
        """The slow nodes: (lag, jitter) of each."""
        return dict(self._slow.lag)

    def send_raw(self: _Sim, to: str, frame: bytes, *, delay: float = 0.001) -> None:
        """Deliver arbitrary bytes to node *to*, as a stranger (or a buggy
        peer) could: the node sees them only if they decode."""
        self._wire.push(self.now + delay, to, frame, "")

    def set_delay(self: _Sim, min_delay: float, max_delay: float) -> None:
        """Change the range of one-way message delays from now on."""
        self._wire.min_delay, self._wire.max_delay = min_delay, max_delay
        self._log("-", f"delay {min_delay * 1000:.1f}-{max_delay * 1000:.1f} ms")
