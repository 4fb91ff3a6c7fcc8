"""One node of a session: the whole protocol as a sans-I/O state machine.

Inputs are method calls carrying the caller's clock (``receive``, ``tick``,
``submit``, ``leave``, ``observe_host``); outputs are collected in
``outbox`` (messages to send), ``events`` (for the user) and ``outcomes``
(answers to this node's own writes). No sockets, threads or clocks here.

Roles::

    IDLE --start_host--> HOST                       (first of a session)
    IDLE --join--------> JOINING --Welcome--> PEER
    PEER --host silent / Redirect / Gone--> JOINING (next host in succession)
    PEER/JOINING --I am next in succession / Handoff--> HOST   (failover)
    HOST --a host that outranks me--> JOINING       (two halves merge)
    HOST/PEER --leave--> LEAVING --> CLOSED

The protocol (see the README's design section for why):

* The host alone numbers changes. It applies each one, sends it to every
  synced peer at once, and answers the writer only when its *successor* (the
  next member in join order) has acknowledged holding it. The successor is
  who takes over, so an acknowledged write survives the loss of the host.
* A change carries the term (epoch, origin host) that made it; a reconnecting
  peer names its last change and gets the changes after it when that change
  is in the host's history, else a snapshot (log matching, as in Raft).
* Writes carry (writer, request number); the replicated table of results makes
  a resent request return its first result instead of applying twice. A
  writer's requests apply in its own order: one that arrives after a lost
  one waits for the writer to send again from the lost one.
* Links may drop messages and come back within the timeouts, so nothing
  waits on one message: a writer resends what is unanswered after
  ``write_retry``; the successor's heartbeat names the last change it holds
  and counts as an acknowledgement; a peer that sees a gap says hello again.
* Two hosts of one session (a split that heals, two that started at once)
  announce themselves to each other with their standing; the rule of
  ``core/rank.py`` picks one, the other steps down and its peers follow the
  winner. Every acknowledged write the loser's side had that the winner's
  history lacks is reported to its writer (``WritesRolledBack``).
* Faults of a LAN (``core/quorum.py``): a peer that loses its host takes
  over at once only with evidence that a majority of the membership can
  reach it (Hellos naming the lost host); a host that hears from no
  majority stops acknowledging and removes nobody (``isolated``); either
  may go on alone after ``isolation_timeout`` unless durability is
  "majority". A candidate that a member asks to take over while holding
  more of the lost host's term (writes acknowledged to it that the
  candidate missed) gives way to that member (``_give_way``). A node that
  notices a gap in its own clock (it was paused) counts nobody as live on
  what it handles right after.
"""

from __future__ import annotations

import enum
import heapq
import logging
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import Any

from ..codec import MAX_KEY_BYTES, encode, hash_value
from ..errors import ProtocolError
from ..events import Event, Expelled, IsolationChanged, RolledBackWrite, WritesRolledBack
from ..events import Message as MessageEvent
from ..messages import (
    EPHEMERAL,
    MAX_COUNTER,
    MAX_PROFILE_BYTES,
    OWNER_ONLY,
    Ack,
    Change,
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
    Snapshot,
    Welcome,
    Write,
    restore_entries,
)
from .access import ALWAYS_ADMIN_OPS, Access, takeover_refusal
from .advert import info_fault
from .bounds import NEW_KEY_BYTES, key_bytes, snapshot_bytes
from .config import Config
from .ids import identity_of
from .quorum import Streak, has_majority, is_live, live_count, may_go_alone
from .rank import Rank, Standing, host_rank, wins
from .replica import Entry, Replica, history_contains, scalar_size, value_bytes
from .writer import Outcome, Writer

__all__ = ["Node", "Role", "Send"]

log = logging.getLogger(__name__)


class Role(enum.Enum):
    IDLE = "idle"
    JOINING = "joining"
    PEER = "peer"
    HOST = "host"
    LEAVING = "leaving"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Send:
    """A message for the adapter to deliver to node ``to`` at ``endpoints``."""

    to: str
    endpoints: tuple[str, ...]
    msg: Message


@dataclass(frozen=True, slots=True)
class _Acked:
    """One of our writes the host acknowledged, and the change that holds it."""

    req: int
    seq: int
    epoch: int
    origin: str
    keys: tuple[str, ...]


@dataclass(slots=True)
class _Conn:
    """The host's view of one member's connection."""

    last_heard: float  # when its silence started to count (peer_timeout)
    synced: bool = False
    heard: Streak = field(default_factory=Streak)  # its messages, for liveness


_UNSYNCED = _Conn(last_heard=0.0)


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
        # peer side
        self._target: Member | None = None  # the host we follow or are joining
        self._heard = 0.0  # last time the target spoke
        self._beat_at = 0.0  # when we last sent to the target/peers
        self._hello_at = 0.0
        self._asked_since = 0.0  # first hello to the current target
        self._suspects: set[str] = set()
        # members asked who hosts while we wait for votes (_probe_members)
        self._probed: set[str] = set()
        self._failing_over = False
        self._leave_deadline = 0.0
        # The caller's clock at the latest input: TTLs are kept by it.
        self._clock = 0.0
        self._expiry: dict[str, float] = {}  # key -> when it expires, by our clock
        self._sent_at: dict[int, float] = {}  # request -> when last sent to a host
        self._write_keys: dict[int, tuple[str, ...]] = {}  # request -> keys it writes
        # our acknowledged writes, where they sit in the history
        self._acked: deque[_Acked] = deque()
        self._init_liveness()
        # host side
        self._conns: dict[str, _Conn] = {}
        self._awaiting: dict[int, tuple[str, int]] = {}  # seq -> (writer, req) to answer
        self._awaiting_seqs: list[int] = []  # a heap of the seqs above, lowest first
        self._durable = 0  # highest seq the successor holds
        self._successor: str | None = None
        # writer -> (tokens, when counted): the write-rate token buckets
        self._buckets: dict[str, tuple[float, float]] = {}
        # Hosts of another session we met (by Redirect or discovery): their
        # Hellos may move our epoch when they step down and join us.
        self._rivals: dict[str, tuple[str, ...]] = {}  # node id -> its endpoints
        # Members we dropped when they fell silent: one coming back from the
        # other half of a split may move our epoch, as a member would.
        self._departed: dict[str, tuple[()]] = {}
        # Identities whose session state we refused: never followed again.
        self._foreign: dict[str, tuple[()]] = {}

    def _init_liveness(self) -> None:
        """The state of core/quorum.py's rules, and of exact rollback reports."""
        # reported undone by a merge; and those a later merge brought back
        # (there is no event for that yet: see ``restored``)
        self._undone: dict[int, _Acked] = {}
        #: Requests of ours reported in a WritesRolledBack that a later merge
        #: restored (the history that won held them after all).
        self.restored: set[int] = set()
        # when we last woke from a pause; members that asked us to take over
        # from our host, and when; since when we have lost our host (peer) or
        # reached no majority (host)
        self._woke_at = float("-inf")
        self._evidence: dict[str, Streak] = {}
        # members that handed over to us on leaving: out of every majority
        self._handed: set[str] = set()
        # a member that asked us to take over holding more of the lost host's
        # changes than we do, whom we ask to take over instead; and members
        # ahead of us in succession that did that for us (_give_way)
        self._behind: str | None = None
        self._gave_way: set[str] = set()
        self._lost_since: float | None = None
        self._isolated_since: float | None = None
        # the last membership a majority of its own saw (host): who votes
        self._agreed: frozenset[str] = frozenset((self.me.id,))
        # the agreed membership we had when we went on alone, until we hear
        # a majority of it again: till then our side is no majority's
        self._lone_from: frozenset[str] | None = None

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
        limits). This node's identity is the session's admin for good,
        unless the session comes from a store (below).

        A session created from a store starts with its keys, *initial*
        (key, value, version, owner, flags, seconds of ttl left or 0), and
        numbers its changes after *initial_seq*, so versions keep growing,
        and with the access state it kept, *stored_access*, whole: its admin,
        lists, modes and limits (*access* is then unused). ValueError if
        that state refuses this node's identity."""
        admin = identity_of(self.me.id)
        if stored_access is not None:
            first = stored_access
            if not first.may_read(admin):
                raise ValueError(f"the stored access state refuses {admin}")
        else:
            first = replace(access or Access(), admin=admin, banned=frozenset())
        self._clock = now
        self._require_fresh("start_host")
        self.replica.session_id = session_id
        if initial or initial_seq:
            self.replica.seed(initial, initial_seq)
            self._expiry = {key: now + ttl for key, _, _, _, _, ttl in initial if ttl > 0}
        self.role, self.epoch, self.ready = Role.HOST, 1, True
        self._agreed = frozenset((self.me.id,))
        ops: list[tuple[Any, ...]] = [
            ("join", self.me_at(self.replica.seq + 1)),
            ("term", 1, self.me.id, None, "created"),
            ("access", first),
        ]
        if info:
            ops.append(("info", dict(info)))
        change = Change(seq=self.replica.seq + 1, epoch=1, origin=self.me.id, ops=tuple(ops))
        self._apply(change, report=False)
        self._beat_at = now

    def join(self, host_id: str, endpoints: tuple[str, ...], now: float) -> None:
        """Ask the host found by discovery to let us in."""
        self._clock = now
        self._require_fresh("join")
        self._follow(Member(id=host_id, name="", endpoints=endpoints), now)

    def receive(self, msg: Message, now: float) -> None:
        """Handle one decoded message from the network."""
        self._note_clock(now)
        if msg.sender == self.me.id:
            self._drop("from myself")
            return
        handler = _HANDLERS.get((self.role, type(msg)))
        if handler is None:
            self._drop(f"{type(msg).__name__} in role {self.role.name}")
            return
        handler(self, msg, now)

    def submit(
        self,
        ops: tuple[tuple[Any, ...], ...],
        conds: tuple[tuple[Any, ...], ...] = (),
        *,
        now: float,
    ) -> int:
        """Queue a write; its outcome appears in ``outcomes`` with the returned number."""
        self._note_clock(now)
        if self.role in (Role.LEAVING, Role.CLOSED):
            raise RuntimeError(f"can't write in role {self.role.name}")
        request = self.writer.new(ops, conds)
        self._write_keys[request.req] = tuple(
            op[1] for op in ops if op and op[0] in ("set", "del") and isinstance(op[1], str)
        ) + tuple(entry[0] for op in ops if op and op[0] == "restore" for entry in op[1])
        if self.role is Role.HOST:
            self._order(self.me.id, request.req, self.writer.acked_upto, ops, conds)
        elif self.role is Role.PEER and self._target is not None:
            self._send_write(request.req, ops, conds, now)
        # otherwise it is sent once a host welcomes us
        return request.req

    def leave(self, now: float) -> None:
        """Leave on purpose: a host hands over to its successor first."""
        self._note_clock(now)
        if self.role is Role.HOST:
            successor = self._synced_successor()
            self._close_host_side()
            if successor is None:
                self.role = Role.CLOSED
                return
            self._send_id(successor, Handoff(sender=self.me.id, epoch=self.epoch))
            self.role = Role.LEAVING
        elif self.role is Role.PEER and self._target is not None:
            self._send(self._target, Leave(sender=self.me.id, epoch=self.epoch))
            self.role = Role.LEAVING
        else:
            self.role = Role.CLOSED
            return
        self._leave_deadline = now + self.config.leave_timeout

    def observe_host(
        self, host_id: str, endpoints: tuple[str, ...], epoch: int, now: float
    ) -> None:
        """Discovery saw another host of this session (two halves of a split
        session, or two nodes that started hosting at once).

        We announce ourselves to it with our :meth:`standing`; the two settle
        on one by ``core/rank.py``, and the loser steps down. Standings travel
        in messages rather than in the advertisement, so both sides compare
        fresh numbers; ``epoch`` (what discovery advertised) is not needed for
        the decision."""
        self._note_clock(now)
        if self.role is not Role.HOST or host_id == self.me.id:
            return
        if self._may_lead(host_id):
            _remember(self._rivals, host_id, endpoints)
        self.outbox.append(Send(host_id, endpoints, self._announce("host")))

    def tick(self, now: float) -> None:
        """Run timers: heartbeats, liveness, hello retries, leave deadline."""
        self._note_clock(now)
        cfg = self.config
        if self.role is Role.HOST:
            self._check_isolation(now)
            if now - self._beat_at >= cfg.heartbeat_interval:
                self._beat_at = now
                beat = Heartbeat(sender=self.me.id, epoch=self.epoch, seq=self.replica.seq)
                for peer_id, conn in self._conns.items():
                    if conn.synced:
                        self._send_id(peer_id, beat)
            if self._expiry:
                self._expire(now)
            dead = [pid for pid, c in self._conns.items() if now - c.last_heard > cfg.peer_timeout]
            if dead and not self._may_remove(dead, now):
                dead = []  # without a majority we cannot tell who is cut off: remove nobody
            for peer_id in dead:
                self._remove_member(peer_id, "timeout", now)
        elif self.role is Role.PEER and self._target is not None:
            if now - self._heard > cfg.host_timeout:
                self._host_lost(self._target.id, now)
                return
            if now - self._beat_at >= cfg.heartbeat_interval:
                self._beat_at = now
                self._send(
                    self._target,
                    Heartbeat(sender=self.me.id, epoch=self.epoch, seq=self.replica.seq),
                )
            self._resend_unanswered(now)
        elif self.role is Role.JOINING and self._target is not None:
            # A node that holds a session gives up on a silent host and moves
            # along the succession; a first join is the adapter's to time out.
            if (self._failing_over or self.ready) and now - self._asked_since > cfg.host_timeout:
                self._host_lost(self._target.id, now)
            elif now - self._hello_at >= cfg.hello_retry:
                self._send_hello(now)
        elif self.role is Role.LEAVING and now >= self._leave_deadline:
            self.role = Role.CLOSED

    def next_deadline(self, now: float) -> float:
        """When ``tick`` next has something to do (an upper bound is fine)."""
        if self.role in (Role.IDLE, Role.CLOSED):
            return now + 1.0
        return now + min(self.config.heartbeat_interval, self.config.hello_retry) / 2

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
        live = self._live(self._clock)
        r = self.replica
        return Standing(
            host_id=self.me.id,
            epoch=self.epoch,
            live=live,
            # a side that went on alone holds its own majority, not the
            # session's: a real majority that went on too must win the merge
            majority=self._lone_from is None and self._majority_of(self._agreed, self._clock),
            seq=r.seq,
            terms=tuple(r.terms),
        )

    @property
    def isolated(self) -> bool:
        """Host only: it has heard from no majority of its session within
        ``host_timeout`` (it then acknowledges nothing, unless it was allowed
        to go on alone after ``isolation_timeout``)."""
        return self.role is Role.HOST and self._isolated_since is not None

    @property
    def target_id(self) -> str | None:
        """The host this node follows or is joining (None when it hosts)."""
        return self._target.id if self._target is not None else None

    @property
    def successor_id(self) -> str | None:
        """Host only: the synced successor that acknowledges changes, if any."""
        return self._successor if self.role is Role.HOST else None

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

    # ================================================================ liveness

    def _note_clock(self, now: float) -> None:
        """Keep the caller's clock. An input after a silence longer than
        host_timeout means we were not running (a pause, a frozen machine:
        the adapter calls ``tick`` far more often): what we handle now was
        sent long ago, so nobody counts as live on it."""
        if now - self._clock > self.config.host_timeout and self.role is not Role.IDLE:
            self._woke_at = now
            self.stats["woke"] += 1
        self._clock = now
        if self._woke_at == now and self.role is Role.HOST:
            self._check_isolation(now)

    def _live(self, now: float) -> int:
        """Host: itself and the members heard within host_timeout, since we woke."""
        return live_count((c.heard for c in self._conns.values()), now, self._woke_at, self.config)

    def _majority_of(
        self,
        ids: frozenset[str],
        now: float,
        *,
        within: float | None = None,
        exclude: tuple[str, ...] = (),
    ) -> bool:
        """Host: are we and the live members among *ids* a majority of them?
        Only those vote: players who joined us while we were isolated do not
        make us a majority of the membership we lost."""
        heard = (c.heard for pid, c in self._conns.items() if pid in ids and pid not in exclude)
        live = live_count(heard, now, self._woke_at, self.config, within=within)
        return has_majority(live, len(ids | {self.me.id}))

    def _check_isolation(self, now: float) -> None:
        """Host: are we heard by a majority of the last agreed membership?
        While we are, the current membership becomes agreed once that keeps
        a majority; when we stop being, we become ``isolated``. The lone-node
        rule: after isolation_timeout (durability "default") we go on with
        the players we hear, which become the agreed membership."""
        if not self._majority_of(self._agreed, now) and may_go_alone(
            self._isolated_since, now, self.config
        ):
            self.stats["went_alone"] += 1
            if self._lone_from is None:
                self._lone_from = self._agreed
            cfg, woke = self.config, self._woke_at
            live = {pid for pid, c in self._conns.items() if is_live(c.heard, now, woke, cfg)}
            self._agreed = frozenset(live | {self.me.id})
        if self._lone_from is not None and self._majority_of(self._lone_from, now):
            self._lone_from = None
        if self._majority_of(self._agreed, now):
            members = frozenset(m.id for m in self.replica.members) | {self.me.id}
            if self._majority_of(members, now):
                self._agreed = members
            if self._isolated_since is not None:
                self._isolated_since = None
                self.events.append(IsolationChanged(isolated=False))
                if self._successor is not None:
                    self._ask_ack(self._successor)  # it was told not to acknowledge
                self._release_durable()
        elif self._isolated_since is None:
            self._isolated_since = now
            self.stats["isolated"] += 1
            self.events.append(IsolationChanged(isolated=True))

    def _may_remove(self, dead: list[str], now: float) -> bool:
        """Host: removing members changes the membership, so only while the
        others (not counting them) are a majority of the agreed membership;
        after isolation_timeout that is whoever we hear (_check_isolation).
        The others must have been heard a heartbeat more recently than
        host_timeout: members cut off together fall silent a heartbeat apart,
        and the last of them must not vouch for the removal of the first."""
        cfg = self.config
        within = max(cfg.host_timeout - cfg.heartbeat_interval, cfg.heartbeat_interval)
        return self._majority_of(self._agreed, now, within=within, exclude=tuple(dead))

    def _acks_paused(self) -> bool:
        """Host: isolated and not (yet) allowed to go on alone."""
        since = self._isolated_since
        return since is not None and not may_go_alone(since, self._clock, self.config)

    def _note_evidence(self, msg: Hello, now: float) -> None:
        """A member asks us to take over from the host it lost, which is ours:
        it can reach us, which counts towards a majority at once (a takeover
        waits for no second Hello: we lost that host too, see
        _asked_to_take_over, so a Hello held by TCP is no news against it)."""
        if self.replica.member(msg.sender) is None:
            return
        self._evidence.setdefault(msg.sender, Streak()).hear(now, self.config)

    def _may_take_over(self, now: float) -> bool:
        """Peer next in succession: take over only if we reach a majority of the
        membership (ourselves and the members that asked us, lately), or
        after isolation_timeout without one, where allowed."""
        reach = live_count(self._evidence.values(), now, self._woke_at, self.config)
        staying = [m for m in self.replica.members if m.id not in self._handed]
        if has_majority(reach, len(staying)):
            return True
        return may_go_alone(self._lost_since, now, self.config)

    # ================================================================ host side

    def _order(
        self,
        writer: str,
        req: int,
        acked_upto: int,
        ops: tuple[tuple[Any, ...], ...],
        conds: tuple[tuple[Any, ...], ...],
    ) -> None:
        """Decide one write and make it the next change."""
        record = self.replica.dedupe.get(writer)
        if req > max(record.last_req if record else 0, acked_upto) + 1:
            # An earlier request of this writer is still pending and not here:
            # it was lost on the way. Requests are applied in the writer's
            # order, so this one waits for the writer to resend from there.
            self.stats["write_gap"] += 1
            return
        if record is not None and req <= record.last_req:
            kept = record.results.get(req)
            if kept is None:
                self.stats["duplicate_without_result"] += 1
                self._answer(writer, req, "invalid", "request already applied", 0)
            elif kept[2] > self._durable_point():
                self._await(kept[2], writer, req)
            else:
                self._answer(writer, req, kept[0], kept[1], kept[2])
            return
        status, detail = self._check(writer, ops, conds)
        change = Change(
            seq=self.replica.seq + 1,
            epoch=self.epoch,
            origin=self.me.id,
            writer=writer,
            req=req,
            acked_upto=acked_upto,
            status=status,
            detail=detail,
            ops=ops if status == "ok" else (),
        )
        expelled: dict[str, tuple[str, ...]] = {}  # member -> its endpoints
        acl = status == "ok" and any(op[0] in ALWAYS_ADMIN_OPS for op in ops)
        if acl:
            # A member the new rules refuse leaves in the same change, so no
            # replica ever holds the rule without its effect.
            leaves = self._expulsions(ops)
            expelled = {op[1]: self._endpoints_of(op[1]) for op in leaves}
            change = replace(change, ops=ops + leaves)
        self._apply(change)
        self._await(change.seq, writer, req)
        self._release_durable()
        if acl:
            self._after_expulsions(change, expelled)

    def _expulsions(self, ops: tuple[tuple[Any, ...], ...]) -> tuple[tuple[Any, ...], ...]:
        """Leave ops for the members (other than this host) that *ops*' access
        changes refuse."""
        access = self.replica.access
        for op in ops:
            if op[0] == "acl":
                access = access.apply_acl(op[1], op[2])
            elif op[0] == "access_set":
                access = access.with_settings(op[1])
        return tuple(
            ("leave", m.id, access.refusal(identity_of(m.id)))
            for m in self.replica.members
            if m.id != self.me.id and not access.may_read(identity_of(m.id))
        )

    def _after_expulsions(self, change: Change, expelled: dict[str, tuple[str, ...]]) -> None:
        """Host: tell each member that *change* removed why (at *expelled*, its
        endpoints), forget its connection; leave ourselves if the change
        refuses us."""
        for op in change.ops:
            if op[0] != "leave":
                continue
            self._conns.pop(op[1], None)
            self._buckets.pop(op[1], None)
            refusal = Refused(sender=self.me.id, epoch=self.epoch, reason=op[2])
            self.outbox.append(Send(op[1], expelled.get(op[1], ()), refusal))
        self._update_successor()
        mine = identity_of(self.me.id)
        if not self.replica.access.may_read(mine):
            self.leave(self._clock)  # hand over first, as any host that leaves
            self._expel(self.replica.access.refusal(mine))

    def _check(
        self, writer: str, ops: tuple[tuple[Any, ...], ...], conds: tuple[tuple[Any, ...], ...]
    ) -> tuple[str, Any]:
        """The host's verdict on a write: ("ok", None) or a refusal with detail."""
        if not ops:
            return "invalid", "a write needs at least one operation"
        kinds = {op[0] for op in ops}
        if not kinds <= _WRITE_OPS:
            # join/leave/term/access name a member or the host: only the host
            # makes them, never on a writer's word.
            self._refusal("forged_ops", writer)
            return "invalid", f"operations {sorted(kinds - _WRITE_OPS)} are not allowed in a write"
        access = self.replica.access
        identity = identity_of(writer)
        denied = access.check_write(identity, kinds)
        if denied is not None:
            self._refusal("writes_denied", writer)
            return "denied", denied
        # A change of settings (the admin's alone, checked above) takes no
        # token: a rate set by mistake can always be lifted.
        if kinds != {"access_set"} and not self._take_token(writer, access):
            self._refusal("writes_rate_limited", writer)
            return "rate_limited", {"rate": access.write_rate, "burst": access.write_burst}
        data = self.replica.data
        limit = self.config.max_value_size
        sizes: dict[str, int] = {}  # key -> its value's size after the write, -1: deleted
        profile_grow = 0  # bytes the writer's new profile adds to the session's
        acl = access  # as the write's ACL ops leave it, one after another
        for op in ops:
            kind = op[0]
            if kind == "acl":
                refused = acl.check_acl(op[1], op[2])
                if refused is not None:
                    return "invalid", refused
                acl = acl.apply_acl(op[1], op[2])
                continue
            if kind == "access_set":
                continue  # checked whole on the wire and by check_write (admin)
            if kind == "profile":
                size = len(encode(op[1]))
                if size > MAX_PROFILE_BYTES:  # as the wire and the API hold it
                    return "too_large", {"key": kind, "limit": MAX_PROFILE_BYTES}
                me = self.replica.member(writer)
                profile_grow = size - (value_bytes(me.profile) if me is not None else 0)
                continue
            if kind == "info":
                if len(encode(op[1])) > limit:
                    return "too_large", {"key": kind, "limit": limit}
                # What the API checks, so that every host can advertise it.
                fault = info_fault({**self.replica.info, **op[1]}, self.config.advert_room)
                if fault is not None:
                    self._refusal("info_refused", writer)
                    return "invalid", fault
                continue
            if kind == "msg":
                if op[1] and self.replica.member(op[1]) is None:
                    return "no_peer", {"peer": op[1]}
                if len(encode(op[2])) > limit:
                    return "too_large", {"key": "message", "limit": limit}
                continue
            if kind == "restore":
                refusal = self._check_restore(op[1], identity, access, sizes)
                if refusal is not None:
                    return refusal
                continue
            if len(op[1].encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
                return "invalid", "key too long"
            if kind == "set":
                size = len(encode(op[2]))
                if size > limit:
                    return "too_large", {"key": op[1], "limit": limit}
                sizes[op[1]] = _stored_size(op[2], size)
            else:
                sizes[op[1]] = -1
            entry = data.get(op[1])
            # Owned by the player (the identity), not by one run of the game.
            if entry is not None and entry.flags & OWNER_ONLY and not _owns(entry, identity):
                return "denied", {"key": op[1], "owner": entry.owner}
        quota = self._quota(sizes, access, profile_grow) if sizes or profile_grow > 0 else None
        if quota is not None:
            self._refusal("writes_over_quota", writer)
            return "quota", quota
        for cond in conds:
            kind, key = cond[0], cond[1]
            entry = data.get(key)
            if kind == "exists" and entry is None:
                return "missing", {"key": key}
            if kind == "absent" and entry is not None:
                return "conflict", {"key": key, "exists": True, "value": entry.value}
            if kind == "hash":
                if entry is None:
                    return "missing", {"key": key}
                if hash_value(entry.value) != cond[2]:
                    return "conflict", {
                        "key": key,
                        "exists": True,
                        "value": entry.value,
                    }
        return "ok", None

    def _check_restore(
        self,
        entries: tuple[tuple[str, Any, str, int, float], ...],
        identity: str,
        access: Access,
        sizes: dict[str, int],
    ) -> tuple[str, Any] | None:
        """A restore replaces every lasting key: None if it may, else the
        refusal. Notes in *sizes* what each key will hold, for the quotas."""
        try:
            # Our own restore comes from a file, not the wire: hold it to what
            # every peer will accept (a ttl in range...), or they all drop it.
            restore_entries([list(entry) for entry in entries])
        except ProtocolError as exc:
            return "invalid", f"restore: {exc}"
        limit = self.config.max_value_size
        new = {entry[0]: entry for entry in entries}
        for key, value, *_ in entries:
            if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
                return "invalid", "key too long"
            size = len(encode(value))
            if size > limit:
                return "too_large", {"key": key, "limit": limit}
            sizes[key] = _stored_size(value, size)
        for key, old in self.replica.data.items():
            entry = new.get(key)
            # Another player's owner-only key, ephemeral or not: only the admin
            # may change it, so the restore must leave it exactly as it is.
            if old.flags & OWNER_ONLY and not _owns(old, identity) and identity != access.admin:
                ephemeral_left = old.flags & EPHEMERAL and entry is None
                if not ephemeral_left and (entry is None or not _restore_keeps(old, entry)):
                    return "denied", {"key": key, "owner": old.owner}
            if key not in new and not old.flags & EPHEMERAL:
                sizes[key] = -1  # lasting keys not in the backup go; ephemeral ones stay
        return None

    def _take_token(self, writer: str, access: Access) -> bool:
        """The writer's token bucket: ``write_burst`` writes at once, refilled
        at ``write_rate`` a second, by the caller's clock."""
        now = self._clock
        tokens, then = self._buckets.get(writer, (float(access.write_burst), now))
        tokens = min(float(access.write_burst), tokens + (now - then) * access.write_rate)
        if tokens < 1.0:
            self._buckets[writer] = (tokens, now)
            return False
        self._buckets[writer] = (tokens - 1.0, now)
        return True

    def _quota(
        self, sizes: dict[str, int], access: Access, profile_grow: int = 0
    ) -> dict[str, Any] | None:
        """None if the session stays within max_keys and max_total_bytes once
        each key of *sizes* holds a value of that size (-1: deleted) and the
        members' profiles grew by *profile_grow* bytes, else what it would
        exceed. A write that does not grow the session is let through, so one
        over its limits can still be cleaned up."""
        data = self.replica.data
        before = self.replica.total_bytes + self.replica.profile_bytes
        keys, total = len(data), before + profile_grow
        grow = sum(size for size in sizes.values() if size > 0)
        most_bytes = min(access.max_total_bytes, self._snapshot_room(sizes, every_new=True))
        if keys + len(sizes) <= access.max_keys and total + grow <= most_bytes:
            return None  # fits even if every key were new: the common case, found cheaply
        for key, size in sizes.items():
            old = data.get(key)
            keys += (size >= 0) - (old is not None)
            total += max(size, 0) - (old.size if old is not None else 0)
        if keys > access.max_keys and keys > len(data):
            return {"limit": "max_keys", "max": access.max_keys}
        if total > access.max_total_bytes and total > before:
            return {"limit": "max_total_bytes", "max": access.max_total_bytes}
        if total > self._snapshot_room(sizes) and (total > before or keys > len(data)):
            # A newcomer could no longer take the state in one snapshot.
            return {"limit": "max_frame_size", "max": self.config.max_snapshot_bytes}
        return None

    def _snapshot_room(self, sizes: dict[str, int], *, every_new: bool = False) -> int:
        """Bytes of values and profiles the snapshot has room for once the
        keys of *sizes* (-1: deleted) are written; *every_new*: as if none
        existed yet (an upper bound, found without lookups)."""
        records = self.replica.record_bytes
        data = self.replica.data
        for key, size in sizes.items():
            old = None if every_new else data.get(key)
            if size >= 0 and old is None:
                records += len(key) + NEW_KEY_BYTES
            elif size < 0 and old is not None:
                records -= key_bytes(key, old.owner)
        return self.config.max_snapshot_bytes - snapshot_bytes(self.replica, 0, records)

    def _apply(self, change: Change, *, report: bool = True) -> None:
        """Host: apply a change it made and send it to every synced peer."""
        self.replica.apply(change, events=self.events if report else None)
        self._note_ttl(change)
        # The successor first: its acknowledgement is what the writer waits for
        # (and it answers the writer itself: not while we are isolated).
        successor = self._successor
        if successor is not None and self._conns.get(successor, _UNSYNCED).synced:
            ack = not self._acks_paused()
            self._send_id(
                successor, ChangeMsg(sender=self.me.id, epoch=self.epoch, change=change, ack=ack)
            )
        others = ChangeMsg(sender=self.me.id, epoch=self.epoch, change=change, ack=False)
        for peer_id, conn in self._conns.items():
            if conn.synced and peer_id != successor:
                self._send_id(peer_id, others)  # one message: the adapter encodes it once
        self._release_own()

    def _note_ttl(self, change: Change) -> None:
        """Keep the expiry time of every key with a ttl, by our clock: whoever
        hosts next expires them by its own."""
        for op in change.ops:
            if op[0] == "set":
                if len(op) == 5 and op[4] > 0:
                    self._expiry[op[1]] = self._clock + op[4]
                else:
                    self._expiry.pop(op[1], None)
            elif op[0] == "del":
                self._expiry.pop(op[1], None)
            elif op[0] == "restore":
                data = self.replica.data
                self._expiry = {
                    key: at
                    for key, at in self._expiry.items()
                    if key in data and data[key].flags & EPHEMERAL
                }
                for key, _, _, _, ttl in op[1]:
                    if ttl > 0:
                        self._expiry[key] = self._clock + ttl

    def _expire(self, now: float) -> None:
        """Host: delete the keys whose ttl ran out, as one change."""
        due = sorted(key for key, at in self._expiry.items() if at <= now)
        for key in due:
            del self._expiry[key]
        ops = tuple(("del", key) for key in due if key in self.replica.data)
        if ops:
            self.stats["expired"] += len(ops)
            self._apply(
                Change(seq=self.replica.seq + 1, epoch=self.epoch, origin=self.me.id, ops=ops)
            )

    def ttl_left(self) -> dict[str, float]:
        """Seconds left of every key with a ttl, as of the latest input."""
        return {key: max(0.001, at - self._clock) for key, at in self._expiry.items()}

    def _snapshot(self) -> Snapshot:
        return self.replica.snapshot(self.ttl_left())

    def _durable_point(self) -> int:
        """Highest seq that survives the loss of this host: none while we are
        isolated (a takeover on the other side may not hold it)."""
        if self._acks_paused():
            return 0
        if not self.replica.succession():
            return self.replica.seq  # alone: nobody else could hold it
        return self._durable if self._successor is not None else 0

    def _await(self, seq: int, writer: str, req: int) -> None:
        self._awaiting[seq] = (writer, req)
        heapq.heappush(self._awaiting_seqs, seq)

    def _release_durable(self) -> None:
        # A heap, not a scan: with thousands of writes in flight, a scan per
        # write made the host quadratic.
        point = self._durable_point()
        seqs = self._awaiting_seqs
        while seqs and seqs[0] <= point:
            entry = self._awaiting.pop(heapq.heappop(seqs), None)
            if entry is None:
                continue  # the same seq was awaited twice
            writer, req = entry
            record = self.replica.dedupe.get(writer)
            kept = record.results.get(req) if record else None
            if kept is not None:
                self._answer(writer, req, kept[0], kept[1], kept[2])

    def _answer(self, writer: str, req: int, status: str, detail: Any, seq: int) -> None:
        if writer == self.me.id:
            outcome = Outcome(req=req, status=status, detail=detail, seq=seq)
            self._deliver(self.writer.result(outcome, self.replica.seq))
        elif writer in self._conns:
            msg = Result(
                sender=self.me.id,
                epoch=self.epoch,
                req=req,
                status=status,
                detail=detail,
                seq=seq,
            )
            self._send_id(writer, msg)

    def _synced_successor(self) -> str | None:
        for m in self.replica.succession():
            conn = self._conns.get(m.id)
            return m.id if conn is not None and conn.synced else None
        return None

    def _update_successor(self, *, resynced: str | None = None) -> None:
        """Pick the successor again after membership or sync changed (or after
        member *resynced* said hello again); a new one is sent every change
        still awaiting durability, to acknowledge.

        It is asked to acknowledge the latest change even when nothing awaits:
        a resent request whose result was decided in an earlier term waits on
        that acknowledgement, and no new change may come to bring one. A
        successor that says hello again (it missed changes, and a welcome is
        not acknowledged) is asked again for the same reason."""
        successor = self._synced_successor()
        if successor != self._successor or (successor is not None and successor == resynced):
            self._successor, self._durable = successor, 0
            if successor is not None:
                self._ask_ack(successor)
        # Always: losing the last peer makes everything awaiting durable.
        self._release_durable()

    def _ask_ack(self, successor: str) -> None:
        """Send *successor* every change still awaiting durability (at least
        the latest one), each asking for an acknowledgement."""
        first = min(self._awaiting, default=self.replica.seq)
        for change in self.replica.log:
            if change.seq >= first:
                msg = ChangeMsg(sender=self.me.id, epoch=self.epoch, change=change, ack=True)
                self._send_id(successor, msg)

    def _remove_member(self, peer_id: str, reason: str, now: float) -> None:
        self._conns.pop(peer_id, None)
        self._buckets.pop(peer_id, None)
        member = self.replica.member(peer_id)
        if member is not None:
            change = Change(
                seq=self.replica.seq + 1,
                epoch=self.epoch,
                origin=self.me.id,
                ops=(("leave", peer_id, reason),),
            )
            self._apply(change)
            if reason == "timeout":
                _remember(self._departed, peer_id, ())
            if reason == "timeout" and member.endpoints:
                # It may only have been silent for a while: tell it, so that
                # it says hello again at once rather than after host_timeout
                # (we will not know where it is once it is no member).
                self.outbox.append(
                    Send(peer_id, member.endpoints, Gone(sender=self.me.id, epoch=self.epoch))
                )
        self._update_successor()

    def _close_host_side(self) -> None:
        self._conns.clear()
        self._buckets.clear()
        self._awaiting.clear()
        self._awaiting_seqs.clear()
        self._successor, self._durable = None, 0

    def _take_over(self, reason: str, now: float) -> None:
        """Become host at a new epoch, after the host died or handed over."""
        old = self.replica.host_id
        if old == self.me.id:
            # Our own history: we hosted it, stepped down to another host and
            # lost that one before it welcomed us. There is no old host to drop.
            old = ""
        old_endpoints = self._endpoints_of(old) if old else ()
        gone = [
            m.id
            for m in self.replica.members
            if m.id != self.me.id and (m.id == old or m.id in self._suspects)
        ]
        self.role, self.ready = Role.HOST, True
        self.epoch = max(self.epoch, self.replica.epoch) + 1
        self._target, self._failing_over = None, False
        # A result held for a change we have not applied names a seq of the
        # lost host's history, not of ours: those requests are ordered again.
        self.writer.held.clear()
        self._term_liveness(gone, reason == "handoff", now)
        self._successor, self._durable, self._awaiting = None, 0, {}
        self._awaiting_seqs = []
        leave_reason = "left" if reason == "handoff" else "failed"
        ops: list[tuple[Any, ...]] = [("term", self.epoch, self.me.id, old or None, reason)]
        ops.extend(("leave", mid, leave_reason) for mid in gone)
        if self.replica.member(self.me.id) is None:
            ops.append(("join", self.me_at(self.replica.seq + 1)))
        self._apply(
            Change(
                seq=self.replica.seq + 1,
                epoch=self.epoch,
                origin=self.me.id,
                ops=tuple(ops),
            )
        )
        # Tell everyone at once rather than let each find out by timeout; the old
        # host too, which steps down if it is in fact alive.
        notice = self._announce(reason)
        for m in self.replica.members:
            if m.id != self.me.id:
                self._send(m, notice)
        if old and old != self.me.id and self.replica.member(old) is None and old_endpoints:
            self.outbox.append(Send(old, old_endpoints, notice))
        self._suspects.clear()
        self._probed.clear()
        self._behind, self._gave_way = None, set()
        self._beat_at = now
        for request in self.writer.unacked():
            self._order(self.me.id, request.req, self.writer.acked_upto, request.ops, request.conds)
        self._release_durable()

    def _term_liveness(self, gone: list[str], handoff: bool, now: float) -> None:
        """A new host's view of who is live. After a handoff, the members the
        old host served (it handed them over); after a failover, the members
        that asked us to take over: the others have peer_timeout to say hello.
        The agreed membership is the one we lost the host from (the lost host
        is in it), so a node that goes on alone stays isolated, acting as
        the lone-node rule allows."""
        ids = [m.id for m in self.replica.members if m.id not in gone and m.id != self.me.id]
        self._conns = {mid: _Conn(last_heard=now) for mid in ids}
        for mid, conn in self._conns.items():
            if handoff:
                conn.heard = Streak(since=now - self.config.heartbeat_interval, last=now)
            elif mid in self._evidence:
                conn.heard = self._evidence[mid]
        if handoff:
            self._agreed = frozenset(self._conns) | {self.me.id}
        else:  # the membership we lost the host from, the host included
            members = frozenset(m.id for m in self.replica.members) | {self.me.id}
            self._agreed = members - self._handed  # unless it left on purpose
        self._isolated_since = None
        if not self._majority_of(self._agreed, now):
            self._isolated_since = self._lost_since if self._lost_since is not None else now
        self._evidence.clear()
        self._handed.clear()
        self._lone_from = None
        self._lost_since = None

    def _step_down(self, winner: Member, now: float) -> None:
        """Another host outranks us: send our peers there and join it."""
        notice = Redirect(
            sender=self.me.id,
            epoch=self.epoch,
            host_id=winner.id,
            endpoints=winner.endpoints,
            reason="merge",
        )
        for peer_id in self._conns:
            self._send_id(peer_id, notice)
        self._close_host_side()
        self.stats["stepped_down"] += 1
        self._follow(winner, now)

    # ---------------------------------------------------------------- host handlers

    def _host_hello(self, msg: Hello, now: float) -> None:
        identity = identity_of(msg.sender)
        if not self.replica.access.may_read(identity):
            # readmode, or a ban: checked on every hello, a member's too, so a
            # new host refuses what the old one did; before anything else, so
            # a refused hello changes nothing here (not even our epoch)
            why = self.replica.access.refusal(identity)
            self._refusal(f"refused_{why}", msg.sender)
            refused = Refused(sender=self.me.id, epoch=self.epoch, reason=why)
            self.outbox.append(Send(msg.sender, msg.endpoints, refused))
            if self.replica.member(msg.sender) is not None:
                self._remove_member(msg.sender, why, now)
            return
        if msg.epoch > self.epoch:
            if not self._may_move_epoch(msg):
                # Asked again soon: by then a merging host is known to us.
                self._drop("hello with an epoch we cannot verify")
                return
            # The newcomer knew a later epoch than ours: move past it so that
            # nothing from that other lineage can be taken for ours.
            self.epoch = msg.epoch + 1
            self._apply(
                Change(
                    seq=self.replica.seq + 1,
                    epoch=self.epoch,
                    origin=self.me.id,
                    ops=(("term", self.epoch, self.me.id, self.me.id, "merge"),),
                )
            )
        if self.replica.member(msg.sender) is None:
            # A newcomer: is there room? Only a current member skips this (its
            # id is in our membership), never a Hello that names our session.
            info = self.replica.info
            limit = info.get("max_players")
            reason = "closed" if info.get("joinable") is False else None
            if limit is not None and len(self.replica.members) >= limit:
                reason = "full"
            if reason is not None:
                self.stats[f"refused_{reason}"] += 1
                refusal = Refused(sender=self.me.id, epoch=self.epoch, reason=reason)
                self.outbox.append(Send(msg.sender, msg.endpoints, refusal))
                return
        newcomer = self.replica.member(msg.sender) is None
        if newcomer:
            member = Member(
                id=msg.sender,
                name=msg.name,
                endpoints=msg.endpoints,
                joined_seq=self.replica.seq + 1,
                profile=msg.profile,
                joined_at=msg.joined_at,
            )
            self._apply(
                Change(
                    seq=self.replica.seq + 1,
                    epoch=self.epoch,
                    origin=self.me.id,
                    ops=(("join", member),),
                )
            )
        changes = None
        if msg.session_id == self.replica.session_id:
            changes = self.replica.changes_after(
                msg.resume_seq, msg.resume_epoch, msg.resume_origin
            )
            if changes and any(op[0] == "restore" for c in changes for op in c.ops):
                # A restore is as big as the state: one snapshot rather than the
                # restore plus every change around it in one message.
                changes = None
        welcome = Welcome(
            sender=self.me.id,
            epoch=self.epoch,
            session_id=self.replica.session_id,
            host_id=self.me.id,
            snapshot=self._snapshot() if changes is None else None,
            changes=tuple(changes or ()),
            resume_seq=msg.resume_seq,
            resume_epoch=msg.resume_epoch,
            resume_origin=msg.resume_origin,
        )
        self.stats["welcome_snapshot" if changes is None else "welcome_catchup"] += 1
        self._send_id(msg.sender, welcome)
        self._welcomed(msg.sender, newcomer, now)
        self._update_successor(resynced=msg.sender)

    def _welcomed(self, sender: str, newcomer: bool, now: float) -> None:
        """Host: *sender* is a synced member now; its streak of messages goes
        on if it had one. A newcomer is live at once and in the agreed
        membership (a bigger one only makes majorities harder to reach), but
        not while we are isolated: it would help outvote the members we lost."""
        old = self._conns.get(sender)
        conn = self._conns[sender] = _Conn(last_heard=now, synced=True)
        if old is not None:
            conn.heard = old.heard
        elif newcomer and self._isolated_since is None:
            conn.heard = Streak(since=now - self.config.heartbeat_interval, last=now)
            self._agreed |= {sender}
        conn.heard.hear(now, self.config)

    def _host_write(self, msg: Write, now: float) -> None:
        conn = self._member_conn(msg, now)
        if conn is None:
            return
        if msg.epoch != self.epoch:
            self._drop("write from another epoch")
            return
        self._order(msg.sender, msg.req, msg.acked_upto, msg.ops, msg.conds)

    def _host_ack(self, msg: Ack, now: float) -> None:
        if self._member_conn(msg, now) is not None:
            self._successor_holds(msg.sender, msg.epoch, msg.seq)

    def _host_heartbeat(self, msg: Heartbeat, now: float) -> None:
        # A synced peer's heartbeat names the last change it holds: from the
        # successor it is an acknowledgement too, which heals a lost Ack.
        if self._member_conn(msg, now) is not None:
            self._successor_holds(msg.sender, msg.epoch, msg.seq)

    def _successor_holds(self, sender: str, epoch: int, seq: int) -> None:
        if sender == self._successor and epoch == self.epoch and seq > self._durable:
            self._durable = min(seq, self.replica.seq)
            self._release_durable()

    def _host_leave(self, msg: Leave, now: float) -> None:
        if self._member_conn(msg, now) is None:
            return
        self._send_id(msg.sender, Gone(sender=self.me.id, epoch=self.epoch))
        self._remove_member(msg.sender, "left", now)

    def _host_redirect(self, msg: Redirect, now: float) -> None:
        """Another host announces itself: it took over while we were cut off,
        or discovery made us meet. ``rank.wins`` decides; the loser steps
        down, the winner answers once, so that the other learns it lost."""
        if msg.host_id != msg.sender:
            self._drop("redirect to a third node, sent to a host")
            return
        if not self._may_meet(msg, now):
            return
        _remember(self._rivals, msg.sender, msg.endpoints)
        mine = self.standing()
        theirs = Standing(
            host_id=msg.host_id,
            epoch=msg.epoch,
            live=max(1, msg.players),
            majority=msg.majority,
            seq=msg.seq,
            terms=msg.terms,
        )
        if wins(theirs, mine):
            self._step_down(Member(id=msg.host_id, name="", endpoints=msg.endpoints), now)
        elif msg.reason != "outranked":
            self.outbox.append(Send(msg.sender, msg.endpoints, self._announce("outranked")))

    def _announce(self, reason: str) -> Redirect:
        """A host's notice that it hosts, with its standing (core/rank.py)."""
        mine = self.standing()
        return Redirect(
            sender=self.me.id,
            epoch=mine.epoch,
            host_id=self.me.id,
            endpoints=self.me.endpoints,
            reason=reason,
            players=mine.live,
            majority=mine.majority,
            seq=mine.seq,
            terms=mine.terms,
        )

    def _host_welcome(self, msg: Welcome, now: float) -> None:
        """A host welcomes a Hello we sent before we took over (held by TCP,
        or a question of ours, _probe_members). Tell it we are not coming,
        or it keeps us as a member it hears from (our heartbeats, as host),
        refuses to weigh our announcements (_may_meet) while we refuse its
        own for the same reason, and the two hosts never settle."""
        self._drop("Welcome in role HOST")
        endpoints = self._endpoints_of(msg.sender) or self._rivals.get(msg.sender, ())
        if endpoints:
            leave = Leave(sender=self.me.id, epoch=msg.epoch)
            self.outbox.append(Send(msg.sender, endpoints, leave))

    def _member_conn(self, msg: Message, now: float) -> _Conn | None:
        conn = self._conns.get(msg.sender)
        if conn is None:
            self._drop(f"{type(msg).__name__} from a non-member")
            member = self.replica.member(msg.sender)
            endpoints = member.endpoints if member else self._endpoints_of(msg.sender)
            if endpoints:
                self.outbox.append(
                    Send(msg.sender, endpoints, Gone(sender=self.me.id, epoch=self.epoch))
                )
            return None
        conn.last_heard = now
        conn.heard.hear(now, self.config)
        return conn

    # ================================================================ who may change a role

    def _may_lead(self, node_id: str) -> bool:
        """Whether *node_id* may make us change role (step down to it, follow
        it, take over for it, load its state): never an identity our access
        state refuses (banned, not authorized), nor one whose session state
        we refused before (it named another admin)."""
        identity = identity_of(node_id)
        return self.replica.access.may_read(identity) and identity not in self._foreign

    def _may_meet(self, msg: Redirect, now: float) -> bool:
        """Host: whether a host's announcement may be weighed against our rank.
        A member we heard from just now is ours, not the host of another half
        (that one stopped hearing us): its claim is not weighed, only answered;
        an epoch no session reaches is a lie."""
        conn = self._conns.get(msg.sender)
        if not self._may_lead(msg.sender):
            self._drop("host announcement from a refused identity")
            why = self.replica.access.refusal(identity_of(msg.sender))
            if why in _ACCESS_REFUSALS:
                # Say so: if it hosts the other half of our session, our
                # admin's refusal makes it send that half here (_host_refused).
                refused = Refused(sender=self.me.id, epoch=self.epoch, reason=why)
                self.outbox.append(Send(msg.sender, msg.endpoints, refused))
        elif (
            conn is not None
            and now - conn.last_heard < 2 * self.config.heartbeat_interval
            # a streak, not a burst: what TCP held while our cable was out
            # (its acks, then its takeover notice) says nothing of now
            and is_live(conn.heard, now, self._woke_at, self.config)
        ):
            self._drop("host announcement from a live member")
            if msg.reason != "outranked":
                # Not weighed, but answered: a member that took over while we
                # were slow (under load) learns that we host and comes back.
                self.outbox.append(Send(msg.sender, msg.endpoints, self._announce("outranked")))
        elif msg.epoch >= _EPOCH_CEILING:
            self._drop("host announcement with an implausible epoch")
        else:
            return True
        return False

    def _may_move_epoch(self, msg: Hello) -> bool:
        """Host: a Hello may take our epoch past its own only from a member of
        ours (or one that fell silent: the other half of a split) or a host we
        met (stepping down to us), and never near the top of the wire range,
        so that epoch + 1 always encodes."""
        sender = msg.sender
        member = self.replica.member(sender) is not None or sender in self._departed
        known = member or sender in self._rivals
        return known and msg.epoch < _EPOCH_CEILING

    def _host_refused(self, msg: Refused, now: float) -> None:
        """A host we met refuses our identity. Only our admin's word counts
        (its identity is proven with a secret): it banned us while the session
        was split. Send our half to it and leave, as a banned member would."""
        endpoints = self._rivals.get(msg.sender)
        admin = self.replica.access.admin
        if identity_of(msg.sender) != admin or msg.reason not in _ACCESS_REFUSALS or not endpoints:
            self._drop("refusal from a host that is not our admin's")
            return
        self._step_down(Member(id=msg.sender, name="", endpoints=endpoints), now)

    def _may_expel(self, host_id: str) -> bool:
        """Whether a host's refusal by access ends our session. Never the
        admin's: no state of its session refuses it, so a host that does holds
        another session's state. Anyone else: as a ban made in the other half
        of a split reaches it (the refuser may hold the admin's act)."""
        admin = self.replica.access.admin
        return identity_of(self.me.id) != admin or self.replica.member(host_id) is not None

    def _sent_in_vain(self, lost: str, now: float) -> bool:
        """A merge sent us to *lost* (our own step-down, or our host's Redirect)
        and it never welcomed us: its rank was a claim. Go back to the host we
        had (host again, if that is us) rather than along the succession, so a
        host that lies about its players and then stays silent changes no host."""
        if self.role is not Role.JOINING or self._failing_over or not self.ready:
            return False
        if lost == self.replica.host_id:
            return False
        self.stats["merge_target_silent"] += 1
        self._go_back(now)
        return True

    def _go_back(self, now: float) -> None:
        """Return to the host our replica names: host again if that is us."""
        if self.replica.host_id == self.me.id:
            self._take_over("merge_refused", now)
            return
        host = self.replica.member(self.replica.host_id)
        if host is not None and self._may_lead(host.id):
            self._follow(host, now)
        else:
            self._host_lost(self.replica.host_id, now)

    def _refuse_state(self, sender: str, why: str, now: float) -> None:
        """A Welcome whose access state we may not take on (takeover_refusal):
        drop it, never follow that identity again, and go back: host again if
        we stepped down to it, else to our host, else along the succession."""
        self._refusal(f"refused_state_{why}", sender)
        _remember(self._foreign, identity_of(sender), ())
        self._go_back(now)

    # ================================================================ peer side

    def _follow(self, host: Member, now: float) -> None:
        """Start (or restart) joining *host*."""
        self.role = Role.JOINING
        self._target = host
        self._asked_since = now
        self._send_hello(now)

    def _send_hello(self, now: float) -> None:
        assert self._target is not None
        self._hello_at = now
        self._send(self._target, self._hello())

    def _hello(self, *, vote: bool = True) -> Hello:
        """Our Hello; while failing over it names the host we lost (asking
        the next in line to take over), unless not *vote* (a question only)."""
        r = self.replica
        vote = vote and self._failing_over
        return Hello(
            sender=self.me.id,
            epoch=self.epoch,
            name=self.me.name,
            endpoints=self.me.endpoints,
            profile=self.me.profile,
            session_id=r.session_id or None,
            resume_seq=r.seq,
            resume_epoch=r.last_epoch,
            resume_origin=r.last_origin,
            prev_host=r.host_id if vote else None,
            suspects=tuple(sorted(self._suspects)) if vote else (),
            joined_at=self.me.joined_at,
        )

    def _probe_members(self) -> None:
        """We are next in succession but no majority asks us: the others may
        have gone on without us (the host handed over to another while our
        cable was out, and removed us). Ask every other member, as we would
        a host: a peer answers with its host, which we follow if
        newer; a member that hosts welcomes us (``_joining_welcome``). It is
        a question, not a vote: it names no lost host, so no candidate takes
        over on it. Only in "majority" durability: in the default one the
        isolation timeout ends the wait, and discovery merges the hosts."""
        for m in self.replica.members:
            # suspects too: we may have suspected them while our cable was out
            if m.id == self.me.id or not self._may_lead(m.id):
                continue
            if self._target is not None and m.id == self._target.id:
                continue
            self._probed.add(m.id)
            self._send(m, self._hello(vote=False))

    def _host_lost(self, lost: str, now: float) -> None:
        """The host (or the candidate we were asking) is silent: try the next
        member in succession. If that is us, take over when a majority can
        reach us (``_may_take_over``); else keep asking the host we lost (the
        one cut off may be us) and count the members who ask us."""
        if self._sent_in_vain(lost, now):
            return
        if lost == self._behind:
            self._behind = None  # the member we gave way to is silent too
        if lost not in self._gave_way:  # it asked us to take over: alive
            self._suspects.add(lost)
        self._failing_over = True
        if self._lost_since is None:
            self._lost_since = now
        self.stats["host_lost"] += 1
        for m in self.replica.succession():
            if m.id in self._suspects or m.id in self._gave_way:
                continue
            if m.id != self.me.id:
                self._follow(m, now)
                return
            break
        if self._may_take_over(now):
            self._take_over("failover", now)
            return
        self.stats["takeover_waits"] += 1
        host = self.replica.member(self.replica.host_id)
        if host is None or host.id == self.me.id:
            host = self._target
        if host is not None:
            self._follow(host, now)
        if self.config.durability == "majority":
            # never going alone, we must find the session's host ourselves
            self._probe_members()

    def _asked_to_take_over(self, msg: Hello, now: float) -> bool:
        """Someone asks us to host: true when the host they lost is ours and
        every member ahead of us in succession is lost too (we then take over
        once a majority asks, ``_may_take_over``)."""
        if msg.prev_host is None or msg.prev_host != self.replica.host_id:
            return False
        if self.role is Role.JOINING and not self._failing_over:
            # We were sent to a new host (a merge): a Hello about the host we
            # had before is stale news, held by TCP during a split.
            return False
        if msg.epoch not in (self.replica.epoch, self.epoch):
            return False
        if self.role is Role.PEER and now - self._heard < 2 * self.config.heartbeat_interval:
            return False  # our host is alive: their link is the problem
        if self._behind is not None:
            return False  # we asked a member that holds more to take over
        lost = self._suspects | set(msg.suspects) | {msg.prev_host} | self._gave_way
        if self._gives_way_to_us(msg):
            lost.add(msg.sender)
        for m in self.replica.succession():
            if m.id == self.me.id:
                return True
            if m.id not in lost:
                return False
        return False

    def _peer_hello(self, msg: Hello, now: float) -> None:
        if not self._may_lead(msg.sender):
            self._drop("hello from a refused identity")  # it may not make us host either
            return
        if self._suspect_ahead_is_back(msg.sender, now):
            return
        if self._behind is not None and msg.prev_host is not None:
            self._point_to_behind(msg)
            return
        if self.ready and self._asked_to_take_over(msg, now):
            # Only a member's word moves us (its suspects, its vote); one we
            # do not know yet (its join was lost with the host) is told to
            # keep asking us, or it would walk on and take over beside us.
            member = self.replica.member(msg.sender) is not None
            if member and self._holds_more(msg):
                self._give_way(msg.sender, now)
                return
            if member and self._gives_way_to_us(msg):
                self._gave_way.add(msg.sender)
            if member:
                self._note_evidence(msg, now)
                self._suspects |= set(msg.suspects) | {msg.prev_host or ""}
                # it suspected us while its cable was out: we are the one asked
                self._suspects -= {"", self.me.id}
            if not member or not self._may_take_over(now):
                # not (yet) a majority: tell it we are alive and gathering, so
                # that it goes on asking us rather than the next in line
                notice = Redirect(
                    sender=self.me.id,
                    epoch=self.epoch,
                    host_id=self.me.id,
                    endpoints=self.me.endpoints,
                    reason="candidate",
                )
                self.outbox.append(Send(msg.sender, msg.endpoints, notice))
                return
            self._take_over("failover", now)
            self._host_hello(msg, now)
            return
        target = self._target
        if self.role is Role.PEER and target is not None:
            notice = Redirect(
                sender=self.me.id,
                epoch=self.epoch,
                host_id=target.id,
                endpoints=target.endpoints,
                reason="not host",
            )
            self.outbox.append(Send(msg.sender, msg.endpoints, notice))

    def _holds_more(self, msg: Hello) -> bool:
        """A member asking us to take over holds changes of the lost host's
        term that we lack: acknowledged writes among them, maybe (their
        writers applied them; the successor that acknowledged them is gone).
        We were not that successor (it holds every acknowledged change)."""
        r = self.replica
        succession = r.succession()
        if succession and succession[0].id == self.me.id:
            return False
        same_term = (msg.resume_epoch, msg.resume_origin) == (r.last_epoch, r.last_origin)
        return same_term and msg.resume_seq > r.seq

    def _gives_way_to_us(self, msg: Hello) -> bool:
        """A member ahead of us in succession asks us to take over (it holds
        less of the lost host's term than we do: ``_holds_more`` from its side)."""
        r = self.replica
        if r.member(msg.sender) is None or msg.sender == self.me.id:
            return False
        same_term = (msg.resume_epoch, msg.resume_origin) == (r.last_epoch, r.last_origin)
        if not same_term or msg.resume_seq >= r.seq:
            return False
        for m in r.succession():
            if m.id == self.me.id:
                return False
            if m.id == msg.sender:
                return True
        return False

    def _give_way(self, ahead: str, now: float) -> None:
        """We are next in succession, but member *ahead* holds more of the
        lost host's changes (Raft's rule: the most up-to-date takes over).
        Ask it to take over (our Hellos are votes), and send to it the
        members who ask us; taking over ourselves would undo what it holds."""
        member = self.replica.member(ahead)
        assert member is not None
        self.stats["gave_way"] += 1
        self._behind = ahead
        self._follow(member, now)

    def _point_to_behind(self, msg: Hello) -> None:
        """A vote reached us after we gave way: send it to who we asked."""
        member = self.replica.member(self._behind or "")
        if member is None or msg.sender == member.id:
            return
        notice = Redirect(
            sender=self.me.id,
            epoch=self.epoch,
            host_id=member.id,
            endpoints=member.endpoints,
            reason="not host",
        )
        self.outbox.append(Send(msg.sender, msg.endpoints, notice))

    def _suspect_ahead_is_back(self, sender: str, now: float) -> bool:
        """While failing over, a member ahead of us in succession that we
        suspected (its cable was out when we asked it) speaks to us: it is
        the candidate, not us. Ask it (our Hellos are votes), or two
        candidates that suspect each other wait for each other's votes for
        ever (a held Handoff made one of them next; "majority" durability)."""
        if not (self._failing_over and self.ready) or sender not in self._suspects:
            return False
        for m in self.replica.succession():
            if m.id == self.me.id:
                return False
            if m.id == sender:
                self._suspects.discard(sender)
                self._follow(m, now)
                return True
        return False

    def _from_target(self, msg: Message) -> bool:
        """Peers act only on their host's messages, and never on a stale epoch."""
        if self._target is None or msg.sender != self._target.id:
            self._drop(f"{type(msg).__name__} from a node that is not our host")
            return False
        if msg.epoch < self.epoch:
            self._drop("stale epoch")
            return False
        return True

    def _from_successor(self, msg: Message) -> bool:
        """Our host's successor may answer writes it holds (_answer_writer)."""
        succession = self.replica.succession()
        if msg.epoch != self.epoch or not succession or succession[0].id != msg.sender:
            self._drop(
                f"{type(msg).__name__} from a node that is neither our host nor its successor"
            )
            return False
        return True

    def _peer_change(self, msg: ChangeMsg, now: float) -> None:
        if not self._from_target(msg):
            return
        self._heard, self.epoch = now, msg.epoch
        change = msg.change
        if change.seq == self.replica.seq + 1:
            self.replica.apply(change, events=self.events)
            self._note_ttl(change)
            self._release_own()
            if self._refused_here():
                return
        elif change.seq > self.replica.seq + 1:
            self.stats["gap"] += 1  # we missed changes: ask again from where we are
            self._follow(self._target or self.me, now)
            return
        if msg.ack:
            ack = Send(
                msg.sender,
                self._endpoints_of(msg.sender),
                Ack(sender=self.me.id, epoch=self.epoch, seq=self.replica.seq),
            )
            last = self.outbox[-1] if self.outbox else None
            if last is not None and isinstance(last.msg, Ack) and last.to == msg.sender:
                self.outbox[-1] = ack  # acks are cumulative: one for all that came at once
            else:
                self.outbox.append(ack)
            self._answer_writer(change)

    def _answer_writer(self, change: Change) -> None:
        """As the host's successor we now hold *change*, so its write is
        acknowledged (guarantee 2): tell the writer ourselves, one hop before
        the host could (it hears our Ack first). The host answers too, in case
        we die first; the writer takes whichever comes first, once."""
        writer = change.writer
        if not writer or writer == change.origin:
            return  # not a write, or the host's own: the host answers itself
        outcome = Outcome(
            req=change.req, status=change.status, detail=change.detail, seq=change.seq
        )
        if writer == self.me.id:
            self._deliver(self.writer.result(outcome, self.replica.seq))
            return
        member = self.replica.member(writer)
        if member is not None:
            result = Result(
                sender=self.me.id,
                epoch=self.epoch,
                req=change.req,
                status=change.status,
                detail=change.detail,
                seq=change.seq,
            )
            self._send(member, result)

    def _peer_result(self, msg: Result, now: float) -> None:
        if self._target is not None and msg.sender == self._target.id:
            if not self._from_target(msg):
                return
            self._heard = now
        elif not self._from_successor(msg):
            return
        outcome = Outcome(req=msg.req, status=msg.status, detail=msg.detail, seq=msg.seq)
        self._deliver(self.writer.result(outcome, self.replica.seq))

    def _peer_heartbeat(self, msg: Heartbeat, now: float) -> None:
        if not self._from_target(msg):
            return
        self._heard, self.epoch = now, msg.epoch
        if msg.seq > self.replica.seq:
            self.stats["gap"] += 1
            self._follow(self._target or self.me, now)

    def _peer_redirect(self, msg: Redirect, now: float) -> None:
        if msg.reason == "candidate":
            # The next in succession is alive and waits for a majority to ask
            # it: keep asking it (it takes over once enough do).
            target = self._target
            if self.role is Role.JOINING and target and msg.sender == target.id == msg.host_id:
                self._asked_since = now
            return
        if msg.reason in ("host", "outranked"):
            # one host to another (discovery's view of who hosts may be stale):
            # a peer follows its own host, which settles with the other
            self._drop("host announcement sent to a peer")
            return
        if not (self._may_lead(msg.sender) and self._may_lead(msg.host_id)):
            self._drop("redirect from or to a refused identity")
            return
        if msg.epoch >= _EPOCH_CEILING:
            self._drop("redirect with an implausible epoch")
            return
        from_host = self._target is not None and msg.sender == self._target.id
        if not (from_host and msg.epoch >= self.epoch) and msg.epoch <= self.epoch:
            self._drop("redirect from a lower epoch")
            return
        if (
            not from_host
            and msg.reason != "handoff"  # our host left on purpose and chose it
            and self.role is Role.PEER
            and now - self._heard <= self.config.host_timeout
            and now >= self._woke_at + self.config.heartbeat_interval
        ):
            # Our host is alive: another node's takeover is stale news (held
            # by TCP) or a minority's; our host settles with it if they meet.
            self._drop("takeover notice while our host is alive")
            return
        if msg.host_id == self.me.id:
            return
        if msg.reason in ("takeover", "failover", "handoff") and self.replica.host_id:
            self._failing_over = True
            self._suspects.add(self.replica.host_id)
        self._follow(Member(id=msg.host_id, name="", endpoints=msg.endpoints), now)

    def _peer_gone(self, msg: Gone, now: float) -> None:
        if self._from_target(msg):
            self._follow(self._target or self.me, now)  # we were dropped: join again

    def _peer_handoff(self, msg: Handoff, now: float) -> None:
        if self._from_target(msg) and self._may_lead(msg.sender):
            self._take_over("handoff", now)

    def _joining_handoff(self, msg: Handoff, now: float) -> None:
        """Our host handed over to us while we were asking it again (our
        cable was out: TCP held its Handoff, and the others may have gone on
        without us). It left on purpose and votes no more: the majority we
        need is of the members that stay (``_handed``); we take over as a
        failover, on their votes, or follow whoever they chose."""
        r = self.replica
        if not (self.ready and self._failing_over) or msg.sender != r.host_id:
            self._drop("handoff from a node that is not our host")
            return
        if msg.epoch != r.epoch or not self._may_lead(msg.sender):
            self._drop("stale handoff")
            return
        self._handed.add(msg.sender)
        self._host_lost(msg.sender, now)

    def _joining_welcome(self, msg: Welcome, now: float) -> None:
        asked = self._target is not None and msg.sender == self._target.id
        if not asked and not (self._failing_over and msg.sender in self._probed):
            self._drop("welcome from a node we did not ask")
            return
        if msg.host_id != msg.sender or (msg.snapshot and msg.snapshot.host_id != msg.sender):
            self._drop("welcome naming another node as host")
            return
        if not self._may_lead(msg.sender):
            self._drop("welcome from a refused identity")
            return
        snap = msg.snapshot
        refusal = takeover_refusal(self.replica.access, snap.access) if snap else None
        if refusal is not None:
            self._refuse_state(msg.sender, refusal, now)
            return
        r = self.replica
        resume = (msg.resume_seq, msg.resume_epoch, msg.resume_origin)
        if msg.snapshot is None and resume != (r.seq, r.last_epoch, r.last_origin):
            # It answers an older Hello of ours: its changes follow a state we
            # no longer hold. The answer to our latest Hello is on its way.
            self._drop("welcome for an older resume point")
            return
        report = self.ready  # the first snapshot is the starting state, not news
        if msg.snapshot is not None:
            # A result held for a change we had not applied yet names a seq of
            # the history we leave; it says nothing of this one. Ask again.
            self.writer.held.clear()
            self.replica.load(msg.snapshot, events=self.events if report else None)
            rolled = self._rolled_back(msg.snapshot.terms, msg.snapshot.seq)
            self._expiry = {
                key: self._clock + ttl for key, _, _, _, _, ttl in msg.snapshot.data if ttl > 0
            }
            if rolled:
                self.events.append(WritesRolledBack(writes=rolled, mine=rolled))
        else:
            for change in msg.changes:
                if change.seq == self.replica.seq + 1:
                    self.replica.apply(change, events=self.events)
                    self._note_ttl(change)
        self.epoch = max(self.epoch, msg.epoch)
        self.role, self.ready = Role.PEER, True
        if self._refused_here():
            return
        self._target = self.replica.member(msg.sender) or self._target
        self._suspects.clear()
        self._probed.clear()
        self._evidence.clear()
        self._handed.clear()
        self._behind, self._gave_way = None, set()
        self._failing_over, self._lost_since = False, None
        self._heard = self._beat_at = now
        self._release_own()
        for request in self.writer.unacked():
            if request.req not in self.writer.held:
                self._send_write(request.req, request.ops, request.conds, now)

    def _deliver(self, outcomes: list[Outcome]) -> None:
        """Hand our writes' outcomes to the user, and remember where each
        acknowledged one sits in the history (its change is applied here by
        now), so that a merge that undoes it can say so."""
        for o in outcomes:
            keys = self._write_keys.pop(o.req, ())
            term = self.replica.term_of(o.seq) if o.status == "ok" and keys else None
            if term is not None:
                self._acked.append(_Acked(o.req, o.seq, term[0], term[1], keys))
        self.outcomes.extend(outcomes)

    def _rolled_back(
        self, terms: tuple[tuple[int, int, str], ...], last_seq: int
    ) -> tuple[RolledBackWrite, ...]:
        """Our own acknowledged writes that the incoming snapshot does not hold.

        Taken from the acknowledgements we kept rather than from the log: the
        log starts afresh at every snapshot, and a write acknowledged before
        an earlier snapshot is just as lost. Called once the snapshot is
        loaded: a write the new history applied elsewhere (a resent request
        that two lineages each applied, at different places) is in its table
        of results, and is not lost."""
        out, kept = [], []
        for a in self._acked:
            found = self._found_in(a, terms, last_seq)
            if found is not None:
                kept.append(found)
            else:
                out.append(RolledBackWrite(writer=self.me.id, request=a.req, keys=a.keys))
                self._undone[a.req] = a
        for req, a in list(self._undone.items()):
            # undone by an earlier merge, and this history holds it after all
            found = self._found_in(a, terms, last_seq)
            if found is not None and req not in {w.request for w in out}:
                del self._undone[req]
                self.restored.add(req)
                kept.append(found)
        self._acked = deque(sorted(kept, key=lambda x: x.seq))
        return tuple(out)

    def _found_in(
        self, a: _Acked, terms: tuple[tuple[int, int, str], ...], last_seq: int
    ) -> _Acked | None:
        """Where acknowledged write *a* sits in the history just loaded (its
        own place, or where that history applied the same request), if it is
        there."""
        if history_contains(terms, last_seq, a.seq, a.epoch, a.origin):
            return a
        record = self.replica.dedupe.get(self.me.id)
        here = record.results.get(a.req) if record is not None else None
        term = self.replica.term_of(here[2]) if here is not None and here[0] == "ok" else None
        if here is None or term is None:
            return None
        return _Acked(a.req, here[2], term[0], term[1], a.keys)

    def _joining_refused(self, msg: Refused, now: float) -> None:
        """The host we ask to join is full or closed: a first join ends here
        (the adapter tells the user); a member coming back asks again. A
        refusal by access (banned, not authorized) ends a member's session."""
        if self._target is None or msg.sender != self._target.id:
            self._drop("refusal we did not ask for")
            return
        if msg.reason in _ACCESS_REFUSALS:
            if self.ready and not self._may_expel(msg.sender):
                self._refuse_state(msg.sender, "refuses_us", now)
                return
            self._expel(msg.reason)
        elif self.ready:
            self._drop("full or closed, to a member")
        else:
            self.refused = msg.reason
            self.role = Role.CLOSED

    def _peer_refused(self, msg: Refused, now: float) -> None:
        """A member learns of its own ban from the change that holds it, which
        its host sent first; a Refused it did not see coming (a forged one,
        or one that overtook a change we missed) only makes it ask again: a
        host that means it refuses that hello too."""
        if self._from_target(msg):
            self.stats["refused_as_member"] += 1
            self._follow(self._target or self.me, now)

    def _refused_here(self) -> bool:
        """Peer: expel ourselves if the state we now hold refuses our identity
        (a ban reached us before, or instead of, the host's Refused)."""
        mine = identity_of(self.me.id)
        if self.replica.access.may_read(mine):
            return False
        self._expel(self.replica.access.refusal(mine))
        return True

    def _expel(self, reason: str) -> None:
        """We may no longer be in this session: stop, fail our writes still
        waiting, tell the user. We never take over after this."""
        self.refused = reason
        if self.role is not Role.LEAVING:
            self.role = Role.CLOSED
        self._target, self._failing_over = None, False
        detail = {"reason": reason}
        failed = [
            Outcome(req=r.req, status="denied", detail=detail, seq=0) for r in self.writer.unacked()
        ]
        self.writer.pending.clear()
        self.writer.held.clear()
        self._write_keys.clear()
        self.outcomes.extend(failed)
        self.stats[f"expelled_{reason}"] += 1
        self.events.append(Expelled(reason=reason))

    def _leaving_gone(self, msg: Gone, now: float) -> None:
        self.role = Role.CLOSED

    def _leaving_redirect(self, msg: Redirect, now: float) -> None:
        # The successor confirms it took over: our handoff is complete.
        if msg.epoch > self.epoch and self._may_lead(msg.sender):
            self.role = Role.CLOSED

    # ================================================================ helpers

    def _release_own(self) -> None:
        if self.writer.held:
            self._deliver(self.writer.release(self.replica.seq))

    def _resend_unanswered(self, now: float) -> None:
        """A write or its result can be lost (a link that drops and comes back
        within the timeouts): resend every request still unanswered after
        ``write_retry``, in order. The host's dedupe table makes it safe."""
        for req in [r for r in self._sent_at if r not in self.writer.pending]:
            del self._sent_at[req]
        waiting = [r for r in self.writer.unacked() if r.req not in self.writer.held]
        if not waiting:
            return
        if now - min(self._sent_at.get(r.req, now) for r in waiting) < self.config.write_retry:
            return
        self.stats["writes_resent"] += 1
        for r in waiting:
            self._send_write(r.req, r.ops, r.conds, now)

    def _send_write(
        self,
        req: int,
        ops: tuple[tuple[Any, ...], ...],
        conds: tuple[tuple[Any, ...], ...],
        now: float,
    ) -> None:
        assert self._target is not None
        self._sent_at[req] = now
        msg = Write(
            sender=self.me.id,
            epoch=self.epoch,
            req=req,
            acked_upto=self.writer.acked_upto,
            ops=ops,
            conds=conds,
        )
        self._send(self._target, msg)

    def _send(self, to: Member, msg: Message) -> None:
        self.outbox.append(Send(to.id, to.endpoints or self._endpoints_of(to.id), msg))

    def _send_id(self, node_id: str, msg: Message) -> None:
        self.outbox.append(Send(node_id, self._endpoints_of(node_id), msg))

    def _endpoints_of(self, node_id: str) -> tuple[str, ...]:
        member = self.replica.member(node_id)
        if member is not None:
            return member.endpoints
        if self._target is not None and self._target.id == node_id:
            return self._target.endpoints
        return ()

    def _refusal(self, what: str, who: str) -> None:
        """Count a refusal; a peer can repeat one endlessly, so warn once of
        each kind, then log at debug level."""
        self.stats[what] += 1
        level = logging.WARNING if self.stats[what] == 1 else logging.DEBUG
        log.log(level, "%s: %s from %s (%d so far)", self.me.id, what, who, self.stats[what])

    def _drop(self, why: str) -> None:
        self.stats["dropped"] += 1
        self.stats[f"dropped: {why}"] += 1

    def _require_fresh(self, what: str) -> None:
        """Only a node that holds no session yet may start or join one."""
        if self.ready or self.role not in (Role.IDLE, Role.JOINING):
            raise RuntimeError(f"can't {what} in role {self.role.name}")


_ACCESS_REFUSALS = ("banned", "not_authorized")
#: Epochs grow by one a change of host: no session comes near this, and a
#: wire number above it (a lie) could push a counter past what encodes.
_EPOCH_CEILING = MAX_COUNTER >> 8
#: Node ids or identities a node remembers in _rivals and _foreign.
_REMEMBERED = 256


def _remember(seen: dict[str, Any], key: str, value: Any) -> None:
    """Set *key* in an insertion-ordered dict bounded to _REMEMBERED entries."""
    seen.pop(key, None)
    seen[key] = value
    if len(seen) > _REMEMBERED:
        del seen[next(iter(seen))]


#: Ops a writer may send; the rest are the host's own bookkeeping.


def _owns(entry: Entry, identity: str) -> bool:
    """Whether the player *identity* owns *entry*: the identity, not one run
    of the game, so a player who restarts keeps their owner-only keys."""
    return identity_of(entry.owner) == identity


def _restore_keeps(old: Entry, entry: tuple[str, Any, str, int, float]) -> bool:
    """Whether a restore leaves *old* untouched with *entry*: the rule of
    Replica._restore (no ttl on either, same owner, flags and encoding)."""
    _, value, owner, flags, ttl = entry
    return (
        not ttl
        and not old.ttl
        and (old.owner, old.flags) == (owner if flags else "", flags)
        and encode(value) == encode(old.value)
    )


def _stored_size(value: Any, encoded: int) -> int:
    """A value's size as Entry.size counts it: containers by their encoding."""
    return encoded if isinstance(value, (list, dict)) else scalar_size(value)


_WRITE_OPS = frozenset({"set", "del", "msg", "profile", "info", "acl", "access_set", "restore"})


_HANDLERS: dict[tuple[Role, type[Message]], Any] = {
    (Role.HOST, Hello): Node._host_hello,
    (Role.HOST, Write): Node._host_write,
    (Role.HOST, Ack): Node._host_ack,
    (Role.HOST, Heartbeat): Node._host_heartbeat,
    (Role.HOST, Leave): Node._host_leave,
    (Role.HOST, Redirect): Node._host_redirect,
    (Role.HOST, Refused): Node._host_refused,
    (Role.HOST, Welcome): Node._host_welcome,
    (Role.PEER, Hello): Node._peer_hello,
    (Role.PEER, ChangeMsg): Node._peer_change,
    (Role.PEER, Result): Node._peer_result,
    (Role.PEER, Heartbeat): Node._peer_heartbeat,
    (Role.PEER, Redirect): Node._peer_redirect,
    (Role.PEER, Gone): Node._peer_gone,
    (Role.PEER, Handoff): Node._peer_handoff,
    (Role.PEER, Refused): Node._peer_refused,
    (Role.JOINING, Hello): Node._peer_hello,
    (Role.JOINING, Welcome): Node._joining_welcome,
    (Role.JOINING, Refused): Node._joining_refused,
    (Role.JOINING, Redirect): Node._peer_redirect,
    (Role.JOINING, Handoff): Node._joining_handoff,
    (Role.LEAVING, Gone): Node._leaving_gone,
    (Role.LEAVING, Redirect): Node._leaving_redirect,
}
