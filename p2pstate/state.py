"""SharedState: the dict every peer of a session holds.

Reads come from the local replica (no network). Writes go to the host, which
orders them; a blocking write returns once the host and its successor hold it,
and by then the new value is readable here too.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    ValuesView,
)
from typing import TYPE_CHECKING, Any, overload

import msgpack

from .backup import Backup, read_backup, write_backup
from .codec import check_key, check_text, encode, fresh_copy, hash_value, normalize
from .core.access import check_identity
from .core.ids import identity_of
from .core.node import Role
from .core.ops import (
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
    Set,
    SetOpts,
)
from .core.replica import Entry
from .core.status import Status
from .core.writer import Outcome
from .errors import (
    BannedError,
    DataUnchangedError,
    P2PStateError,
    PermissionDeniedError,
    ProtocolError,
    QuotaExceededError,
    RateLimitedError,
    SessionClosedError,
    SessionLostError,
    UpdateFailedError,
    ValueTooLargeError,
)
from .events import Event, Peer
from .messages import EPHEMERAL, MAX_PROFILE_BYTES, OWNER_ONLY, session_info
from .options import check_access_settings, check_seconds

if TYPE_CHECKING:
    from _typeshed import SupportsKeysAndGetItem

    from ._view import View
    from .session import Runtime

__all__ = ["SharedState", "Transaction"]


class _Unset(enum.Enum):
    """A setting the caller left as it is."""

    UNSET = 0


_UNSET = _Unset.UNSET

log = logging.getLogger(__name__)


class SharedState(MutableMapping[str, Any]):
    """The shared dict. Make one with :func:`p2pstate.join`.

    Values are what msgpack carries: None, bool, int, float, str, bytes, and
    lists and dicts (with str keys) of those. Tuples come back as lists. What
    you read is your own copy: changing a list you read changes nothing
    shared. To change a nested value, write it back (``s[k] = changed``) or use
    :meth:`apply_op`, which also survives concurrent writers.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        # Per thread: the keys a keys() listing handed out, still to be
        # looked up (see _entry).
        self._listing = threading.local()

    # ------------------------------------------------------------ reads
    #
    # Every read takes the latest View the I/O thread published (one
    # attribute read, one moment) and reads only from it: nothing here
    # touches the core's live state, which the I/O thread changes meanwhile.

    def _view(self) -> View:
        self._listing.current = None  # any other read ends a keys() listing
        return self._rt.view

    def _entry(self, key: str) -> Entry | None:
        check_key(key)
        listing: _Listing | None = getattr(self._listing, "current", None)
        if listing is not None:
            # dict(s) and {**s} call keys() and then s[k] for each key: those
            # lookups, in that order with no other read between, read the
            # view the keys came from (a key deleted meanwhile would raise).
            entry = listing.next(key)
            if entry is not _NOT_LISTED:
                return entry
        return self._view().entries.get(key)

    def __getitem__(self, key: str) -> Any:
        entry = self._entry(key)
        if entry is None:
            raise KeyError(key)
        return _read(entry)

    def get(self, key: str, default: Any = None) -> Any:
        entry = self._entry(key)
        return default if entry is None else _read(entry)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._view().entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._view().entries))

    def __len__(self) -> int:
        return len(self._view().entries)

    def keys(self) -> KeysView[str]:
        entries = self._view().entries
        listing = _Listing(entries)
        self._listing.current = listing
        return KeysView(listing)

    def items(self) -> ItemsView[str, Any]:
        return ItemsView(_Snapshot(self._view().entries))

    def values(self) -> ValuesView[Any]:
        return ValuesView(_Snapshot(self._view().entries))

    def copy(self) -> dict[str, Any]:
        """Every key and its value, as a plain dict of one moment."""
        return {key: _read(entry) for key, entry in self._view().entries.items()}

    def version(self, key: str) -> int:
        """The sequence number of the change that last wrote *key*."""
        entry = self._view().entries.get(check_key(key))
        if entry is None:
            raise KeyError(key)
        return entry.version

    def get_if_changed(self, key: str, oldhash: str) -> Any:
        """The value of *key*, or DataUnchangedError if it still hashes to *oldhash*."""
        value = self[key]
        if not isinstance(oldhash, str):
            raise TypeError("oldhash must be the str that p2pstate.hash_value returned")
        if hash_value(value) == oldhash:
            raise DataUnchangedError(f"{key!r} is unchanged")
        return value

    # ------------------------------------------------------------ writes

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        key = check_key(key)
        self._write((Delete(key),), (IfExists(key),), key=key)

    def set(
        self,
        key: str,
        value: Any,
        *,
        wait: bool = True,
        ephemeral: bool = False,
        owner_only: bool = False,
        ttl: float | None = None,
    ) -> None:
        """Write one key.

        ``wait=False`` returns at once (for a game loop): the write is still
        ordered, acknowledged and resent through failovers, ``flush()`` waits
        for it, and while one plain write of a key is on its way a newer one
        replaces any older one still waiting (latest wins).

        ``ephemeral=True``: the key is deleted (``KeyDeleted`` everywhere) when
        this peer leaves, times out or crashes. ``owner_only=True``: from now
        on only this player (this peer's identity, so also the same game
        started again) may write or delete it; others get
        PermissionDeniedError. ``ttl=seconds``: the host deletes it after that
        long, by its own clock; a new host keeps the deadline. A later write
        of the key sets its flags anew.
        """
        key = check_key(key)
        flags = (EPHEMERAL if ephemeral else 0) | (OWNER_ONLY if owner_only else 0)
        if ttl is not None:
            if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
                raise TypeError(f"ttl must be a number of seconds or None, not {ttl!r}")
            if not 0 < ttl <= 10_000_000:
                raise ValueError(f"ttl must be seconds above 0, at most 10,000,000; got {ttl!r}")
        value = self._checked(value)
        op = SetOpts(key, value, flags, float(ttl or 0.0)) if flags or ttl else Set(key, value)
        self._write((op,), (), key=key, wait=wait)

    def set_profile(self, profile: dict[str, Any]) -> None:
        """Replace this peer's profile (a small dict others see in ``peers``);
        every peer gets a ``PeerUpdated`` event."""
        if not isinstance(profile, dict):
            raise TypeError("profile must be a dict")
        profile = self._checked(profile)
        size = len(encode(profile))
        if size > MAX_PROFILE_BYTES:
            raise ValueTooLargeError(
                f"profile is {size} bytes encoded; at most {MAX_PROFILE_BYTES} (MAX_PROFILE_BYTES)"
            )
        self._write((Profile(profile),), ())

    @property
    def session_info(self) -> dict[str, Any]:
        """The session's settings: max_players, joinable, version, metadata."""
        info: dict[str, Any] = fresh_copy(dict(self._view().info))
        return info

    def set_session_info(
        self,
        *,
        max_players: int | _Unset | None = _UNSET,
        joinable: bool | _Unset = _UNSET,
        version: str | _Unset | None = _UNSET,
        metadata: dict[str, str] | _Unset = _UNSET,
    ) -> None:
        """Change the session's settings, which the host advertises for the
        lobby (``p2pstate.browse``) and every later host keeps. ``metadata``
        (small str to str) replaces the previous one. ValueError if the
        settings would not fit the mDNS record (255 bytes an entry, about
        1300 in all)."""
        given = {
            "max_players": max_players,
            "joinable": joinable,
            "version": version,
            "metadata": metadata,
        }
        info = {k: v for k, v in given.items() if v is not _UNSET}
        try:
            info = session_info(info)  # plain types, as every peer will hold them
        except ProtocolError as exc:  # the wire's check, an API caller's ValueError
            raise ValueError(str(exc)) from None
        self._rt.check_session_info(info)
        self._write((Info(info),), ())

    # ------------------------------------------------------------ permissions

    def authorize(self, peer_id: str) -> None:
        """Admin only: let this identity (or the identity of this peer id) in
        where ``readmode`` or ``writemode`` is AUTHORIZED_ONLY."""
        self._acl("authorize", peer_id)

    def unauthorize(self, peer_id: str) -> None:
        """Admin only: take the authorization back; under an AUTHORIZED_ONLY
        readmode its peers are removed from the session."""
        self._acl("unauthorize", peer_id)

    def ban(self, peer_id: str) -> None:
        """Admin only: ban this identity (or the identity of this peer id).
        Its peers are removed from the session at once and refused from then
        on, by this host and every later one. The admin cannot be banned."""
        identity = self._identity(peer_id)
        if identity == self.admin:
            raise ValueError("the admin cannot be banned")
        self._acl("ban", identity)

    def unban(self, peer_id: str) -> None:
        """Admin only: lift a ban; that player may join again."""
        self._acl("unban", peer_id)

    def _acl(self, action: str, peer_id: str) -> None:
        identity = self._identity(peer_id)
        # As the host checks it: a typo (upper case, a digit short) would be
        # listed and shown but match nobody. One listed may be taken off.
        if not self._rt.node.replica.access.well_formed(action, identity):
            raise ValueError(
                f"{peer_id!r} is not a peer id (IDENTITY.INSTANCE) or an identity "
                "(16 lower-case hex digits: see .peers, .banned, .authorized)"
            )
        self._require_admin(action)
        self._write((Acl(action, identity),), ())

    def set_access(
        self,
        *,
        readmode: str | _Unset = _UNSET,
        writemode: str | _Unset = _UNSET,
        max_keys: int | _Unset = _UNSET,
        max_total_bytes: int | _Unset = _UNSET,
        write_rate: float | _Unset = _UNSET,
        write_burst: int | _Unset = _UNSET,
    ) -> None:
        """Admin only: change some of the session's modes and limits (the
        others stay), checked as ``join`` checks them, in one ordered change
        every replica and later host keeps. A readmode that no longer lets a
        member in removes it, as a ban does. PermissionDeniedError from
        anyone but the admin; limits act on later writes only."""
        given = {
            "readmode": readmode,
            "writemode": writemode,
            "max_keys": max_keys,
            "max_total_bytes": max_total_bytes,
            "write_rate": write_rate,
            "write_burst": write_burst,
        }
        settings = {k: v for k, v in given.items() if v is not _UNSET}
        if not settings:
            raise TypeError("set_access() needs at least one setting to change")
        check_access_settings(settings)
        if "write_rate" in settings:
            settings["write_rate"] = float(settings["write_rate"])
        self._require_admin("set_access")
        self._write((ChangeSettings(settings),), ())

    def _require_admin(self, action: str) -> None:
        admin = self.admin
        if identity_of(self._rt.node_id) != admin:
            raise PermissionDeniedError(
                f"only the session's admin ({admin}) may {action}; this peer is "
                f"{identity_of(self._rt.node_id)}"
            )

    @staticmethod
    def _identity(peer_id: str) -> str:
        if not isinstance(peer_id, str):
            raise TypeError("give the str id of a peer (see .peers) or its identity")
        try:
            return check_identity(identity_of(peer_id))
        except ProtocolError:
            raise ValueError(f"{peer_id!r} is not a peer id or an identity") from None

    @property
    def admin(self) -> str:
        """The identity of the session's admin: the one that created it."""
        return self._view().access.admin

    @property
    def readmode(self) -> str:
        """Who may join (and so read): one of p2pstate.ANY, ADMIN_ONLY,
        AUTHORIZED_ONLY, UNBANNED_ONLY."""
        return self._view().access.readmode

    @property
    def writemode(self) -> str:
        """Who may set, delete and send messages: one of the same modes."""
        return self._view().access.writemode

    @property
    def banned(self) -> frozenset[str]:
        """The banned identities."""
        return self._view().access.banned

    @property
    def authorized(self) -> frozenset[str]:
        """The identities the admin authorized."""
        return self._view().access.authorized

    @property
    def limits(self) -> dict[str, Any]:
        """The host's limits: max_keys, max_total_bytes, write_rate, write_burst."""
        settings = self._view().access.settings()
        return {k: v for k, v in settings.items() if k not in ("readmode", "writemode")}

    # ------------------------------------------------------------ messages

    def broadcast(self, payload: Any, *, wait: bool = True) -> None:
        """Send *payload* to every other peer, as a ``Message`` event.

        Messages are not stored. They travel through the host, in order per
        sender, exactly once, and go on through a failover: a blocking call
        returns once the message is ordered and held by two peers, or raises."""
        self._write((Msg("", self._checked(payload)),), (), wait=wait)

    def send(self, peer_id: str, payload: Any, *, wait: bool = True) -> None:
        """Send *payload* to one peer, as a ``Message`` event there.
        KeyError if no such peer is in the session."""
        if not isinstance(peer_id, str):
            raise TypeError("peer_id must be the str id of a peer (see .peers)")
        peer_id = check_text("peer_id", peer_id)
        self._write((Msg(peer_id, self._checked(payload)),), (), key=peer_id, wait=wait)

    def transaction(self) -> Transaction:
        """``with s.transaction() as t:`` reads through ``t`` from this
        replica, buffers writes, and commits them as one change when the block
        ends, on the condition that every key it read is unchanged at the host
        (compare-and-swap on all of them). A conflict raises UpdateFailedError
        and writes nothing; an exception in the block writes nothing."""
        return Transaction(self)

    @overload
    def update(self, key: str, oldhash: str, new: Any, /) -> None: ...

    @overload
    def update(self, other: SupportsKeysAndGetItem[str, Any], /, **kwargs: Any) -> None: ...

    @overload
    def update(self, other: Iterable[tuple[str, Any]], /, **kwargs: Any) -> None: ...

    @overload
    def update(self, /, **kwargs: Any) -> None: ...

    def update(self, /, *args: Any, **kwargs: Any) -> None:
        """``update(mapping)`` / ``update(**kw)``: write several keys as one
        atomic change. ``update(key, oldhash, new)``: compare-and-swap: write
        *new* only if the host's value of *key* still hashes to *oldhash*,
        else UpdateFailedError; KeyError if *key* does not exist."""
        if len(args) == 3 and not kwargs:
            key, oldhash, new = args
            key = check_key(key)
            if not isinstance(oldhash, str):
                raise TypeError("oldhash must be the str that p2pstate.hash_value returned")
            oldhash = check_text("oldhash", oldhash)
            self._write((Set(key, self._checked(new)),), (IfHash(key, oldhash),), key=key)
            return
        if len(args) > 1:
            raise TypeError(f"update expected 1 or 3 positional arguments, got {len(args)}")
        items = dict(*args, **kwargs)
        if not items:
            return
        ops = tuple(Set(check_key(k), self._checked(v)) for k, v in items.items())
        self._write(ops, ())

    def apply_op(
        self,
        key: str,
        fn: Callable[[Any], Any],
        create: bool = False,
        defaultvalue: Any = None,
    ) -> Any:
        """Read *key*, compute ``fn(value)``, write it back if nobody wrote in
        between, else retry with the newer value. Returns the value written.

        A missing key raises KeyError, or with ``create=True`` is set to
        *defaultvalue* (``fn`` is not applied then)."""
        key = check_key(key)
        if not callable(fn):
            raise TypeError(f"fn must be a callable taking the value, not {type(fn).__name__}")
        entry = self._entry(key)
        if entry is None:
            if not create:
                raise KeyError(key)
            default = self._checked(defaultvalue)
            outcome = self._send((Set(key, default),), (IfAbsent(key),))
            if outcome.status == Status.OK:
                return fresh_copy(default)
            current = self._current_from(outcome, key)
        else:
            current = entry.value
        while True:
            new = self._checked(fn(fresh_copy(current)))
            outcome = self._send((Set(key, new),), (IfHash(key, hash_value(current)),))
            if outcome.status == Status.OK:
                return fresh_copy(new)
            current = self._current_from(outcome, key)

    def _current_from(self, outcome: Outcome, key: str) -> Any:
        """The host's value after a refused compare-and-swap."""
        if outcome.status == Status.MISSING:
            raise KeyError(key)
        if outcome.status != Status.CONFLICT or not isinstance(outcome.detail, dict):
            _raise_for(outcome, key)
        self._rt.count("apply_op_retries")  # a user thread: never the I/O thread's Counter
        return outcome.detail.get("value")

    def _checked(self, value: Any) -> Any:
        value = normalize(value)
        size = len(encode(value))
        limit = self._rt.options.max_value_size
        if size > limit:
            raise ValueTooLargeError(f"value is {size} bytes encoded; max_value_size is {limit}")
        return value

    def _fits(self, ops: tuple[Op, ...]) -> None:
        """Refuse a write of several values that one message cannot carry
        (each fits max_value_size, together they may not): the host would
        drop it, and it would wait in line ahead of every later write."""
        if len(ops) < 2:
            return  # one value is at most max_value_size, half a frame
        size, limit = len(encode(ops)), self._rt.options.max_frame_size // 2
        if size > limit:
            raise ValueTooLargeError(
                f"this write is {size} bytes encoded; one write travels as one message "
                f"of at most half of max_frame_size ({limit} bytes): split it"
            )

    def _send(self, ops: tuple[Op, ...], conds: tuple[Cond, ...]) -> Outcome:
        self._fits(ops)
        pending = self._rt.submit(ops, conds, wait=True)
        assert pending is not None
        return self._rt.wait(pending, self._rt.options.write_timeout)

    def _write(
        self,
        ops: tuple[Op, ...],
        conds: tuple[Cond, ...],
        *,
        key: str | None = None,
        wait: bool = True,
    ) -> None:
        if not wait:
            self._fits(ops)
            self._rt.submit(ops, conds, wait=False)
            return
        outcome = self._send(ops, conds)
        if outcome.status != Status.OK:
            _raise_for(outcome, key)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every write made here (``wait=False`` ones too) is
        acknowledged: SessionLostError if that takes longer than *timeout*,
        SessionClosedError if the state closed (or its I/O thread ended) first."""
        limit = self._rt.options.write_timeout if timeout is None else timeout
        check_seconds("timeout", limit, zero=True)
        if not self._rt.flush(limit):
            raise SessionLostError(f"writes still unacknowledged after {limit} s")

    # ------------------------------------------------------------ backup and restore

    def backup(self, path: str | os.PathLike[str]) -> int:
        """Write every lasting key of this replica (not ephemeral ones) to the
        backup file *path*, whole or not at all. Returns the number of keys."""
        node = self._rt.node

        def take() -> tuple[int, list[tuple[str, Entry]], dict[str, float]]:
            return node.replica.seq, list(node.replica.data.items()), node.ttl_left()

        seq, items, ttl_left = self._rt.run_on_io(take, self._rt.options.write_timeout)
        now = time.time()
        entries = tuple(
            (key, e.value, e.owner, e.flags, now + ttl_left.get(key, e.ttl) if e.ttl else 0.0)
            for key, e in items
            if not e.flags & EPHEMERAL
        )
        write_backup(
            path,
            Backup(app=self.app, session=self.session, created=now, seq=seq, entries=entries),
        )
        return len(entries)

    def restore(self, path: str | os.PathLike[str]) -> int:
        """Replace the session's lasting keys by those of the backup file
        *path*, as one change every peer sees (KeyChanged and KeyDeleted for
        what differs); the players' ephemeral keys stay. The whole file is
        checked first: a corrupt, truncated or foreign file, or a backup of
        another app, raises BackupError and changes nothing. Keys whose ttl
        ran out since the backup are left out. Returns the number of keys."""
        backup = read_backup(path, app=self.app)
        op = backup.restore_op(time.time())
        limit = self._rt.options.max_value_size
        for key, value, *_ in op.entries:
            size = len(encode(value))
            if size > limit:
                raise ValueTooLargeError(
                    f"the backup's value of {key!r} is {size} bytes; max_value_size is {limit}"
                )
        size, frame_limit = len(encode(op)), self._rt.options.max_frame_size // 2
        if size > frame_limit:
            raise ValueTooLargeError(
                f"the backup is {size} bytes encoded; a restore travels as one message "
                f"of at most half of max_frame_size ({frame_limit} bytes)"
            )
        self._write((op,), ())
        return len(op.entries)

    # ------------------------------------------------------------ push

    def on_change(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call *callback(event)* for every event, in order, on this state's
        callback thread (one, started by the first on_change, stopped by
        close()), never on the I/O thread: any call is allowed in it, even a
        blocking write or close(), and a slow one delays only the callbacks
        after it. One that raises is logged and counted
        (``stats["callback_errors"]``). Returns a function that removes it."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        return self._rt.on_change(callback)

    def poll(self) -> list[Event]:
        """Every event since the last call, oldest first. Never blocks.

        Events are kept for it while ``poll_events`` is true (the default)."""
        return self._rt.poll()

    @property
    def poll_events(self) -> bool:
        """Whether events are kept for :meth:`poll`. Set it false when you take
        events only through ``on_change`` or ``p2pstate.pygame``; that also
        empties what was kept."""
        return self._rt.poll_events

    @poll_events.setter
    def poll_events(self, keep: bool) -> None:
        self._rt.poll_events = bool(keep)
        if not keep:
            self._rt.poll()

    # ------------------------------------------------------------ session

    @property
    def me(self) -> Peer:
        view = self._view()
        return view.peer(view.member(view.me.id) or view.me)

    @property
    def peers(self) -> list[Peer]:
        """Every member, this one included, in succession (join) order."""
        view = self._view()
        return [view.peer(m) for m in view.members]

    @property
    def host(self) -> Peer | None:
        view = self._view()
        member = view.member(view.host_id)
        return view.peer(member) if member is not None else None

    @property
    def is_host(self) -> bool:
        return self._view().role is Role.HOST

    @property
    def epoch(self) -> int:
        """The host epoch: it grows by one with every change of host."""
        return self._view().epoch

    @property
    def isolated(self) -> bool:
        """This copy hosts and hears no majority of its session (its cable is
        out, it was paused, the others are gone): it acknowledges no write
        until one is back, or until it goes on alone after the isolation
        timeout. ``IsolationChanged`` events report each change."""
        return self._view().isolated

    @property
    def app(self) -> str:
        return self._rt.app

    @property
    def session(self) -> str:
        return self._rt.session

    @property
    def stats(self) -> dict[str, int]:
        """Counters: dropped messages, retries and such, for diagnostics."""
        out: dict[str, int] = {}
        out.update(self._rt.node.stats)
        out.update(self._rt.transport.stats)
        out.update(self._rt.counts())
        return out

    @property
    def closed(self) -> bool:
        return self._rt.stopped.is_set()

    def close(self, timeout: float = 2.0) -> None:
        """Flush this peer's writes and leave; a host hands over to the next
        peer first. Leaves no thread, socket or mDNS record behind."""
        self._rt.close(timeout)

    def __enter__(self) -> SharedState:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        view = self._view()
        role, keys = view.role.value, len(view.entries)
        return f"<SharedState {self._rt.app!r}/{self._rt.session!r} {role} keys={keys}>"

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__


_NOT_LISTED: Any = object()


class _Snapshot(Mapping[str, Any]):
    """The values of one view's entries, read-only: what items() and
    values() iterate, so each pair comes from the same moment."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[str, Entry]) -> None:
        self._entries = entries

    def __getitem__(self, key: str) -> Any:
        return _read(self._entries[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class _Listing(_Snapshot):
    """The keys of one view, as keys() hands them out, and the lookups of
    those keys in that order that may follow (what dict(s) does)."""

    __slots__ = ("_next", "_order")

    def __init__(self, entries: Mapping[str, Entry]) -> None:
        super().__init__(entries)
        self._order = tuple(entries)
        self._next = 0

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def next(self, key: str) -> Entry | None:
        """The entry of *key* in this view if it is the next key listed,
        else _NOT_LISTED."""
        if self._next >= len(self._order) or self._order[self._next] != key:
            return _NOT_LISTED  # type: ignore[no-any-return]
        self._next += 1
        return self._entries.get(key)


def _read(entry: Entry) -> Any:
    if entry.packed is not None:
        return msgpack.unpackb(entry.packed, raw=False)
    return entry.value


def _raise_for(outcome: Outcome, key: str | None) -> Any:
    status, detail = outcome.status, outcome.detail
    if status == Status.NO_PEER:
        raise KeyError(f"no peer {key!r} in this session")
    if status == Status.CONFLICT:
        raise UpdateFailedError(f"{key!r} changed since you read it")
    if status == Status.MISSING:
        raise KeyError(detail.get("key", key) if isinstance(detail, dict) else key)
    if status == Status.TOO_LARGE:
        raise ValueTooLargeError(f"the host refused a value for {key!r} as too large: {detail}")
    if status == Status.DENIED:
        _raise_denied(detail, key)
    if status == Status.RATE_LIMITED:
        raise RateLimitedError(
            f"writing faster than the session allows ({detail['rate']:g} writes/s after a "
            f"burst of {detail['burst']}); the host refused the write"
        )
    if status == Status.QUOTA:
        raise QuotaExceededError(
            f"the write would take the session past {detail['limit']} ({detail['max']})"
        )
    if status == Status.CLOSED:
        raise SessionClosedError("the shared state is closed")
    if status == Status.UNSENDABLE:
        raise ValueError(f"this write cannot be encoded, so it was never sent: {detail}")
    raise P2PStateError(f"the host refused the write: {status}: {detail}")


def _raise_denied(detail: Any, key: str | None) -> None:
    reason = detail.get("reason") if isinstance(detail, dict) else None
    if reason == "banned":
        raise BannedError("this peer's identity is banned from the session")
    if reason == "not_authorized":
        raise PermissionDeniedError("this peer is no longer authorized in the session (readmode)")
    if reason == "writemode":
        mode = detail.get("mode")
        raise PermissionDeniedError(
            f"the session's writemode is {mode}: "
            + (
                "only the admin may write"
                if mode == "admin_only"
                else "only the admin and authorized identities may write"
            )
        )
    if reason == "admin":
        op = detail.get("op")
        raise PermissionDeniedError(f"only the session's admin may make a {op!r} change")
    raise PermissionDeniedError(f"the host refused the write to {key!r}: {detail}")


_ABSENT: Any = object()
_DELETED: Any = object()


class Transaction:
    """Reads from a snapshot, buffered writes, one atomic commit. Make one
    with :meth:`SharedState.transaction`; use it as a context manager."""

    def __init__(self, state: SharedState) -> None:
        self._state = state
        self._read: dict[str, str | None] = {}  # key -> hash read, None: was absent
        self._writes: dict[str, Any] = {}
        self._done = False

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _ABSENT)
        if value is _ABSENT:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        key = check_key(key)
        if key in self._writes:
            written = self._writes[key]
            return default if written is _DELETED else fresh_copy(written)
        entry = self._state._entry(key)
        if key not in self._read:
            self._read[key] = None if entry is None else hash_value(entry.value)
        if entry is None:
            return default
        return _read(entry)

    def __contains__(self, key: str) -> bool:
        return self.get(key, _ABSENT) is not _ABSENT

    def __setitem__(self, key: str, value: Any) -> None:
        key = check_key(key)
        self._writes[key] = self._state._checked(value)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._writes[key] = _DELETED

    def commit(self) -> None:
        """Write everything, if nothing read has changed; UpdateFailedError if not."""
        if self._done:
            raise P2PStateError("this transaction is already finished")
        self._done = True
        if not self._writes:
            return
        ops = tuple(Delete(k) if v is _DELETED else Set(k, v) for k, v in self._writes.items())
        conds = tuple(IfAbsent(k) if h is None else IfHash(k, h) for k, h in self._read.items())
        outcome = self._state._send(ops, conds)
        if outcome.status in (Status.CONFLICT, Status.MISSING):
            raise UpdateFailedError("a key this transaction read changed before it committed")
        if outcome.status != Status.OK:
            _raise_for(outcome, None)

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self._done = True  # an error in the block: write nothing
