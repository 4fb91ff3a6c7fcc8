"""SharedState: the dict every peer of a session holds.

Reads come from the local replica (no network). Writes go to the host, which
orders them; a blocking write returns once the host and its successor hold it,
and by then the new value is readable here too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import (
    Callable,
    ItemsView,
    Iterator,
    KeysView,
    MutableMapping,
    ValuesView,
)
from typing import TYPE_CHECKING, Any

from ._state_admin import AdminAPI
from ._state_base import Listing, Snapshot, read_entry
from ._state_compat import CompareAndSwapAPI, Transaction
from .codec import check_key, check_text, encode
from .core.node import Role
from .core.ops import Delete, IfExists, Msg, Profile, Set, SetOpts
from .errors import SessionLostError, ValueTooLargeError
from .events import Event, Peer
from .messages import EPHEMERAL, MAX_PROFILE_BYTES, OWNER_ONLY
from .options import check_seconds

if TYPE_CHECKING:
    from .session import Runtime

__all__ = ["SharedState", "Transaction"]

log = logging.getLogger(__name__)


class SharedState(AdminAPI, CompareAndSwapAPI, MutableMapping[str, Any]):
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
    # attribute read, one moment) and reads only from it (StateBase._view):
    # nothing here touches the core's live state, which the I/O thread
    # changes meanwhile.

    def __getitem__(self, key: str) -> Any:
        entry = self._entry(key)
        if entry is None:
            raise KeyError(key)
        return read_entry(entry)

    def get(self, key: str, default: Any = None) -> Any:
        entry = self._entry(key)
        return default if entry is None else read_entry(entry)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._view().entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._view().entries))

    def __len__(self) -> int:
        return len(self._view().entries)

    def keys(self) -> KeysView[str]:
        entries = self._view().entries
        listing = Listing(entries)
        self._listing.current = listing
        return KeysView(listing)

    def items(self) -> ItemsView[str, Any]:
        return ItemsView(Snapshot(self._view().entries))

    def values(self) -> ValuesView[Any]:
        return ValuesView(Snapshot(self._view().entries))

    def copy(self) -> dict[str, Any]:
        """Every key and its value, as a plain dict of one moment."""
        return {key: read_entry(entry) for key, entry in self._view().entries.items()}

    def version(self, key: str) -> int:
        """The sequence number of the change that last wrote *key*."""
        entry = self._view().entries.get(check_key(key))
        if entry is None:
            raise KeyError(key)
        return entry.version

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

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every write made here (``wait=False`` ones too) is
        acknowledged: SessionLostError if that takes longer than *timeout*,
        SessionClosedError if the state closed (or its I/O thread ended) first."""
        limit = self._rt.options.write_timeout if timeout is None else timeout
        check_seconds("timeout", limit, zero=True)
        if not self._rt.flush(limit):
            raise SessionLostError(f"writes still unacknowledged after {limit} s")

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
