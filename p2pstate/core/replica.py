"""The replicated state machine: every node holds one and applies the host's
changes to it in sequence order. Pure data, no I/O."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..codec import encode
from ..events import (
    Event,
    HostChanged,
    KeyChanged,
    KeyDeleted,
    Message,
    Peer,
    PeerJoined,
    PeerLeft,
    PeerUpdated,
)
from ..messages import EPHEMERAL, Change, Member, Snapshot
from .access import Access
from .bounds import key_bytes, member_bytes
from .ops import (
    Acl,
    ChangeSettings,
    Delete,
    Info,
    Join,
    Msg,
    Profile,
    Restore,
    RestoreEntry,
    Set,
    SetAccess,
    SetOpts,
    Term,
)
from .ops import Leave as LeaveOp
from .status import Status

__all__ = [
    "Entry",
    "Replica",
    "WriterRecord",
    "change_bytes",
    "history_contains",
    "peer_of",
    "scalar_size",
    "value_bytes",
]


def history_contains(
    terms: list[tuple[int, int, str]] | tuple[tuple[int, int, str], ...],
    last_seq: int,
    seq: int,
    epoch: int,
    origin: str,
) -> bool:
    """Whether change *seq* of term (epoch, origin) belongs to the history that
    *terms* (first seq, epoch, origin of every term) describes up to *last_seq*.

    One host term numbers its changes once, so two changes with the same
    number and term are the same change (log matching, as in Raft)."""
    if seq <= 0:
        return seq == 0
    if seq > last_seq:
        return False
    term = None
    for first, t_epoch, t_origin in terms:
        if first > seq:
            break
        term = (t_epoch, t_origin)
    return term == (epoch, origin)


_CONTAINERS = (list, dict)


@dataclass(slots=True)
class Entry:
    """A stored value. Containers keep their encoding too, so a read can hand
    out a fresh copy (decoding is much faster than deepcopy)."""

    value: Any
    version: int
    packed: bytes | None = None
    owner: str = ""  # the writer, for ephemeral and owner-only keys
    flags: int = 0  # EPHEMERAL | OWNER_ONLY
    ttl: float = 0.0  # seconds to live from when it was written, 0 for ever
    size: int = 0  # what it counts for against max_total_bytes (see scalar_size)

    @classmethod
    def make(
        cls, value: Any, version: int, owner: str = "", flags: int = 0, ttl: float = 0.0
    ) -> Entry:
        if isinstance(value, _CONTAINERS):
            packed = encode(value)
            size = len(packed)
        else:
            packed, size = None, scalar_size(value)
        return cls(value, version, packed, owner if flags else "", flags, ttl, size)


def peer_of(m: Member, host_id: str) -> Peer:
    """What the API shows of member *m* of a session hosted by *host_id*."""
    return Peer(
        id=m.id,
        name=m.name,
        endpoint=m.endpoints[0] if m.endpoints else "",
        endpoints=m.endpoints,
        joined_seq=m.joined_seq,
        joined_at=m.joined_at,
        is_host=m.id == host_id,
        profile=dict(m.profile),
    )


def scalar_size(value: Any) -> int:
    """What a value that is not a container counts for against
    ``max_total_bytes``: a close estimate of its encoding that costs no
    encoding (a container counts its encoding, which its Entry keeps anyway).
    Every replica computes the same."""
    if isinstance(value, (str, bytes)):
        return len(value) + 1
    return 9


def value_bytes(value: Any) -> int:
    """A value's size: its encoding for a container, else scalar_size."""
    return len(encode(value)) if isinstance(value, _CONTAINERS) else scalar_size(value)


#: What a change costs in the log besides its values (fields, op tuples).
_CHANGE_OVERHEAD = 64


def change_bytes(change: Change, set_sizes: int | None = None) -> int:
    """What *change* counts for against the log's byte budget: its values as
    max_total_bytes counts them, keys, and a fixed overhead per change and op.
    *set_sizes*, if given, is what its "set" ops' values already counted."""
    total = _CHANGE_OVERHEAD + (value_bytes(change.detail) if change.detail is not None else 0)
    for op in change.ops:
        if set_sizes is not None and isinstance(op, _SETS):
            total += 16 + len(op.key)  # its value is in set_sizes
        else:
            total += 16 + _OP_BYTES.get(type(op), _fields_bytes)(op)
    return total + (set_sizes or 0)


def _fields_bytes(op: Any) -> int:
    return value_bytes(list(op[1:]))


def _restore_bytes(op: Restore) -> int:
    return sum(len(key) + len(owner) + value_bytes(v) + 16 for key, v, owner, _, _ in op.entries)


_SETS = (Set, SetOpts)
#: What an op's values count in the log, by its type (_fields_bytes for the rest).
_OP_BYTES: dict[type[Any], Callable[[Any], int]] = {
    Set: lambda op: len(op.key) + value_bytes(op.value),
    SetOpts: lambda op: len(op.key) + value_bytes(op.value),
    Restore: _restore_bytes,
    Msg: lambda op: len(op.to) + value_bytes(op.payload),
    Profile: lambda op: value_bytes(op.profile),
    Info: lambda op: value_bytes(op.settings),
    Join: lambda op: value_bytes(op.member.to_wire()),
    SetAccess: lambda op: value_bytes(op.access.to_wire()),
}


@dataclass(slots=True)
class WriterRecord:
    """What exactly-once needs to know about one writer."""

    last_req: int = 0
    acked_upto: int = 0
    # req -> (status, detail, seq) for requests the writer has not confirmed yet
    results: dict[int, tuple[Status, Any, int]] = field(default_factory=dict)


class Replica:
    """Data, membership, exactly-once table and recent log, at one sequence number."""

    def __init__(self, *, log_keep: int = 4096, log_bytes: int = 32 * 1024 * 1024) -> None:
        self.session_id = ""
        self.seq = 0
        self.last_epoch = 0
        self.last_origin = ""
        self.host_id = ""
        self.epoch = 0
        self.data: dict[str, Entry] = {}
        self.members: list[Member] = []
        self.dedupe: dict[str, WriterRecord] = {}
        self.terms: list[tuple[int, int, str]] = []
        #: The session's settings (max_players, joinable, version, metadata).
        self.info: dict[str, Any] = {}
        #: Who may read and write, and the host's limits.
        self.access = Access()
        #: Sum of ``Entry.size`` over ``data``, kept as changes apply.
        self.total_bytes = 0
        #: Sum of the members' encoded profiles: they count in max_total_bytes too.
        self.profile_bytes = 0
        #: Keys and member records besides values and profiles (core/bounds.py).
        self.record_bytes = 0
        self.log: deque[Change] = deque()
        #: change_bytes of each change in ``log``, and their sum.
        self.log_sizes: deque[int] = deque()
        self.log_bytes = 0
        self.log_keep, self.log_budget = log_keep, log_bytes

    # ------------------------------------------------------------ queries

    def member(self, node_id: str) -> Member | None:
        for m in self.members:
            if m.id == node_id:
                return m
        return None

    def peer(self, m: Member) -> Peer:
        return peer_of(m, self.host_id)

    def succession(self) -> list[Member]:
        """Members in the order they would host: join order, host excluded."""
        return [m for m in self.members if m.id != self.host_id]

    def changes_after(self, seq: int, epoch: int, origin: str) -> list[Change] | None:
        """The logged changes after (seq, epoch, origin), or None when that point
        is not in this replica's history or no longer in its log."""
        if seq > self.seq:
            return None
        if seq == self.seq:
            return [] if (epoch, origin) == (self.last_epoch, self.last_origin) else None
        if not self.log or seq < self.log[0].seq - 1:
            return None
        first = self.log[0].seq
        if seq >= first:
            at = self.log[seq - first]
            if (at.epoch, at.origin) != (epoch, origin):
                return None
        elif not self.in_history(seq, epoch, origin):
            return None
        return list(self.log)[seq - first + 1 :]

    def term_of(self, seq: int) -> tuple[int, str] | None:
        """The term (epoch, origin) that made change *seq* of this history, if
        the bounded list of terms still reaches back that far."""
        if not 0 < seq <= self.seq or not self.terms or self.terms[0][0] > seq:
            return None
        term = None
        for first, epoch, origin in self.terms:
            if first > seq:
                break
            term = (epoch, origin)
        return term

    def in_history(self, seq: int, epoch: int, origin: str) -> bool:
        return history_contains(self.terms, self.seq, seq, epoch, origin)

    # ------------------------------------------------------------ changes

    def apply(self, change: Change, *, events: list[Event] | None = None) -> None:
        """Apply the next change. The caller checks ``change.seq == self.seq + 1``."""
        set_sizes = 0  # what its "set" values count, for the log's byte budget
        for op in change.ops:
            set_sizes += _APPLY[type(op)](self, op, change, events)
        if change.writer:
            self._note_result(change)
        if (change.epoch, change.origin) != (self.last_epoch, self.last_origin):
            self.terms.append((change.seq, change.epoch, change.origin))
            del self.terms[:-1024]  # a bounded history; older terms cannot be checked
        self.seq, self.last_epoch, self.last_origin = (
            change.seq,
            change.epoch,
            change.origin,
        )
        ops = change.ops
        if len(ops) == 1 and type(ops[0]) is Set and change.detail is None:
            size = _CHANGE_OVERHEAD + 16 + len(ops[0].key) + set_sizes  # change_bytes, inline
        else:
            size = change_bytes(change, set_sizes)
        self._log(change, size)

    def _note_result(self, change: Change) -> None:
        """Exactly-once: the writer's last request, and its result until the
        writer confirms it has it."""
        rec = self.dedupe.setdefault(change.writer, WriterRecord())
        rec.last_req = max(rec.last_req, change.req)
        if change.acked_upto > rec.acked_upto:
            rec.acked_upto = change.acked_upto
            for req in [r for r in rec.results if r <= rec.acked_upto]:
                del rec.results[req]
        if change.req > rec.acked_upto:
            rec.results[change.req] = (change.status, change.detail, change.seq)

    # One method per op type (the _APPLY table below): each returns what its
    # values count against the log's budget when it measured them (a "set"),
    # else 0.

    def _set(self, op: Set | SetOpts, change: Change, events: list[Event] | None) -> int:
        entry = Entry.make(op.value, change.seq, change.writer, op.flags, op.ttl)
        before = self.data.get(op.key)
        if before is None:
            self.total_bytes += entry.size
            self.record_bytes += key_bytes(op.key, entry.owner)
        else:
            self.total_bytes += entry.size - before.size
            self.record_bytes += len(entry.owner) - len(before.owner)
        self.data[op.key] = entry
        if events is not None:
            events.append(KeyChanged(key=op.key, value=op.value, version=change.seq))
        return entry.size

    def _delete(self, op: Delete, change: Change, events: list[Event] | None) -> int:
        self._drop_key(op.key, change.seq, events)
        return 0

    def _drop_key(self, key: str, seq: int, events: list[Event] | None) -> None:
        gone = self.data.pop(key, None)
        if gone is not None:
            self.total_bytes -= gone.size
            self.record_bytes -= key_bytes(key, gone.owner)
            if events is not None:
                events.append(KeyDeleted(key=key, version=seq))

    def _msg(self, op: Msg, change: Change, events: list[Event] | None) -> int:
        sender = self.member(change.writer)
        if events is not None and sender is not None:
            events.append(Message(sender=self.peer(sender), payload=op.payload, to=op.to or None))
        return 0

    def _info(self, op: Info, change: Change, events: list[Event] | None) -> int:
        self.info = {**self.info, **op.settings}
        return 0

    def _profile(self, op: Profile, change: Change, events: list[Event] | None) -> int:
        who = self.member(change.writer)
        if who is not None:
            self.profile_bytes += value_bytes(op.profile) - value_bytes(who.profile)
            updated = replace(who, profile=op.profile)
            self.members[self.members.index(who)] = updated
            if events is not None:
                events.append(PeerUpdated(peer=self.peer(updated)))
        return 0

    def _join(self, op: Join, change: Change, events: list[Event] | None) -> int:
        member = op.member
        before = self.member(member.id)
        if before is not None:
            self.members.remove(before)
            self.profile_bytes -= value_bytes(before.profile)
            self.record_bytes -= member_bytes(before)
        self.members.append(member)
        self.profile_bytes += value_bytes(member.profile)
        self.record_bytes += member_bytes(member)
        if events is not None:
            events.append(PeerJoined(peer=self.peer(member)))
        return 0

    def _leave(self, op: LeaveOp, change: Change, events: list[Event] | None) -> int:
        gone = self.member(op.peer)
        if gone is None:
            return 0
        self.members.remove(gone)
        self.profile_bytes -= value_bytes(gone.profile)
        self.record_bytes -= member_bytes(gone)
        if events is not None:
            events.append(PeerLeft(peer=self.peer(gone), reason=op.reason))
        # Its ephemeral keys go with it, on every replica alike.
        for key in [k for k, e in self.data.items() if e.flags & EPHEMERAL and e.owner == op.peer]:
            self._drop_key(key, change.seq, events)
        return 0

    def _restore_op(self, op: Restore, change: Change, events: list[Event] | None) -> int:
        self._restore(op.entries, change.seq, change.writer, events)
        return 0

    def _acl(self, op: Acl, change: Change, events: list[Event] | None) -> int:
        self.access = self.access.apply_acl(op.action, op.identity)
        return 0

    def _set_access(self, op: SetAccess, change: Change, events: list[Event] | None) -> int:
        self.access = op.access
        return 0

    def _change_settings(
        self, op: ChangeSettings, change: Change, events: list[Event] | None
    ) -> int:
        self.access = self.access.with_settings(op.settings)
        return 0

    def _term(self, op: Term, change: Change, events: list[Event] | None) -> int:
        old = self.member(op.old) if op.old else None
        self.epoch, self.host_id = op.epoch, op.host
        new = self.member(op.host)
        if events is not None and new is not None:
            events.append(
                HostChanged(old=self.peer(old) if old else None, new=self.peer(new), epoch=op.epoch)
            )
        return 0

    def _log(self, change: Change, size: int) -> None:
        """Keep *change* for catch-ups within log_keep changes and log_budget
        bytes, dropping the oldest. One bigger than the whole budget is not
        kept: the log restarts after it (a peer behind it gets a snapshot)."""
        if size > self.log_budget:
            self.clear_log()
            return
        log = self.log
        log.append(change)
        self.log_sizes.append(size)
        self.log_bytes += size
        while len(log) > self.log_keep or self.log_bytes > self.log_budget:
            log.popleft()
            self.log_bytes -= self.log_sizes.popleft()

    def clear_log(self) -> None:
        self.log.clear()
        self.log_sizes.clear()
        self.log_bytes = 0

    def _restore(
        self,
        entries: tuple[RestoreEntry, ...],
        seq: int,
        writer: str,
        events: list[Event] | None,
    ) -> None:
        """A backup replaces every lasting key; the ephemeral keys of the
        players here stay (a backup never holds any). A key whose value,
        owner and flags are unchanged keeps its version and makes no event."""
        data: dict[str, Entry] = {}
        for key, value, owner, flags, ttl in entries:
            before = self.data.get(key)
            if (
                before is not None
                and not ttl
                and not before.ttl
                and (before.owner, before.flags) == (owner if flags else "", flags)
                and encode(before.value) == encode(value)  # 1, 1.0 and True differ
            ):
                data[key] = before
                continue
            data[key] = Entry.make(value, seq, owner or writer, flags, ttl)
            if events is not None:
                events.append(KeyChanged(key=key, value=value, version=seq))
        for key, entry in self.data.items():
            if key in data:
                continue
            if entry.flags & EPHEMERAL:
                data[key] = entry
            elif events is not None:
                events.append(KeyDeleted(key=key, version=seq))
        self.data = data
        self._recount()

    def seed(self, entries: tuple[tuple[str, Any, int, str, int, float], ...], seq: int) -> None:
        """Start from stored keys (key, value, version, owner, flags, ttl) at
        sequence number *seq*: a session created from a store."""
        self.data = {
            k: Entry.make(v, ver, owner, flags, ttl) for k, v, ver, owner, flags, ttl in entries
        }
        self._recount()
        self.seq = seq

    def _recount(self) -> None:
        """The byte counts, from scratch (after a restore, a seed, a snapshot)."""
        self.total_bytes = sum(e.size for e in self.data.values())
        self.profile_bytes = sum(value_bytes(m.profile) for m in self.members)
        self.record_bytes = sum(key_bytes(k, e.owner) for k, e in self.data.items()) + sum(
            member_bytes(m) for m in self.members
        )

    # ------------------------------------------------------------ snapshots

    def snapshot(self, ttl_left: dict[str, float] | None = None) -> Snapshot:
        """The whole state; *ttl_left* gives the seconds left of keys with a ttl."""
        ttl_left = ttl_left or {}
        return Snapshot(
            session_id=self.session_id,
            seq=self.seq,
            last_epoch=self.last_epoch,
            last_origin=self.last_origin,
            host_id=self.host_id,
            epoch=self.epoch,
            data=tuple(
                (k, e.value, e.version, e.owner, e.flags, ttl_left.get(k, e.ttl) if e.ttl else 0.0)
                for k, e in self.data.items()
            ),
            members=tuple(self.members),
            dedupe=tuple(
                (
                    w,
                    r.last_req,
                    r.acked_upto,
                    tuple((req, st, det, seq) for req, (st, det, seq) in r.results.items()),
                )
                for w, r in self.dedupe.items()
            ),
            terms=tuple(self.terms),
            info=dict(self.info),
            access=self.access,
        )

    def load(self, snap: Snapshot, *, events: list[Event] | None = None) -> None:
        """Replace everything with *snap*; report what differs as events."""
        old_data, old_members = self.data, {m.id: m for m in self.members}
        old_host = old_members.get(self.host_id)
        self.session_id = snap.session_id
        self.seq, self.last_epoch, self.last_origin = (
            snap.seq,
            snap.last_epoch,
            snap.last_origin,
        )
        self.host_id, self.epoch = snap.host_id, snap.epoch
        self.data = {
            k: Entry.make(v, ver, owner, flags, ttl) for k, v, ver, owner, flags, ttl in snap.data
        }
        self.members = list(snap.members)
        self.dedupe = {
            w: WriterRecord(last, acked, {req: (st, det, seq) for req, st, det, seq in results})
            for w, last, acked, results in snap.dedupe
        }
        self.terms = list(snap.terms)
        self.info = dict(snap.info)
        self.access = snap.access
        self._recount()
        self.clear_log()
        if events is None:
            return
        for key, entry in self.data.items():
            before = old_data.get(key)
            if before is None or before.version != entry.version or before.value != entry.value:
                events.append(KeyChanged(key=key, value=entry.value, version=entry.version))
        for key in old_data.keys() - self.data.keys():
            events.append(KeyDeleted(key=key, version=self.seq))
        new_ids = {m.id for m in self.members}
        for m in self.members:
            if m.id not in old_members:
                events.append(PeerJoined(peer=self.peer(m)))
        for mid, m in old_members.items():
            if mid not in new_ids:
                events.append(PeerLeft(peer=self.peer(m), reason="left"))
        new_host = self.member(self.host_id)
        if new_host is not None and (old_host is None or old_host.id != new_host.id):
            events.append(
                HostChanged(
                    old=self.peer(old_host) if old_host else None,
                    new=self.peer(new_host),
                    epoch=self.epoch,
                )
            )


#: How each op type applies: the Replica method for it.
_APPLY: dict[type[Any], Callable[[Replica, Any, Change, list[Event] | None], int]] = {
    Set: Replica._set,
    SetOpts: Replica._set,
    Delete: Replica._delete,
    Msg: Replica._msg,
    Info: Replica._info,
    Profile: Replica._profile,
    Join: Replica._join,
    LeaveOp: Replica._leave,
    Term: Replica._term,
    Restore: Replica._restore_op,
    Acl: Replica._acl,
    SetAccess: Replica._set_access,
    ChangeSettings: Replica._change_settings,
}
