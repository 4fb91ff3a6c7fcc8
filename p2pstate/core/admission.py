"""Admission: what the host lets into the history. The verdict on a write
(operations allowed, access, rate limit, sizes, owners, quotas, conditions),
on a restore, the members an access change expels, and which wire facts may
move our epoch or make us follow a node."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..codec import MAX_KEY_BYTES, encode, hash_value
from ..errors import ProtocolError
from ..messages import EPHEMERAL, MAX_PROFILE_BYTES, OWNER_ONLY, Hello, restore_entries
from .access import Access
from .advert import info_fault
from .bounds import NEW_KEY_BYTES, key_bytes, snapshot_bytes
from .common import EPOCH_CEILING
from .config import Config
from .ids import identity_of
from .ops import (
    Acl,
    ChangeSettings,
    Cond,
    Delete,
    IfAbsent,
    IfExists,
    IfHash,
    Info,
    Msg,
    Op,
    Profile,
    Restore,
    RestoreEntry,
    Set,
    SetOpts,
)
from .ops import Leave as LeaveOp
from .replica import Entry, Replica, scalar_size, value_bytes
from .status import Status

if TYPE_CHECKING:
    from .node import Node

#: Kinds of op a writer may send; the rest are the host's own bookkeeping.
_WRITE_OPS = frozenset({"set", "del", "msg", "profile", "info", "acl", "access_set", "restore"})


class Admission:
    """What the host lets into the history, and whom a node may follow.

    It reads the replica and the settings and keeps the state its rules
    need: the writers' token buckets and the identities whose session state
    we refused. Refusals are counted through *refusal* (``Node.refusal``)."""

    def __init__(
        self, replica: Replica, config: Config, refusal: Callable[[str, str], None]
    ) -> None:
        self.replica = replica
        self.config = config
        self.refusal = refusal
        #: writer -> (tokens, when counted): the write-rate token buckets
        self.buckets: dict[str, tuple[float, float]] = {}
        #: Identities whose session state we refused: never followed again.
        self.foreign: dict[str, tuple[()]] = {}

    def check(
        self, writer: str, ops: tuple[Op, ...], conds: tuple[Cond, ...], now: float
    ) -> tuple[Status, Any]:
        """The host's verdict on a write: (Status.OK, None) or a refusal with detail."""
        verdict = self._check_writer(writer, ops, now)
        if verdict is not None:
            return verdict
        growth = _Growth()
        verdict = self._check_ops(writer, ops, growth)
        if verdict is not None:
            return verdict
        sizes, profile_grow = growth.sizes, growth.profile
        access = self.replica.access
        quota = self.over_quota(sizes, access, profile_grow) if sizes or profile_grow > 0 else None
        if quota is not None:
            self.refusal("writes_over_quota", writer)
            return Status.QUOTA, quota
        return _check_conds(self.replica.data, conds)

    def _check_writer(
        self, writer: str, ops: tuple[Op, ...], now: float
    ) -> tuple[Status, Any] | None:
        """Whether *writer* may make a write of these kinds of operation now:
        None, or the refusal (forged ops, access, rate limit)."""
        if not ops:
            return Status.INVALID, "a write needs at least one operation"
        kinds: set[str] = {op.kind for op in ops}
        if not kinds <= _WRITE_OPS:
            # join/leave/term/access name a member or the host: only the host
            # makes them, never on a writer's word.
            self.refusal("forged_ops", writer)
            return (
                Status.INVALID,
                f"operations {sorted(kinds - _WRITE_OPS)} are not allowed in a write",
            )
        access = self.replica.access
        identity = identity_of(writer)
        denied = access.check_write(identity, kinds)
        if denied is not None:
            self.refusal("writes_denied", writer)
            return Status.DENIED, denied
        # A change of settings (the admin's alone, checked above) takes no
        # token: a rate set by mistake can always be lifted.
        if kinds != {"access_set"} and not self.take_token(writer, access, now):
            self.refusal("writes_rate_limited", writer)
            return Status.RATE_LIMITED, {"rate": access.write_rate, "burst": access.write_burst}
        return None

    def _check_ops(
        self, writer: str, ops: tuple[Op, ...], growth: _Growth
    ) -> tuple[Status, Any] | None:
        """Each operation of a write in turn: None if all may apply, else the
        first refusal. Notes in *growth* what the write makes of the session."""
        access = self.replica.access
        identity = identity_of(writer)
        data = self.replica.data
        limit = self.config.max_value_size
        sizes = growth.sizes
        acl = access  # as the write's ACL ops leave it, one after another
        for op in ops:
            if isinstance(op, (Set, SetOpts, Delete)):  # the usual op: checked inline
                key = op.key
                if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
                    return Status.INVALID, "key too long"
                if isinstance(op, Delete):
                    sizes[key] = -1
                else:
                    size = len(encode(op.value))
                    if size > limit:
                        return Status.TOO_LARGE, {"key": key, "limit": limit}
                    sizes[key] = _stored_size(op.value, size)
                entry = data.get(key)
                # Owned by the player (the identity), not by one run of the game.
                if entry is not None and entry.flags & OWNER_ONLY and not _owns(entry, identity):
                    return Status.DENIED, {"key": key, "owner": entry.owner}
                continue
            refusal: tuple[Status, Any] | None = None
            if isinstance(op, Acl):
                refused = acl.check_acl(op.action, op.identity)
                if refused is not None:
                    return Status.INVALID, refused
                acl = acl.apply_acl(op.action, op.identity)
            elif isinstance(op, Profile):
                refusal = self._check_profile(writer, op, growth)
            elif isinstance(op, Info):
                refusal = self._check_info(writer, op)
            elif isinstance(op, Msg):
                refusal = self._check_msg(op)
            elif isinstance(op, Restore):
                refusal = self.check_restore(op.entries, identity, access, sizes)
            # ChangeSettings: checked whole on the wire and by check_write (admin);
            # the host's own kinds never get here (_check_writer refused them).
            if refusal is not None:
                return refusal
        return None

    def _check_profile(
        self, writer: str, op: Profile, growth: _Growth
    ) -> tuple[Status, Any] | None:
        """The writer's new profile: its size, and what it adds (in *growth*)."""
        size = len(encode(op.profile))
        if size > MAX_PROFILE_BYTES:  # as the wire and the API hold it
            return Status.TOO_LARGE, {"key": op.kind, "limit": MAX_PROFILE_BYTES}
        me = self.replica.member(writer)
        growth.profile = size - (value_bytes(me.profile) if me is not None else 0)
        return None

    def _check_info(self, writer: str, op: Info) -> tuple[Status, Any] | None:
        """New session settings: their size, and what every host can advertise."""
        limit = self.config.max_value_size
        if len(encode(op.settings)) > limit:
            return Status.TOO_LARGE, {"key": op.kind, "limit": limit}
        # What the API checks, so that every host can advertise it.
        fault = info_fault({**self.replica.info, **op.settings}, self.config.advert_room)
        if fault is not None:
            self.refusal("info_refused", writer)
            return Status.INVALID, fault
        return None

    def _check_msg(self, op: Msg) -> tuple[Status, Any] | None:
        """A message: to a member (or everyone), and not too large."""
        if op.to and self.replica.member(op.to) is None:
            return Status.NO_PEER, {"peer": op.to}
        limit = self.config.max_value_size
        if len(encode(op.payload)) > limit:
            return Status.TOO_LARGE, {"key": "message", "limit": limit}
        return None

    def check_restore(
        self,
        entries: tuple[RestoreEntry, ...],
        identity: str,
        access: Access,
        sizes: dict[str, int],
    ) -> tuple[Status, Any] | None:
        """A restore replaces every lasting key: None if it may, else the
        refusal. Notes in *sizes* what each key will hold, for the quotas."""
        try:
            # Our own restore comes from a file, not the wire: hold it to what
            # every peer will accept (a ttl in range...), or they all drop it.
            restore_entries([list(entry) for entry in entries])
        except ProtocolError as exc:
            return Status.INVALID, f"restore: {exc}"
        limit = self.config.max_value_size
        new = {entry[0]: entry for entry in entries}
        for key, value, *_ in entries:
            if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
                return Status.INVALID, "key too long"
            size = len(encode(value))
            if size > limit:
                return Status.TOO_LARGE, {"key": key, "limit": limit}
            sizes[key] = _stored_size(value, size)
        for key, old in self.replica.data.items():
            entry = new.get(key)
            # Another player's owner-only key, ephemeral or not: only the admin
            # may change it, so the restore must leave it exactly as it is.
            if old.flags & OWNER_ONLY and not _owns(old, identity) and identity != access.admin:
                ephemeral_left = old.flags & EPHEMERAL and entry is None
                if not ephemeral_left and (entry is None or not _restore_keeps(old, entry)):
                    return Status.DENIED, {"key": key, "owner": old.owner}
            if key not in new and not old.flags & EPHEMERAL:
                sizes[key] = -1  # lasting keys not in the backup go; ephemeral ones stay
        return None

    def take_token(self, writer: str, access: Access, now: float) -> bool:
        """The writer's token bucket: ``write_burst`` writes at once, refilled
        at ``write_rate`` a second, by the caller's clock."""
        tokens, then = self.buckets.get(writer, (float(access.write_burst), now))
        tokens = min(float(access.write_burst), tokens + (now - then) * access.write_rate)
        if tokens < 1.0:
            self.buckets[writer] = (tokens, now)
            return False
        self.buckets[writer] = (tokens - 1.0, now)
        return True

    def over_quota(
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
        most_bytes = min(access.max_total_bytes, self.snapshot_room(sizes, every_new=True))
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
        if total > self.snapshot_room(sizes) and (total > before or keys > len(data)):
            # A newcomer could no longer take the state in one snapshot.
            return {"limit": "max_frame_size", "max": self.config.max_snapshot_bytes}
        return None

    def snapshot_room(self, sizes: dict[str, int], *, every_new: bool = False) -> int:
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

    def expulsions(self, ops: tuple[Op, ...], host_id: str) -> tuple[LeaveOp, ...]:
        """Leave ops for the members (other than the host, *host_id*) that
        *ops*' access changes refuse."""
        access = self.replica.access
        for op in ops:
            if isinstance(op, Acl):
                access = access.apply_acl(op.action, op.identity)
            elif isinstance(op, ChangeSettings):
                access = access.with_settings(op.settings)
        return tuple(
            LeaveOp(m.id, access.refusal(identity_of(m.id)))
            for m in self.replica.members
            if m.id != host_id and not access.may_read(identity_of(m.id))
        )

    def may_lead(self, node_id: str) -> bool:
        """Whether *node_id* may make us change role (step down to it, follow
        it, take over for it, load its state): never an identity our access
        state refuses (banned, not authorized), nor one whose session state
        we refused before (it named another admin)."""
        identity = identity_of(node_id)
        return self.replica.access.may_read(identity) and identity not in self.foreign


@dataclass(slots=True)
class _Growth:
    """What a write makes of the session, for the quotas."""

    sizes: dict[str, int] = field(default_factory=dict)  # key -> size after, -1: deleted
    profile: int = 0  # bytes the writer's new profile adds to the session's


def _check_conds(data: dict[str, Entry], conds: tuple[Cond, ...]) -> tuple[Status, Any]:
    """The write's conditions on the state as it is: (Status.OK, None) or why not."""
    for cond in conds:
        key = cond.key
        entry = data.get(key)
        if isinstance(cond, IfExists) and entry is None:
            return Status.MISSING, {"key": key}
        if isinstance(cond, IfAbsent) and entry is not None:
            return Status.CONFLICT, {"key": key, "exists": True, "value": entry.value}
        if isinstance(cond, IfHash):
            if entry is None:
                return Status.MISSING, {"key": key}
            if hash_value(entry.value) != cond.hash:
                return Status.CONFLICT, {
                    "key": key,
                    "exists": True,
                    "value": entry.value,
                }
    return Status.OK, None


def may_move_epoch(node: Node, msg: Hello) -> bool:
    """Host: a Hello may take our epoch past its own only from a member of
    ours (or one that fell silent: the other half of a split) or a host we
    met (stepping down to us), and never near the top of the wire range,
    so that epoch + 1 always encodes."""
    sender = msg.sender
    member = node.replica.member(sender) is not None or sender in node.departed
    known = member or sender in node.rivals
    return known and msg.epoch < EPOCH_CEILING


def _owns(entry: Entry, identity: str) -> bool:
    """Whether the player *identity* owns *entry*: the identity, not one run
    of the game, so a player who restarts keeps their owner-only keys."""
    return identity_of(entry.owner) == identity


def _restore_keeps(old: Entry, entry: RestoreEntry) -> bool:
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
