"""One node of a session: the whole protocol as a sans-I/O state machine.

Inputs are method calls carrying the caller's clock (``receive``, ``tick``,
``submit``, ``leave``, ``observe_host``, ``suspect``); outputs are collected in
``outbox`` (messages to send), ``events`` (for the user) and ``outcomes``
(answers to this node's own writes). No sockets, threads or clocks here.

This module holds the node's role and state, its inputs and views, and the
one table ``DISPATCH`` that sends each (role, message) to its handler or
drops it. The handlers and the rules live in the modules around it::

    admission.py  the host's verdict on a write; who may move our epoch
    host.py       ordering, applying, the successor's acks, membership, TTL
    follower.py   applying the host's changes, acks, our writes (re)sent
    joining.py    Welcome and Refused while joining
    failover.py   a lost host: the succession, votes, take-over, go back
    merge.py      two hosts of one session meet: one steps down
    liveness.py   who is live, majorities (core/quorum.py's state)
    rollback.py   our writes' outcomes, and those a merge undid
    ttl.py        expiry times of keys with a ttl

A write's path: ``submit`` (on the writer) sends a ``Write`` to the host
(``follower.send_write``); the host's ``host.on_write`` -> ``host.order``
asks ``node.admission.check``, makes the next ``Change`` and ``host.apply``
applies it and sends a ``ChangeMsg`` to every peer, the successor first;
each peer's ``follower.on_change`` applies it to its ``Replica``, and the
successor answers the writer when it takes a change it is asked to
acknowledge (``follower.answer_writer``), one hop before the host could;
its ``Ack`` lets ``host.release_durable`` answer the writes the successor
was not asked to, and the writers its answers do not reach.

Roles::

    IDLE --start_host--> HOST                       (first of a session)
    IDLE --join--------> JOINING --Welcome--> PEER  (joining.py)
    PEER --host silent / Redirect / Gone--> JOINING (next host in succession)
    PEER/JOINING --I am next in succession / Handoff--> HOST   (failover.py)
    HOST --a host that outranks me--> JOINING       (two halves merge: merge.py)
    HOST/PEER --leave--> LEAVING --> CLOSED

The protocol (see the README's design section for why):

* The host alone numbers changes. It applies each one, sends it to every
  synced peer at once, and answers the writer only when its *successor* (the
  next member in join order) has acknowledged holding it. The successor is
  who takes over, so an acknowledged write survives the loss of the host
  (``host.py``; the successor's side in ``follower.py``).
* A change carries the term (epoch, origin host) that made it; a reconnecting
  peer names its last change and gets the changes after it when that change
  is in the host's history, else a snapshot (log matching, as in Raft;
  ``host._welcome``, ``joining.on_welcome``).
* Writes carry (writer, request number); the replicated table of results makes
  a resent request return its first result instead of applying twice. A
  writer's requests apply in its own order: one that arrives after a lost
  one waits for the writer to send again from the lost one (``host.order``).
* Links may drop messages and come back within the timeouts, so nothing
  waits on one message: a writer resends what is unanswered after
  ``write_retry``; the successor's heartbeat names the last change it holds
  and counts as an acknowledgement; a peer that sees a gap says hello again.
* Two hosts of one session (a split that heals, two that started at once)
  announce themselves to each other with their standing; the rule of
  ``core/rank.py`` picks one, the other steps down and its peers follow the
  winner. Every acknowledged write the loser's side had that the winner's
  history lacks is reported to its writer (``WritesRolledBack``; ``merge.py``,
  ``rollback.py``).
* Faults of a LAN (``core/quorum.py``): a peer that loses its host takes
  over at once only with evidence that a majority of the membership can
  reach it (Hellos naming the lost host); a host that hears from no
  majority stops acknowledging and removes nobody (``isolated``); either
  may go on alone after ``isolation_timeout`` unless durability is
  "majority". A candidate that a member asks to take over while holding
  more of the lost host's term (writes acknowledged to it that the
  candidate missed) gives way to that member (``failover.give_way``). A
  node that notices a gap in its own clock (it was paused) counts nobody
  as live on what it handles right after (``liveness.py``, ``failover.py``).
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from ..events import Event
from ..events import Message as MessageEvent
from ..messages import (
    Ack,
    ChangeMsg,
    Gone,
    Handoff,
    Heartbeat,
    Hello,
    Leave,
    Member,
    Message,
    Redirect,
    Refused,
    Result,
    Welcome,
    Write,
)
from . import failover, follower, host, joining, liveness, merge
from .access import Access
from .admission import Admission
from .common import Acked, Conn, Fence, Role, Run, Send, remember
from .config import Config
from .ids import identity_of
from .liveness import Liveness
from .ops import (
    Cond,
    Delete,
    Op,
    Restore,
    Set,
    SetOpts,
    as_conds,
    as_ops,
)
from .rank import Rank, Standing, host_rank
from .replica import Replica
from .writer import Outcome, Writer

__all__ = ["Node", "Role", "Send"]

log = logging.getLogger(__name__)


class Node:
    def __init__(
        self,
        *,
        node_id: str,
        name: str,
        endpoints: tuple[str, ...],
        profile: dict[str, Any] | None = None,
        config: Config | None = None,
        joined_at: float = 0.0,
    ) -> None:
        self.config = config or Config()
        self.me = Member(
            id=node_id,
            name=name,
            endpoints=endpoints,
            profile=dict(profile or {}),
            joined_at=joined_at,
        )
        self.replica = Replica(log_keep=self.config.log_keep, log_bytes=self.config.log_bytes)
        self.writer = Writer()
        self.admission = Admission(self.replica, self.config, self.refusal)
        self.role = Role.IDLE
        self.epoch = 0
        self.outbox: list[Send] = []
        self.events: list[Event] = []
        self.outcomes: list[Outcome] = []
        self.stats: Counter[str] = Counter()
        #: True once this node has been welcomed or hosts: its state is usable.
        self.ready = False
        #: Why the host refused to let us in ("full", "closed"), if it did.
        self.refused: str | None = None
        self._init_peer_side()
        self._init_liveness()
        self._init_host_side()

    def _init_peer_side(self) -> None:
        """What a node keeps of the host it follows and of its own writes."""
        self.target: Member | None = None  # the host we follow or are joining
        self.heard = 0.0  # last time the target spoke
        self.beat_at = 0.0  # when we last sent to the target/peers
        self.hello_at = 0.0
        self.asked_since = 0.0  # first hello to the current target
        self.suspects: set[str] = set()
        # members asked who hosts while we wait for votes (failover.probe_members)
        self.probed: set[str] = set()
        self.failing_over = False
        # while the transport's reset of our host's link is being confirmed:
        # when we take the host for lost unless it answered (``suspect``)
        self.suspect_until: float | None = None
        # while our host is silent: when we last probed it over a fresh
        # connection (``failover.probe_silent_host``); None: not probing
        self.probe_at: float | None = None
        # our vote after a confirmed suspicion: one more, soon, if it was early
        self.fast_vote = False
        # members that asked us who hosts (a Hello that is no vote), and when
        self.questions: dict[str, float] = {}
        self.leave_deadline = 0.0
        # The caller's clock at the latest input: TTLs are kept by it.
        self.clock = 0.0
        self.expiry: dict[str, float] = {}  # key -> when it expires, by our clock
        self.sent_at: dict[int, float] = {}  # request -> when last sent to a host
        # The first unanswered request, and since when it is first: the host
        # answers a writer's requests in order, so only its wait says one is lost.
        self.retry_head: tuple[int, float] = (0, 0.0)
        # Where our latest Ack to the host waits in the outbox: acks are
        # cumulative, so the next change of the same pass updates that one.
        self.ack_slot = -1
        self.write_keys: dict[int, tuple[str, ...]] = {}  # request -> keys it writes
        # our acknowledged writes, where they sit in the history: the latest
        # in detail, older ones as runs of requests (core/rollback.py)
        self.acked: deque[Acked] = deque()
        self.acked_runs: list[Run] = []
        # our writes a host declined (a conflict, say), request -> keys: a
        # merge may bring a history that applied them (rollback.applied_after_all)
        self.declined: dict[int, tuple[str, ...]] = {}

    def _init_host_side(self) -> None:
        """What a host keeps of its members, and what it remembers of others."""
        self.conns: dict[str, Conn] = {}
        # seq -> (writer, req) to answer, and the successor asked to answer it too
        self.awaiting: dict[int, tuple[str, int, str | None]] = {}
        self.awaiting_seqs: list[int] = []  # a heap of the seqs above, lowest first
        self.durable = 0  # highest seq the successor holds
        self.successor: str | None = None
        self.fence: Fence | None = None  # the successor was replaced (host.note_fence)
        # host: members whose link the transport saw reset, and when
        self.resets_seen: dict[str, float] = {}
        # Hosts of another session we met (by Redirect or discovery): their
        # Hellos may move our epoch when they step down and join us.
        self.rivals: dict[str, tuple[str, ...]] = {}  # node id -> its endpoints
        #: The epoch of the last host we stepped down to: should it never
        #: welcome us and we host again (``failover.go_back``), we go above it.
        self.gave_way_at = 0
        # Members we dropped when they fell silent: one coming back from the
        # other half of a split may move our epoch, as a member would.
        self.departed: dict[str, tuple[()]] = {}

    def _init_liveness(self) -> None:
        """The state of core/quorum.py's rules, and of exact rollback reports."""
        # reported undone by a merge, until a later merge brings them back
        # (reported in a WritesRestored)
        self.undone: dict[int, Acked] = {}
        self.undone_runs: list[Run] = []
        self.liveness = Liveness(agreed=frozenset((self.me.id,)))

    # ================================================================ inputs

    def start_host(
        self,
        session_id: str,
        now: float,
        info: dict[str, Any] | None = None,
        access: Access | None = None,
        *,
        initial: tuple[tuple[str, Any, int, str, int, float], ...] = (),
        initial_seq: int = 0,
        stored_access: Access | None = None,
    ) -> None:
        """Create a new session and host it at epoch 1, with settings *info*
        (max_players, joinable, version, metadata) and *access* (modes and
        limits), or from a store's keys, *initial*, and access state,
        *stored_access* (``host.create``). ValueError if that state refuses
        this node's identity."""
        first = host.first_access(identity_of(self.me.id), access, stored_access)
        self.clock = now
        self._require_fresh("start_host")
        host.create(self, session_id, now, first, info, initial, initial_seq)

    def join(self, host_id: str, endpoints: tuple[str, ...], now: float) -> None:
        """Ask the host found by discovery to let us in."""
        self.clock = now
        self._require_fresh("join")
        follower.follow(self, Member(id=host_id, name="", endpoints=endpoints), now)

    def receive(self, msg: Message, now: float) -> None:
        """Handle one decoded message from the network."""
        self._note_clock(now)
        if msg.sender == self.me.id:
            self.drop("from myself")
            return
        handler = DISPATCH[self.role].get(type(msg), DROP)
        if handler is DROP:
            self.drop(f"{type(msg).__name__} in role {self.role.name}")
            return
        handler(self, msg, now)

    def submit(
        self,
        ops: Iterable[Op | tuple[Any, ...]],
        conds: Iterable[Cond | tuple[Any, ...]] = (),
        *,
        now: float,
    ) -> int:
        """Queue a write; its outcome appears in ``outcomes`` with the returned
        number. Raw op tuples are typed first (``ops.as_ops``): TypeError or
        ValueError for one that is no op's shape."""
        self._note_clock(now)
        if self.role in (Role.LEAVING, Role.CLOSED):
            raise RuntimeError(f"can't write in role {self.role.name}")
        ops, conds = as_ops(ops), as_conds(conds)
        request = self.writer.new(ops, conds)
        self.write_keys[request.req] = tuple(
            op.key
            for op in ops
            if isinstance(op, (Set, SetOpts, Delete)) and isinstance(op.key, str)
        ) + tuple(entry[0] for op in ops if isinstance(op, Restore) for entry in op.entries)
        if self.role is Role.HOST:
            host.order(self, self.me.id, request.req, self.writer.acked_upto, ops, conds)
        elif self.role is Role.PEER and self.target is not None:
            follower.send_write(self, request.req, ops, conds, now)
        # otherwise it is sent once a host welcomes us
        return request.req

    def leave(self, now: float) -> None:
        """Leave on purpose: a host hands over to its successor first."""
        self._note_clock(now)
        if self.role is Role.HOST:
            successor = host.synced_successor(self)
            host.close_host_side(self)
            if successor is None:
                self.role = Role.CLOSED
                return
            self.send_id(successor, Handoff(sender=self.me.id, epoch=self.epoch))
            self.role = Role.LEAVING
        elif self.role is Role.PEER and self.target is not None:
            self.send(self.target, Leave(sender=self.me.id, epoch=self.epoch))
            self.role = Role.LEAVING
        else:
            self.role = Role.CLOSED
            return
        self.leave_deadline = now + self.config.leave_timeout

    def observe_host(
        self,
        host_id: str,
        endpoints: tuple[str, ...],
        epoch: int,
        now: float,
        *,
        session_id: str | None = None,
    ) -> None:
        """Discovery saw another host of this session (two halves of a split
        session, or two nodes that started hosting at once).

        We announce ourselves to it with our :meth:`standing`; the two settle
        on one by ``core/rank.py``, and the loser steps down. Standings travel
        in messages rather than in the advertisement, so both sides compare
        fresh numbers; ``epoch`` (what discovery advertised) is not needed for
        the decision. A node that lost its host and waits for a majority
        asks a host that advertises our *session_id* instead
        (``failover.probe_found``)."""
        self._note_clock(now)
        if self.role is Role.JOINING and session_id is not None:
            failover.probe_found(self, host_id, endpoints, session_id)
            return
        if self.role is not Role.HOST or host_id == self.me.id:
            return
        if self.admission.may_lead(host_id):
            remember(self.rivals, host_id, endpoints)
        self.outbox.append(Send(host_id, endpoints, merge.announce(self, "host")))

    def suspect(self, peer_id: str, now: float) -> None:
        """The transport saw its connection to *peer_id* drop: the kernel
        reset it, as it does at once when a process dies. A suspicion, not
        proof (a blip resets a live host's connections too), and only of our
        host: we probe it (a Hello, which a live host answers with a
        Welcome) and ask our successor the same question, which starts the
        streak our vote will continue. Unanswered after ``suspect_after``,
        the host is lost (``tick``), and the usual failover follows, with
        its quorum rule. A silent host resets nothing: host_timeout finds it.

        A host told of a member's reset counts that member live again only
        on a new streak of messages: what a reset link held is not news of
        now, and if this host is the one that could not answer in time, its
        peers are failing over to a successor whose majority must win."""
        self._note_clock(now)
        if self.role is Role.HOST and peer_id in self.conns:
            host.on_reset(self, peer_id, now)
        else:
            failover.suspect_host(self, peer_id, now)

    def tick(self, now: float) -> None:
        """Run timers: heartbeats, liveness, hello retries, leave deadline."""
        self._note_clock(now)
        if self.role is Role.HOST:
            merge.tick(self, now)
        elif self.role is Role.PEER and self.target is not None:
            failover.tick_peer(self, self.target, now)
        elif self.role is Role.JOINING and self.target is not None:
            failover.tick_joining(self, self.target, now)
        elif self.role is Role.LEAVING and now >= self.leave_deadline:
            self.role = Role.CLOSED

    def next_deadline(self, now: float) -> float:
        """When ``tick`` next has something to do (an upper bound is fine)."""
        if self.role in (Role.IDLE, Role.CLOSED):
            return now + 1.0
        soon = now + min(self.config.heartbeat_interval, self.config.hello_retry) / 2
        if self.suspect_until is not None:
            return min(soon, max(now, self.suspect_until))  # no wait for a tick
        if self.probe_at is not None and self.role is Role.PEER:
            # probing a silent host: the next probe, or the loss, on time
            cfg = self.config
            due = min(self.probe_at, self.heard + cfg.host_timeout) + cfg.suspect_after
            return min(soon, max(now, due))
        if self.role is Role.JOINING:  # hello retries on time
            return min(soon, max(now, self.hello_at + self.config.hello_retry))
        return soon

    # ================================================================ views

    def me_at(self, seq: int) -> Member:
        """This node as a member that joined with change *seq*."""
        return replace(self.me, joined_seq=seq)

    @property
    def host_id(self) -> str:
        return self.replica.host_id

    def rank(self) -> Rank:
        """Host only: this host as a first join ranks the hosts it finds, from
        what our advert says (players, epoch, id): ``rank.host_rank``, the
        part of ``rank.wins`` that an advert shows."""
        return host_rank(len(self.replica.members), self.epoch, self.me.id)

    def standing(self) -> Standing:
        """Host only: what two hosts of one session compare to settle on one
        (``core/rank.py``): its history, whether it hears from a majority of
        its last agreed membership now, its live players, epoch and id."""
        live = liveness.live(self, self.clock)
        r = self.replica
        return Standing(
            host_id=self.me.id,
            epoch=self.epoch,
            live=live,
            # a side that went on alone holds its own majority, not the
            # session's: a real majority that went on too must win the merge
            majority=self.liveness.lone_from is None
            and liveness.majority_of(self, self.liveness.agreed, self.clock),
            seq=r.seq,
            terms=tuple(r.terms),
            backed=self.liveness.backed,
        )

    @property
    def isolated(self) -> bool:
        """Host only: it has heard from no majority of its session within
        ``host_timeout`` (it then acknowledges nothing, unless it was allowed
        to go on alone after ``isolation_timeout``)."""
        return self.role is Role.HOST and self.liveness.isolated_since is not None

    @property
    def target_id(self) -> str | None:
        """The host this node follows or is joining (None when it hosts)."""
        return self.target.id if self.target is not None else None

    @property
    def successor_id(self) -> str | None:
        """Host only: the synced successor that acknowledges changes, if any."""
        return self.successor if self.role is Role.HOST else None

    def take_outbox(self) -> list[Send]:
        out, self.outbox = self.outbox, []
        return out

    def take_events(self) -> list[Event]:
        out, self.events = self.events, []
        if any(isinstance(e, MessageEvent) for e in out):
            # Every replica applies every message; each peer reports its own.
            me = self.me.id
            out = [
                e
                for e in out
                if not isinstance(e, MessageEvent) or (e.sender.id != me and e.to in (None, me))
            ]
        return out

    def take_outcomes(self) -> list[Outcome]:
        out, self.outcomes = self.outcomes, []
        return out

    # ================================================================ clock

    def _note_clock(self, now: float) -> None:
        """Keep the caller's clock. An input after a silence longer than
        host_timeout means we were not running (a pause, a frozen machine:
        the adapter calls ``tick`` far more often): what we handle now was
        sent long ago, so nobody counts as live on it."""
        if now - self.clock > self.config.host_timeout and self.role is not Role.IDLE:
            self.liveness.woke_at = now
            self.stats["woke"] += 1
        self.clock = now
        if self.liveness.woke_at == now and self.role is Role.HOST:
            host.check_isolation(self, now)

    def ttl_left(self) -> dict[str, float]:
        """Seconds left of every key with a ttl, as of the latest input."""
        return {key: max(0.001, at - self.clock) for key, at in self.expiry.items()}

    # ================================================================ for the role modules

    def send(self, to: Member, msg: Message) -> None:
        """Send *msg* to member *to* (at the endpoints we know for it)."""
        self.outbox.append(Send(to.id, to.endpoints or self.endpoints_of(to.id), msg))

    def send_id(self, node_id: str, msg: Message) -> None:
        self.outbox.append(Send(node_id, self.endpoints_of(node_id), msg))

    def endpoints_of(self, node_id: str) -> tuple[str, ...]:
        member = self.replica.member(node_id)
        if member is not None:
            return member.endpoints
        if self.target is not None and self.target.id == node_id:
            return self.target.endpoints
        return ()

    def refusal(self, what: str, who: str) -> None:
        """Count a refusal; a peer can repeat one endlessly, so warn once of
        each kind, then log at debug level."""
        self.stats[what] += 1
        level = logging.WARNING if self.stats[what] == 1 else logging.DEBUG
        log.log(level, "%s: %s from %s (%d so far)", self.me.id, what, who, self.stats[what])

    def drop(self, why: str) -> None:
        """Count a message we do not act on, and why."""
        self.stats["dropped"] += 1
        self.stats[f"dropped: {why}"] += 1

    def _require_fresh(self, what: str) -> None:
        """Only a node that holds no session yet may start or join one."""
        if self.ready or self.role not in (Role.IDLE, Role.JOINING):
            raise RuntimeError(f"can't {what} in role {self.role.name}")


_Handler = Callable[[Node, Any, float], None]
#: A message that no handler takes in that role: dropped and counted, as
#: "dropped: <Message> in role <ROLE>" in ``Node.stats``.
DROP = None
_EVERY_MESSAGE: tuple[type[Message], ...] = (
    Hello,
    Welcome,
    Redirect,
    Write,
    Result,
    ChangeMsg,
    Ack,
    Heartbeat,
    Leave,
    Handoff,
    Refused,
    Gone,
)

#: Every transition of the protocol: for each role, what each message does.
#: Every role names every message type (tests/core/test_dispatch.py checks),
#: so a message a role does not handle is a decision, not an omission.
DISPATCH: dict[Role, dict[type[Message], _Handler | None]] = {
    Role.IDLE: dict.fromkeys(_EVERY_MESSAGE, DROP),  # takes no message
    Role.JOINING: {
        Hello: failover.on_hello,  # a member that lost our host too asks us
        Welcome: joining.on_welcome,
        Refused: joining.on_refused,
        Redirect: follower.on_redirect,
        Handoff: failover.on_joining_handoff,
        Write: DROP,
        Result: DROP,
        ChangeMsg: DROP,  # the Welcome's changes come first
        Ack: DROP,
        Heartbeat: DROP,
        Leave: DROP,
        Gone: DROP,
    },
    Role.PEER: {
        Hello: failover.on_hello,  # a vote for us, or told who hosts
        ChangeMsg: follower.on_change,
        Result: follower.on_result,
        Heartbeat: follower.on_heartbeat,
        Redirect: follower.on_redirect,
        Gone: follower.on_gone,
        Handoff: failover.on_handoff,
        Refused: follower.on_refused,
        Welcome: follower.on_welcome,  # our host answers a suspect's probe
        Write: DROP,  # writes go to the host only
        Ack: DROP,
        Leave: DROP,
    },
    Role.HOST: {
        Hello: merge.on_hello,  # host.on_hello, and a challenged rival's answer
        Write: host.on_write,
        Ack: host.on_ack,
        Heartbeat: host.on_heartbeat,
        Leave: host.on_leave,
        Redirect: merge.on_redirect,  # another host of this session
        Refused: merge.on_refused,
        Welcome: merge.on_welcome,
        Result: DROP,
        ChangeMsg: DROP,  # only the host makes changes
        Handoff: DROP,
        Gone: DROP,
    },
    Role.LEAVING: {
        Gone: follower.on_leaving_gone,
        Redirect: follower.on_leaving_redirect,
        Hello: DROP,
        Welcome: DROP,
        Write: DROP,
        Result: DROP,
        ChangeMsg: DROP,
        Ack: DROP,
        Heartbeat: DROP,
        Leave: DROP,
        Handoff: DROP,
        Refused: DROP,
    },
    Role.CLOSED: dict.fromkeys(_EVERY_MESSAGE, DROP),  # takes no message
}
