"""p2pstate: a shared dict for the copies of a program on one LAN.

    import p2pstate
    with p2pstate.join("MyName+AstroMaxBlaster") as s:
        s["score"] = 0
        s.apply_op("score", lambda v: v + 1)

The first copy to start hosts the session and advertises it over mDNS; the
others find it and join. Every peer holds a full replica, so reads are local;
writes are ordered by the host; when the host leaves or dies the next peer
takes over with no acknowledged write lost.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable
from typing import Any

from .codec import check_text, hash_value, length_data
from .core.access import ADMIN_ONLY, ANY, AUTHORIZED_ONLY, UNBANNED_ONLY
from .errors import (
    AuthenticationError,
    BackupError,
    BannedError,
    DataUnchangedError,
    IdentityError,
    IncompatibleVersionError,
    P2PStateError,
    PermissionDeniedError,
    ProtocolError,
    QuotaExceededError,
    RateLimitedError,
    SessionClosedError,
    SessionFullError,
    SessionLostError,
    StorageError,
    UpdateFailedError,
    ValueTooLargeError,
)
from .events import (
    Event,
    Expelled,
    HostChanged,
    IsolationChanged,
    KeyChanged,
    KeyDeleted,
    Message,
    Peer,
    PeerJoined,
    PeerLeft,
    PeerUpdated,
    RolledBackWrite,
    WritesRestored,
    WritesRolledBack,
)
from .lobby import Lobby, SessionInfo, browse
from .messages import MAX_NAME_BYTES
from .options import Options, check_seconds
from .state import SharedState, Transaction
from .storage import Batch, MemoryStorage, MetaStorage, SqliteStorage, Storage, StoredEntry

__all__ = [
    "ADMIN_ONLY",
    "ANY",
    "AUTHORIZED_ONLY",
    "UNBANNED_ONLY",
    "AuthenticationError",
    "BackupError",
    "BannedError",
    "Batch",
    "DataUnchangedError",
    "Event",
    "Expelled",
    "HostChanged",
    "IdentityError",
    "IncompatibleVersionError",
    "IsolationChanged",
    "KeyChanged",
    "KeyDeleted",
    "Lobby",
    "MemoryStorage",
    "Message",
    "MetaStorage",
    "Options",
    "P2PStateError",
    "Peer",
    "PeerJoined",
    "PeerLeft",
    "PeerUpdated",
    "PermissionDeniedError",
    "ProtocolError",
    "QuotaExceededError",
    "RateLimitedError",
    "RolledBackWrite",
    "SessionClosedError",
    "SessionFullError",
    "SessionInfo",
    "SessionLostError",
    "SharedState",
    "SqliteStorage",
    "Storage",
    "StorageError",
    "StoredEntry",
    "Transaction",
    "UpdateFailedError",
    "ValueTooLargeError",
    "WritesRestored",
    "WritesRolledBack",
    "__version__",
    "browse",
    "hash_value",
    "join",
    "length_data",
    "quick_join",
]

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

_MAX_NAME_BYTES = MAX_NAME_BYTES  # what a host takes in a Hello


def join(
    app: str,
    session: str = "default",
    *,
    name: str | None = None,
    timeout: float = 5.0,
    interfaces: list[str] | None = None,
    **options: Any,
) -> SharedState:
    """Join the LAN session *session* of *app*, or host it if nobody does.

    Browses mDNS for a host of that app and session for ``discovery_window``
    seconds; if one answers, connects to it and syncs a snapshot, else becomes
    the host and advertises. Copies started at the same moment settle on one
    host first (the one that would host waits up to ``max(1, 2 *
    discovery_window)`` seconds for the others it sees). Returns once the
    state is usable, or raises SessionLostError after *timeout* seconds.

    *interfaces* (or the environment variable ``P2PSTATE_INTERFACES``, comma
    separated) restricts mDNS and the sockets to those IPv4 addresses.
    Other keyword options are those of :class:`p2pstate.Options`; with
    ``secret=...`` the session is encrypted and closed to those who do not
    know it, and joining one with no or the wrong secret raises
    AuthenticationError (see the README's Security section).
    """
    # Imported here so that `import p2pstate` (and the core) never loads zmq.
    from .session import Runtime  # noqa: PLC0415

    if name is None:
        name = f"{socket.gethostname()}-{os.getpid()}"
    _check_names(app, session, name)
    check_seconds("timeout", timeout)
    opts = Options.from_kwargs(options)
    runtime = Runtime(app, session, name=name, interfaces=interfaces, options=opts)
    runtime.start(timeout)
    return SharedState(runtime)


def _check_names(app: object, session: object, name: object) -> None:
    """ValueError unless the names fit the mDNS record and every peer can read them."""
    for label, value in (("app", app), ("session", session)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{label} must be a non-empty str")
        text = check_text(label, value)
        if len(text.encode()) > 100 or "\x00" in text:
            raise ValueError(f"{label} must be at most 100 bytes with no NUL")
    if not isinstance(name, str) or len(check_text("name", name).encode()) > _MAX_NAME_BYTES:
        raise ValueError(f"name must be a str of at most {_MAX_NAME_BYTES} bytes")


def quick_join(
    app: str,
    *,
    version: str | None = None,
    metadata: dict[str, str] | None = None,
    where: Callable[[SessionInfo], bool] | None = None,
    browse_timeout: float = 1.0,
    timeout: float = 5.0,
    interfaces: list[str] | None = None,
    **options: Any,
) -> SharedState:
    """Join an open session of *app* that matches, or create one.

    Matching means: joinable and not full, secured if and only if a ``secret``
    is given, of that *version* if given, with every *metadata* key equal, and
    *where(info)* true if given. A session whose readmode is ADMIN_ONLY or
    AUTHORIZED_ONLY matches only its admin (the lobby cannot know whom the
    admin authorized: an authorized player joins such a session by name); one
    that turns this identity away (a ban) is skipped. The session
    with the most players is tried first; one that fills up meanwhile is
    skipped. With none left, a new session is made (named after a random id)
    carrying *version* and *metadata*, so the next quick_join finds it.
    Other keyword options are :func:`join`'s (``name``, ``max_players``...).
    """
    wanted = dict(metadata or {})
    # Checked before browsing: a bad option fails now, not after browse_timeout.
    name = options.get("name")
    _check_names(app, "quick", "player" if name is None else name)
    check_seconds("timeout", timeout)
    Options.from_kwargs(
        {k: v for k, v in options.items() if k != "name"} | {"version": version, "metadata": wanted}
    )
    matches = _quick_match(wanted, where, options)
    found = browse(
        app, browse_timeout, version=version, open_slots=True, where=matches, interfaces=interfaces
    )
    for info in sorted(found, key=lambda i: (-i.players, i.session)):
        try:
            return join(app, info.session, timeout=timeout, interfaces=interfaces, **options)
        except (SessionFullError, PermissionDeniedError):
            continue  # it filled up since it was advertised, or bans us: the next one
    return join(
        app,
        f"quick-{secrets.token_hex(4)}",
        timeout=timeout,
        interfaces=interfaces,
        version=version,
        metadata=wanted,
        **options,
    )


def _quick_match(
    wanted: dict[str, str], where: Callable[[SessionInfo], bool] | None, options: dict[str, Any]
) -> Callable[[SessionInfo], bool]:
    """Which advertised sessions quick_join may try (see its docstring)."""
    secured = options.get("secret") is not None
    me: list[str] = []  # this installation's identity, read once if needed

    def let_in(info: SessionInfo) -> bool:
        if info.readmode not in (ADMIN_ONLY, AUTHORIZED_ONLY):
            return True
        if not me:
            from .identity import load_identity  # noqa: PLC0415 (zmq: only when used)

            me.append(load_identity(options.get("identity_dir")).fingerprint)
        return info.admin == me[0]

    def matches(info: SessionInfo) -> bool:
        if not info.compatible:
            return False  # another p2pstate wire format: join() would refuse it
        if not let_in(info):
            return False
        if info.secured != secured:  # a secret joins only secured sessions, and vice versa
            return False
        if any(info.metadata.get(k) != v for k, v in wanted.items()):
            return False
        return where is None or where(info)

    return matches
