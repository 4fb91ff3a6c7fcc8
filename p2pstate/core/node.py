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
  announce themselves to each other with their rank (players served, then
  epoch, then the lower id); the lower steps down and its peers follow the
  higher. Every acknowledged write the loser's side had that the winner's
  history lacks is reported to its writer (``WritesRolledBack``).
"""

from __future__ import annotations

import enum
import heapq
import logging
from collections import Counter, deque
from dataclasses import dataclass, replace
from typing import Any

from ..codec import MAX_KEY_BYTES, encode, hash_value
from ..errors import ProtocolError
from ..events import Event, Expelled, RolledBackWrite, WritesRolledBack
from ..events import Message as MessageEvent
from ..messages import (
    EPHEMERAL,
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
from .access import ALWAYS_ADMIN_OPS, Access
from .config import Config
from .ids import identity_of
from .replica import Entry, Replica, history_contains, scalar_size
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

    last_heard: float
    synced: bool = False


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
        self.replica = Replica(log_keep=self.config.log_keep)
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
        self._failing_over = False
        self._leave_deadline = 0.0
        # The caller's clock at the latest input: TTLs are kept by it.
        self._clock = 0.0
        self._expiry: dict[str, float] = {}  # key -> when it expires, by our clock
        self._sent_at: dict[int, float] = {}  # request -> when last sent to a host
        self._write_keys: dict[int, tuple[str, ...]] = {}  # request -> keys it writes
        # our acknowledged writes, where they sit in the history
        self._acked: deque[_Acked] = deque(maxlen=self.config.log_keep)
        # host side
        self._conns: dict[str, _Conn] = {}
        self._awaiting: dict[int, tuple[str, int]] = {}  # seq -> (writer, req) to answer
        self._awaiting_seqs: list[int] = []  # a heap of the seqs above, lowest first
        self._durable = 0  # highest seq the successor holds
        self._successor: str | None = None
        # writer -> (tokens, when counted): the write-rate token buckets
        self._buckets: dict[str, tuple[float, float]] = {}

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
        self._clock = now
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
        self._clock = now
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
        self._clock = now
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

        We announce ourselves to it with our rank; the two settle on one by
        :meth:`rank` (more players, then the higher epoch, then the lower node
        id), and the lower steps down. Ranks travel in messages rather than in
        the advertisement, so both sides compare fresh numbers; ``epoch`` (what
        discovery advertised) is not needed for the decision."""
        self._clock = now
        if self.role is not Role.HOST or host_id == self.me.id:
            return
        self.outbox.append(Send(host_id, endpoints, self._announce("host")))

    def tick(self, now: float) -> None:
        """Run timers: heartbeats, liveness, hello retries, leave deadline."""
        self._clock = now
        cfg = self.config
        if self.role is Role.HOST:
            if now - self._beat_at >= cfg.heartbeat_interval:
                self._beat_at = now
                beat = Heartbeat(sender=self.me.id, epoch=self.epoch, seq=self.replica.seq)
                for peer_id, conn in self._conns.items():
                    if conn.synced:
                        self._send_id(peer_id, beat)
            if self._expiry:
                self._expire(now)
            dead = [pid for pid, c in self._conns.items() if now - c.last_heard > cfg.peer_timeout]
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

    def rank(self) -> tuple[int, int, tuple[int, ...]]:
        """Host only: how two hosts of one session settle on one. The host that
        serves more synced players wins (so an isolated peer that took over
        alone gives way to the rest of the session, not the reverse); on a tie
        the higher epoch, then the lower node id."""
        players = 1 + sum(1 for conn in self._conns.values() if conn.synced)
        return (players, self.epoch, _neg(self.me.id))

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
            if kind in ("profile", "info"):
                if len(encode(op[1])) > limit:
                    return "too_large", {"key": kind, "limit": limit}
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
        quota = self._quota(sizes, access) if sizes else None
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
            if old.flags & EPHEMERAL:
                continue  # the players' ephemeral keys stay
            if key not in new:
                sizes[key] = -1  # lasting keys not in the backup go
            # Another player's owner-only key: only the admin may change it.
            if old.flags & OWNER_ONLY and not _owns(old, identity) and identity != access.admin:
                entry = new.get(key)
                if entry is None or (
                    (entry[2], entry[3]) != (old.owner, old.flags)
                    or encode(entry[1]) != encode(old.value)
                ):
                    return "denied", {"key": key, "owner": old.owner}
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

    def _quota(self, sizes: dict[str, int], access: Access) -> dict[str, Any] | None:
        """None if the session stays within max_keys and max_total_bytes once
        each key of *sizes* holds a value of that size (-1: deleted), else
        what it would exceed. A write that does not grow the session is let
        through, so one over its limits can still be cleaned up."""
        data = self.replica.data
        keys, total = len(data), self.replica.total_bytes
        grow = sum(size for size in sizes.values() if size > 0)
        if keys + len(sizes) <= access.max_keys and total + grow <= access.max_total_bytes:
            return None  # fits even if every key were new: the common case, found cheaply
        for key, size in sizes.items():
            old = data.get(key)
            keys += (size >= 0) - (old is not None)
            total += max(size, 0) - (old.size if old is not None else 0)
        if keys > access.max_keys and keys > len(data):
            return {"limit": "max_keys", "max": access.max_keys}
        if total > access.max_total_bytes and total > self.replica.total_bytes:
            return {"limit": "max_total_bytes", "max": access.max_total_bytes}
        return None

    def _apply(self, change: Change, *, report: bool = True) -> None:
        """Host: apply a change it made and send it to every synced peer."""
        self.replica.apply(change, events=self.events if report else None)
        self._note_ttl(change)
        # The successor first: its acknowledgement is what the writer waits for.
        successor = self._successor
        if successor is not None and self._conns.get(successor, _UNSYNCED).synced:
            self._send_id(
                successor, ChangeMsg(sender=self.me.id, epoch=self.epoch, change=change, ack=True)
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
        """Highest seq that survives the loss of this host."""
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
        self._conns = {
            m.id: _Conn(last_heard=now)
            for m in self.replica.members
            if m.id not in gone and m.id != self.me.id
        }
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
        self._beat_at = now
        for request in self.writer.unacked():
            self._order(self.me.id, request.req, self.writer.acked_upto, request.ops, request.conds)
        self._release_durable()

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
        if self.replica.member(msg.sender) is None and msg.session_id is None:
            # A newcomer (a member coming back names our session): is there room?
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
        if self.replica.member(msg.sender) is None:
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
        self._conns[msg.sender] = _Conn(last_heard=now, synced=True)
        self._update_successor(resynced=msg.sender)

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
        or discovery made us meet. The lower rank steps down; the higher one
        answers once, so that the other learns it is outranked."""
        if msg.host_id != msg.sender:
            self._drop("redirect to a third node, sent to a host")
            return
        theirs = (msg.players, msg.epoch, _neg(msg.host_id))
        if theirs > self.rank():
            self._step_down(Member(id=msg.host_id, name="", endpoints=msg.endpoints), now)
        elif msg.reason != "outranked":
            self.outbox.append(Send(msg.sender, msg.endpoints, self._announce("outranked")))

    def _announce(self, reason: str) -> Redirect:
        """A host's notice that it hosts, with its rank."""
        players, epoch, _ = self.rank()
        return Redirect(
            sender=self.me.id,
            epoch=epoch,
            host_id=self.me.id,
            endpoints=self.me.endpoints,
            reason=reason,
            players=players,
        )

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
        return conn

    # ================================================================ peer side

    def _follow(self, host: Member, now: float) -> None:
        """Start (or restart) joining *host*."""
        self.role = Role.JOINING
        self._target = host
        self._asked_since = now
        self._send_hello(now)

    def _send_hello(self, now: float) -> None:
        assert self._target is not None
        r = self.replica
        hello = Hello(
            sender=self.me.id,
            epoch=self.epoch,
            name=self.me.name,
            endpoints=self.me.endpoints,
            profile=self.me.profile,
            session_id=r.session_id or None,
            resume_seq=r.seq,
            resume_epoch=r.last_epoch,
            resume_origin=r.last_origin,
            prev_host=r.host_id if self._failing_over else None,
            suspects=tuple(sorted(self._suspects)),
            joined_at=self.me.joined_at,
        )
        self._hello_at = now
        self._send(self._target, hello)

    def _host_lost(self, lost: str, now: float) -> None:
        """The host (or the candidate we were asking) is silent: try the next
        member in succession, or take over if that is us."""
        self._suspects.add(lost)
        self._failing_over = True
        self.stats["host_lost"] += 1
        for m in self.replica.succession():
            if m.id in self._suspects:
                continue
            if m.id == self.me.id:
                self._take_over("failover", now)
            else:
                self._follow(m, now)
            return
        self._take_over("failover", now)

    def _should_take_over(self, msg: Hello, now: float) -> bool:
        """Someone asks us to host: agree when the host they lost is ours and
        every member ahead of us in succession is lost too."""
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
        lost = self._suspects | set(msg.suspects) | {msg.prev_host}
        for m in self.replica.succession():
            if m.id == self.me.id:
                return True
            if m.id not in lost:
                return False
        return False

    def _peer_hello(self, msg: Hello, now: float) -> None:
        if not self.replica.access.may_read(identity_of(msg.sender)):
            self._drop("hello from a refused identity")  # it may not make us host either
            return
        if self.ready and self._should_take_over(msg, now):
            self._suspects |= set(msg.suspects) | {msg.prev_host or ""}
            self._suspects.discard("")
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
        if msg.reason in ("host", "outranked"):
            # one host to another (discovery's view of who hosts may be stale):
            # a peer follows its own host, which settles with the other
            self._drop("host announcement sent to a peer")
            return
        from_host = self._target is not None and msg.sender == self._target.id
        if not (from_host and msg.epoch >= self.epoch) and msg.epoch <= self.epoch:
            self._drop("redirect from a lower epoch")
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
        if self._from_target(msg):
            self._take_over("handoff", now)

    def _joining_welcome(self, msg: Welcome, now: float) -> None:
        if self._target is None or msg.sender != self._target.id:
            self._drop("welcome from a node we did not ask")
            return
        if msg.host_id != msg.sender or (msg.snapshot and msg.snapshot.host_id != msg.sender):
            self._drop("welcome naming another node as host")
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
            rolled = self._rolled_back(msg.snapshot.terms, msg.snapshot.seq)
            self.replica.load(msg.snapshot, events=self.events if report else None)
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
        self._failing_over = False
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
        an earlier snapshot is just as lost."""
        out, kept = [], []
        for a in self._acked:
            if history_contains(terms, last_seq, a.seq, a.epoch, a.origin):
                kept.append(a)
            else:
                out.append(RolledBackWrite(writer=self.me.id, request=a.req, keys=a.keys))
        self._acked = deque(kept, maxlen=self.config.log_keep)
        return tuple(out)

    def _joining_refused(self, msg: Refused, now: float) -> None:
        """The host we ask to join is full or closed: a first join ends here
        (the adapter tells the user); a member coming back asks again. A
        refusal by access (banned, not authorized) ends a member's session."""
        if self._target is None or msg.sender != self._target.id:
            self._drop("refusal we did not ask for")
            return
        if msg.reason in _ACCESS_REFUSALS:
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
        if msg.epoch > self.epoch:
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
#: Ops a writer may send; the rest are the host's own bookkeeping.


def _owns(entry: Entry, identity: str) -> bool:
    """Whether the player *identity* owns *entry*: the identity, not one run
    of the game, so a player who restarts keeps their owner-only keys."""
    return identity_of(entry.owner) == identity


def _stored_size(value: Any, encoded: int) -> int:
    """A value's size as Entry.size counts it: containers by their encoding."""
    return encoded if isinstance(value, (list, dict)) else scalar_size(value)


_WRITE_OPS = frozenset({"set", "del", "msg", "profile", "info", "acl", "access_set", "restore"})


def _neg(node_id: str) -> tuple[int, ...]:
    """Order key under which a *lower* node id ranks higher."""
    return tuple(-b for b in node_id.encode())


_HANDLERS: dict[tuple[Role, type[Message]], Any] = {
    (Role.HOST, Hello): Node._host_hello,
    (Role.HOST, Write): Node._host_write,
    (Role.HOST, Ack): Node._host_ack,
    (Role.HOST, Heartbeat): Node._host_heartbeat,
    (Role.HOST, Leave): Node._host_leave,
    (Role.HOST, Redirect): Node._host_redirect,
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
    (Role.LEAVING, Gone): Node._leaving_gone,
    (Role.LEAVING, Redirect): Node._leaving_redirect,
}
