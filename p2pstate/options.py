"""The options ``join`` takes, declared and checked in one place.

Each field of :class:`Options` is the one declaration of a setting: its
name, type, default (the core's own, for the settings the core reads) and
doc comment; its field metadata says how it is checked (``kind``), who uses
it (``group``: the core's Config, the session's info, its access state, or
the runtime) and the ``p2pstate`` command's flag for it, if any (``cli``).
``Options.core_config``, ``session_info`` and ``access`` are built from that
table, and tests/test_settings.py holds Config, ``set_session_info``, the
CLI and the README to it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from .codec import check_text, encode, normalize
from .core.access import MODES, Access, settings_from_wire
from .core.config import Config, Durability
from .errors import ProtocolError, ValueTooLargeError
from .messages import check_profile, session_info
from .storage import SqliteStorage, Storage

__all__ = [
    "DERIVED_CONFIG",
    "MAX_SECONDS",
    "Options",
    "check_access_settings",
    "check_count",
    "check_seconds",
    "settings",
]

# The core's and the access state's own defaults: declared there, used here.
_CONFIG = Config()
_ACCESS = Access()

#: The fields of the core's Config that are not options of the same name,
#: and where their values come from.
DERIVED_CONFIG: dict[str, str] = {
    "hello_retry": "min(0.1 s, heartbeat_interval)",
    "max_snapshot_bytes": "max_frame_size",
    "advert_room": "the runtime, from the app and session names (core/advert.py)",
    "write_retry": "the core's default",
    "leave_timeout": "the core's default",
}


def _meta(*, kind: str = "", group: str = "runtime", cli: str | None = None) -> dict[str, Any]:
    """One row of the settings table, as a field's metadata. *kind*:
    "seconds" or "count" (checked by check_seconds/check_count), "bool", or
    "" (checked by hand in __post_init__). *group*: "core" (passed to Config
    by name), "session" (the session's info), "access" (its access state) or
    "runtime". *cli*: the ``p2pstate`` command's flag for it."""
    return {"kind": kind, "group": group, "cli": cli}


@dataclass(frozen=True, kw_only=True)
class Options:
    #: Seconds between heartbeats when idle.
    heartbeat_interval: float = field(
        default=_CONFIG.heartbeat_interval, metadata=_meta(kind="seconds", group="core")
    )
    #: A host silent this long is taken for dead; the next peer takes over.
    host_timeout: float = field(
        default=_CONFIG.host_timeout, metadata=_meta(kind="seconds", group="core")
    )
    #: A peer silent this long is removed from the session by the host.
    peer_timeout: float = field(
        default=_CONFIG.peer_timeout, metadata=_meta(kind="seconds", group="core")
    )
    #: How long a copy that reaches no majority of its session (its cable is
    #: out, it was paused, the others are gone) waits before it goes on alone;
    #: None: four ``host_timeout``s. Never, with ``durability="majority"``.
    isolation_timeout: float | None = field(
        default=_CONFIG.isolation_timeout, metadata=_meta(group="core")
    )
    #: How long a peer whose link to its host was reset (the host's process
    #: died, or a blip) waits for the host to answer a probe before it takes
    #: the host for lost; None: 60 ms. A silent host is found by host_timeout.
    suspect_timeout: float | None = field(
        default=_CONFIG.suspect_timeout, metadata=_meta(group="core")
    )
    #: "default": a copy left alone goes on after ``isolation_timeout`` (the
    #: last player of a game plays on; the halves of a true split both go on,
    #: and a merge reports what it undoes). "majority": no copy hosts or
    #: acknowledges without a majority of the session, and a session that lost
    #: its majority waits for it (README, Guarantees: one gap remains).
    durability: Durability = field(default=_CONFIG.durability, metadata=_meta(group="core"))
    #: How long ``join`` listens for an existing host before hosting itself
    #: (copies starting together may wait up to twice that, or 1 s, to agree).
    discovery_window: float = field(default=0.5, metadata=_meta(kind="seconds"))
    #: While hosting, how often to ask the LAN for other hosts of the session
    #: (two halves of a healed split meet this way).
    rediscovery_interval: float = field(default=2.0, metadata=_meta(kind="seconds"))
    #: How long a blocking write waits for a host before SessionLostError.
    write_timeout: float = field(default=10.0, metadata=_meta(kind="seconds"))
    #: Largest value, in encoded bytes (see ``p2pstate.length_data``).
    max_value_size: int = field(
        default=_CONFIG.max_value_size, metadata=_meta(kind="count", group="core")
    )
    #: Largest frame accepted from the network (zmq MAXMSGSIZE).
    max_frame_size: int = field(default=16 * 1024 * 1024, metadata=_meta(kind="count"))
    #: Keep events for ``poll()``. Turn off when events are taken only through
    #: ``on_change`` or ``p2pstate.pygame``, so nothing piles up unread.
    poll_events: bool = field(default=True, metadata=_meta(kind="bool"))
    #: Events kept for ``poll()``; older ones are dropped (and counted) past this.
    max_pending_events: int = field(default=100_000, metadata=_meta(kind="count"))
    #: Most links (sockets) open at once to peers that are not members:
    #: strangers, joiners being refused, rival hosts. Members' links are kept
    #: open beyond it; others close oldest first at the cap, and when idle.
    max_links: int = field(default=256, metadata=_meta(kind="count"))
    #: Seconds a link to a non-member stays open unused.
    link_idle: float = field(default=30.0, metadata=_meta(kind="seconds"))
    #: Changes kept so a peer that reconnects can catch up without a snapshot.
    log_keep: int = field(default=_CONFIG.log_keep, metadata=_meta(kind="count", group="core"))
    #: Bytes of changes that log may hold (values counted as max_total_bytes
    #: counts them); a bigger change is not kept, and peers behind it resync.
    log_bytes: int = field(default=_CONFIG.log_bytes, metadata=_meta(kind="count", group="core"))
    #: A small dict describing this player, shown to the others in ``peers``.
    profile: dict[str, Any] = field(default_factory=dict, metadata=_meta())
    #: Settings of a session this peer creates (ignored when joining one):
    #: at most this many players; whether newcomers may join; the game's version
    #: and small str-to-str metadata, all shown in the lobby (``p2pstate.browse``).
    max_players: int | None = field(
        default=None, metadata=_meta(group="session", cli="--max-players")
    )
    joinable: bool = field(default=True, metadata=_meta(kind="bool", group="session"))
    version: str | None = field(default=None, metadata=_meta(group="session"))
    metadata: dict[str, str] = field(
        default_factory=dict, metadata=_meta(group="session", cli="--meta")
    )

    # Persistence (README: Persistence).
    #: Durable storage for the session's lasting keys: a path (an SQLite file,
    #: see SqliteStorage) or a Storage object, used as is and closed with the
    #: state. A session created with a store starts from what it holds. None:
    #: nothing outlives the session.
    store: str | os.PathLike[str] | Storage | None = field(default=None, metadata=_meta())

    # Security: the secret and this installation's identity (README: Security).
    #: The session's secret: all traffic is encrypted and authenticated
    #: (CurveZMQ), and only peers that know it can join, read or host.
    #: Never logged nor shown in repr.
    secret: str | None = field(default=None, repr=False, metadata=_meta(cli="--secret"))
    #: Where this installation's identity keypair lives (default: $P2PSTATE_HOME,
    #: else the user's config directory; see ``p2pstate.identity``).
    identity_dir: str | os.PathLike[str] | None = field(
        default=None, metadata=_meta(cli="--identity-dir")
    )

    # Security: permissions and limits (README: Security). Settings of a session
    # this peer creates, kept by every later host; ignored when joining one.
    #: Who may join (and so read): p2pstate.ANY, ADMIN_ONLY, AUTHORIZED_ONLY
    #: or UNBANNED_ONLY. The admin is the identity that created the session.
    readmode: str = field(default=_ACCESS.readmode, metadata=_meta(group="access"))
    #: Who may set, delete and send messages: one of the same modes.
    writemode: str = field(default=_ACCESS.writemode, metadata=_meta(group="access"))
    #: Most keys the session holds; a write that would add more is refused.
    max_keys: int = field(default=_ACCESS.max_keys, metadata=_meta(group="access"))
    #: Most bytes of values the session holds (see ``p2pstate.length_data``).
    max_total_bytes: int = field(default=_ACCESS.max_total_bytes, metadata=_meta(group="access"))
    #: Writes a second each peer may make, after a burst of ``write_burst``.
    write_rate: float = field(default=_ACCESS.write_rate, metadata=_meta(group="access"))
    write_burst: int = field(default=_ACCESS.write_burst, metadata=_meta(group="access"))

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> Options:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"join() got unknown option(s): {', '.join(unknown)}")
        return cls(**kwargs)

    def __post_init__(self) -> None:
        for name in _of_kind("seconds"):
            check_seconds(name, getattr(self, name))
        for name in _of_kind("count"):
            check_count(name, getattr(self, name))
        for name in _of_kind("bool"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, not {getattr(self, name)!r}")
        if self.isolation_timeout is not None:
            check_seconds("isolation_timeout", self.isolation_timeout)
        if self.suspect_timeout is not None:
            check_seconds("suspect_timeout", self.suspect_timeout)
        if self.max_frame_size < 2 * self.max_value_size:
            raise ValueError("max_frame_size must be at least twice max_value_size")
        if self.secret is not None and (not isinstance(self.secret, str) or not self.secret):
            raise ValueError("secret must be a non-empty str (or None: no secret)")
        if self.secret is not None:
            check_text("secret", self.secret)
        if self.identity_dir is not None and not isinstance(self.identity_dir, (str, os.PathLike)):
            raise TypeError("identity_dir must be a path")
        if not isinstance(self.profile, dict):
            raise TypeError("profile must be a dict")
        try:  # it travels in every Hello: what every peer can hold, or nothing
            object.__setattr__(self, "profile", normalize(self.profile))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"profile: {exc}") from None
        size = len(encode(self.profile))
        if size > self.max_value_size:  # as set_profile: one rule for the profile
            raise ValueTooLargeError(
                f"profile is {size} bytes encoded; max_value_size is {self.max_value_size}"
            )
        try:
            check_profile(self.profile)  # the bounds the host holds a Hello to
        except ProtocolError as exc:
            raise ValueError(str(exc)) from None
        self.core_config()  # validates the timing options
        if isinstance(self.store, (str, os.PathLike)):
            if not os.fspath(self.store):
                raise ValueError("store must be a path or a Storage, not an empty string")
        elif self.store is not None and not isinstance(self.store, Storage):
            raise TypeError(
                "store must be a path or a Storage (load, apply, last_seq, close), "
                f"not {type(self.store).__name__}"
            )

        check_access_settings(self.access().settings())
        try:
            session_info(self.session_info())
        except ProtocolError as exc:
            raise ValueError(str(exc)) from None

    def session_info(self) -> dict[str, Any]:
        """The settings a session created by this peer starts with."""
        info = {name: getattr(self, name) for name in settings("session")}
        info["metadata"] = dict(self.metadata)
        return info

    def access(self) -> Access:
        """The access state a session created by this peer starts with (the
        core makes its identity the admin)."""
        values = {name: getattr(self, name) for name in settings("access")}
        values["write_rate"] = float(self.write_rate)
        return Access(**values)

    def core_config(self) -> Config:
        return Config(
            **{name: getattr(self, name) for name in settings("core")},
            hello_retry=min(0.1, self.heartbeat_interval),
            max_snapshot_bytes=self.max_frame_size,
        )

    def open_store(self) -> Storage | None:
        """The store these options name, opened (None without one)."""
        if isinstance(self.store, (str, os.PathLike)):
            return SqliteStorage(self.store)
        return self.store


def settings(group: str) -> tuple[str, ...]:
    """The names of the options of *group* ("core", "session", "access",
    "runtime"), in their declared order."""
    return tuple(f.name for f in fields(Options) if f.metadata["group"] == group)


def _of_kind(kind: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields(Options) if f.metadata["kind"] == kind)


#: The longest duration the API takes, in seconds (about 115 days): longer
#: ones overflow the platform's wait (threading raises OverflowError).
MAX_SECONDS = 10_000_000.0


def check_seconds(name: str, value: object, *, zero: bool = False) -> float:
    """A duration given to the API: a number of seconds above 0 (or 0 too,
    with *zero*) and at most MAX_SECONDS. NaN would make every deadline
    compare false, so it is refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    if not (0 <= value <= MAX_SECONDS and (zero or value > 0)):
        least = "0" if zero else "above 0"
        raise ValueError(
            f"{name} must be a number of seconds from {least} to {MAX_SECONDS:,.0f}, got {value!r}"
        )
    return float(value)


def check_count(name: str, value: object) -> int:
    """A size or count given to the API: a positive int (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def check_access_settings(settings: dict[str, Any]) -> None:
    """Check modes and limits (names of ``core.access.SETTINGS``) as ``join``
    and ``SharedState.set_access`` take them; ValueError saying what is wrong."""
    for name in ("readmode", "writemode"):
        if name in settings and settings[name] not in MODES:
            raise ValueError(
                f"{name} must be one of p2pstate.ANY, ADMIN_ONLY, AUTHORIZED_ONLY, "
                f"UNBANNED_ONLY; got {settings[name]!r}"
            )
    for name in ("max_keys", "max_total_bytes", "write_burst"):
        value = settings.get(name, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    rate = settings.get("write_rate", 1.0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1e9:
        raise ValueError(f"write_rate must be writes a second above 0, got {rate!r}")
    try:
        settings_from_wire(settings)  # the wire's upper bounds too
    except ProtocolError as exc:
        raise ValueError(str(exc)) from None
