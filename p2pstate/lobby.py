"""The LAN lobby: which sessions are there, once (:func:`browse`) or live (:class:`Lobby`).

    for info in p2pstate.browse("mygame", open_slots=True, mode="ctf"):
        print(info.session, info.host_name, info.players, info.max_players)

    with p2pstate.Lobby("mygame") as lobby:   # sessions appear, change and vanish
        lobby.on_change(print)                # or: for event in lobby.poll(): ...

Every host of a session advertises it over mDNS (see ``discovery.py``); a
:class:`SessionInfo` is read from that advertisement. A node that is still
starting advertises a *candidate* record (epoch 0): it is not a session yet
and is never listed. When a session has several hosts at once (a split LAN,
or the instant of a failover), it is listed once, by the host that wins a
merge: the most players, then the highest epoch, then the lowest node id
(``core/rank.py``, the rule the hosts themselves use).

What a record's TXT properties say (players, max_players, joinable, secured,
wire, version, ``m.<name>`` metadata, modes, admin, rev) is read by
``core/advert.py``, the module that also builds them for the host: the
record's schema, both directions, in one place.

An unreadable value is logged at debug level and the default is used: what
comes from the network never raises here.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Final

from .codec import check_text
from .core.access import ANY
from .core.advert import (
    TXT_ADMIN,
    TXT_JOINABLE,
    TXT_MAX_PLAYERS,
    TXT_METADATA_PREFIX,
    TXT_PLAYERS,
    TXT_READMODE,
    TXT_REVISION,
    TXT_SECURED,
    TXT_VERSION,
    TXT_WIRE,
    TXT_WRITEMODE,
    advertised_revision,
    advertised_secured,
    advertised_wire,
    read_properties,
)
from .core.advert import access_properties as access_txt
from .core.rank import host_rank
from .messages import WIRE_VERSION

if TYPE_CHECKING:
    # The adapter is imported where it is used, so that `import p2pstate`
    # (which exports this module's names) loads neither zeroconf nor ifaddr.
    from .discovery import Discovery, HostRecord

__all__ = [
    "TXT_ADMIN",
    "TXT_JOINABLE",
    "TXT_MAX_PLAYERS",
    "TXT_METADATA_PREFIX",
    "TXT_PLAYERS",
    "TXT_READMODE",
    "TXT_REVISION",
    "TXT_SECURED",
    "TXT_VERSION",
    "TXT_WIRE",
    "TXT_WRITEMODE",
    "Lobby",
    "LobbyEvent",
    "SessionAppeared",
    "SessionChanged",
    "SessionInfo",
    "SessionVanished",
    "access_txt",
    "advertised_secured",
    "advertised_wire",
    "browse",
]

log = logging.getLogger(__name__)

# Seconds during which a record equal to one just withdrawn is a late copy.
_ECHO_S: Final = 2.0
# A Lobby's refresh listens this long, and drops a host that missed this many in a row.
_REFRESH_WINDOW: Final = 0.5
_REFRESH_MISSES: Final = 2
# Events kept for Lobby.poll(); the oldest are dropped past this.
_MAX_PENDING_EVENTS: Final = 10_000


@dataclass(frozen=True, kw_only=True)
class SessionInfo:
    """One session on the LAN, as its host advertises it."""

    app: str
    session: str
    #: The host's name (``join(..., name=...)``).
    host_name: str
    #: Members of the session, the host included.
    players: int
    #: At most this many members; None: no limit.
    max_players: int | None = None
    #: False: the host takes no one new.
    joinable: bool = True
    #: True: joining needs a secret.
    secured: bool = False
    #: False: the host runs a p2pstate whose wire format this copy cannot speak
    #: (join() would raise IncompatibleVersionError).
    compatible: bool = True
    #: The version the host advertises (its game's), if any.
    version: str | None = None
    #: The session's own small str-to-str information (map, mode, ...). Read only.
    metadata: dict[str, str] = field(default_factory=dict, hash=False)
    #: Who may join (and so read) and who may write: p2pstate.ANY,
    #: ADMIN_ONLY, AUTHORIZED_ONLY or UNBANNED_ONLY.
    readmode: str = ANY
    writemode: str = ANY
    #: The admin's identity, where the readmode is ADMIN_ONLY or
    #: AUTHORIZED_ONLY (else None: not advertised).
    admin: str | None = None
    #: The host's first endpoint, and all of them ("tcp://ip:port").
    endpoint: str
    endpoints: tuple[str, ...] = ()
    #: The host's node id, its epoch (it grows with each change of host),
    #: and the session's id.
    host_id: str
    epoch: int
    session_id: str

    @property
    def free_slots(self) -> int | None:
        """Members that may still join; None: no limit."""
        if self.max_players is None:
            return None
        return max(0, self.max_players - self.players)

    @property
    def has_room(self) -> bool:
        """Joinable and not full: what ``open_slots=True`` selects."""
        free = self.free_slots
        return self.joinable and (free is None or free > 0)


@dataclass(frozen=True, kw_only=True)
class SessionAppeared:
    """A session (matching the lobby's filters) is on the LAN."""

    info: SessionInfo


@dataclass(frozen=True, kw_only=True)
class SessionChanged:
    """A listed session changed: its players, its metadata, or its host."""

    old: SessionInfo
    new: SessionInfo


@dataclass(frozen=True, kw_only=True)
class SessionVanished:
    """A listed session is gone, or no longer matches the lobby's filters."""

    info: SessionInfo


LobbyEvent = SessionAppeared | SessionChanged | SessionVanished

_Key = tuple[str, str]  # (app, session)


# --------------------------------------------------------------------------- records


def _session_info(record: HostRecord) -> SessionInfo | None:
    """The SessionInfo a host's record advertises; None for a candidate."""
    if record.epoch <= 0 or not record.endpoints:
        return None
    where = f"{record.app}/{record.session} host {record.node_id}"
    said = read_properties(record.properties, where=where)
    return SessionInfo(
        app=record.app,
        session=record.session,
        host_name=record.host_name,
        players=said.players,
        max_players=said.max_players,
        joinable=said.joinable,
        secured=said.secured,
        compatible=said.wire == WIRE_VERSION,
        version=said.version,
        metadata=said.metadata,
        readmode=said.readmode,
        writemode=said.writemode,
        admin=said.admin,
        endpoint=record.endpoints[0],
        endpoints=record.endpoints,
        host_id=record.node_id,
        epoch=record.epoch,
        session_id=record.session_id,
    )


def _winner(a: SessionInfo, b: SessionInfo) -> SessionInfo:
    """Of two hosts of one session, the one a merge keeps, by the node's own
    rule (core/rank.py): more players, the higher epoch, the lower node id."""
    if host_rank(a.players, a.epoch, a.host_id) >= host_rank(b.players, b.epoch, b.host_id):
        return a
    return b


def _sessions(records: Iterable[HostRecord]) -> dict[_Key, SessionInfo]:
    """One SessionInfo per (app, session): its winning host's."""
    out: dict[_Key, SessionInfo] = {}
    for record in records:
        info = _session_info(record)
        if info is None:
            continue
        key = (info.app, info.session)
        known = out.get(key)
        out[key] = info if known is None else _winner(known, info)
    return out


def _revision(record: HostRecord) -> tuple[int, int]:
    """How recent a host's record is: (epoch, rev); rev is -1 when not advertised."""
    return (record.epoch, advertised_revision(record.properties))


def _newer(known: HostRecord | None, heard: HostRecord, *, first_wins: bool = False) -> HostRecord:
    """Of two records of one host, the one to believe.

    Records can arrive out of order: a responder answers a multicast query
    with the records of that moment but sends the answer up to a second or
    more later (RFC 6762 aggregation and rate limits), by when it may have
    changed them; such an answer can even carry the candidate record (epoch 0)
    of a node that hosts by now. So a record whose epoch (then ``rev``, if
    both carry one) is below the one known is ignored. Records of the same
    epoch and no ``rev`` cannot be ordered: the one heard last is believed,
    or with *first_wins* the one heard first (in a one-shot browse, the
    first answer is the direct reply to our own query, and later ones are
    more often late answers to older queries than real changes).
    """
    if known is None or known.node_id != heard.node_id:
        return heard
    old, new = _revision(known), _revision(heard)
    if new > old or (new == old and not first_wins):
        return heard
    if new < old:
        log.debug(
            "ignoring a late record of %s/%s host %s: %s after %s",
            heard.app,
            heard.session,
            heard.node_id,
            new,
            old,
        )
    return known


def _order(info: SessionInfo) -> tuple[str, str]:
    return (info.app, info.session)


# --------------------------------------------------------------------------- filters

_FIELDS: Final = frozenset(f.name for f in fields(SessionInfo))


class _Filter:
    """What browse() and Lobby select: keyword filters, checked once here."""

    def __init__(
        self,
        *,
        session: str | None,
        version: str | None,
        open_slots: bool,
        where: Callable[[SessionInfo], bool] | None,
        metadata: Mapping[str, object],
    ) -> None:
        labelled: tuple[tuple[str, object], ...] = (("session", session), ("version", version))
        for label, value in labelled:
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{label} must be a str or None, got {value!r}")
            if value is not None:
                check_text(label, value)
        if where is not None and not callable(where):
            raise TypeError(f"where must be a callable taking a SessionInfo, got {where!r}")
        checked: dict[str, str] = {}
        for key, value in metadata.items():
            if key in _FIELDS:
                raise TypeError(
                    f"{key!r} is a SessionInfo field, not metadata: filter it with "
                    f"where=lambda info: ..."
                )
            if not isinstance(value, str):
                raise TypeError(
                    f"metadata filter {key}={value!r}: metadata values are str, "
                    f"so compare with a str"
                )
            checked[key] = check_text(f"metadata filter {key}", value)
        self.session = session
        self._version = version
        self._open_slots = bool(open_slots)
        self._where = where
        self._metadata = checked

    def __call__(self, info: SessionInfo) -> bool:
        if self.session is not None and info.session != self.session:
            return False
        if self._version is not None and info.version != self._version:
            return False
        if self._open_slots and not info.has_room:
            return False
        if any(info.metadata.get(k) != v for k, v in self._metadata.items()):
            return False
        return self._where is None or bool(self._where(info))


def _check_app(app: str | None) -> None:
    if app is not None and (not isinstance(app, str) or not app):
        raise ValueError("app must be a non-empty str, or None for every app")
    if app is not None:
        check_text("app", app)


# --------------------------------------------------------------------------- browse


def browse(
    app: str | None = None,
    timeout: float = 1.0,
    *,
    session: str | None = None,
    version: str | None = None,
    open_slots: bool = False,
    where: Callable[[SessionInfo], bool] | None = None,
    limit: int | None = None,
    interfaces: Sequence[str] | None = None,
    **metadata: str,
) -> list[SessionInfo]:
    """The sessions of *app* (None: of every app) on the LAN, sorted by app and session.

    Listens *timeout* seconds for hosts, or less with *limit*: then it returns
    as soon as that many sessions match. Filters, all of which must hold:

    - ``session=``, ``version=``: equal to that;
    - ``open_slots=True``: joinable and not full (:attr:`SessionInfo.has_room`);
    - ``where=``: a callable taking a SessionInfo, true to keep it (with
      *limit*, it is also called on zeroconf's thread while listening);
    - any other keyword: that metadata key has that (str) value, e.g. ``mode="ctf"``.

    *interfaces* as for :func:`p2pstate.join` (default: the environment
    variable ``P2PSTATE_INTERFACES``, else every usable address).
    """
    _check_app(app)
    check = _Filter(
        session=session, version=version, open_slots=open_slots, where=where, metadata=metadata
    )
    _check_browse_args(timeout, limit)
    from .discovery import resolve_interfaces  # noqa: PLC0415

    enough = _enough(check, limit)
    started = time.monotonic()
    records = _browse_records(resolve_interfaces(interfaces), app, session, timeout, enough)
    found = sorted((i for i in _sessions(records.values()).values() if check(i)), key=_order)
    log.debug(
        "browse app=%s found %d session(s) in %.1f ms",
        app,
        len(found),
        (time.monotonic() - started) * 1000,
    )
    return found if limit is None else found[:limit]


def _check_browse_args(timeout: object, limit: object) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {timeout!r}")
    if not timeout > 0:
        raise ValueError("timeout must be positive")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError("limit must be a positive int or None")


def _enough(check: _Filter, limit: int | None) -> Callable[[HostRecord], bool]:
    """Whether browse() has heard *limit* matching sessions (never, without one)."""
    matched: set[_Key] = set()
    lock = threading.Lock()

    def enough(record: HostRecord) -> bool:
        # Runs on zeroconf's thread or the browsing one; a filter that raises
        # here only means "not yet": the final pass below raises it to the caller.
        info = _session_info(record)
        if info is None or limit is None:
            return False
        try:
            ok = check(info)
        except Exception:  # noqa: BLE001
            return False
        with lock:
            if ok:
                matched.add((info.app, info.session))
            return len(matched) >= limit

    return enough


def _browse_records(
    interfaces: list[str],
    app: str | None,
    session: str | None,
    timeout: float,
    stop_when: Callable[[HostRecord], bool] | None = None,
) -> dict[str, HostRecord]:
    """The hosts that answer within *timeout*, by node id, each by the record
    to believe (see _newer), from a Discovery of its own: a fresh mDNS cache
    holds only what the LAN says now. Returns early once *stop_when* is true."""
    from .discovery import Discovery  # noqa: PLC0415

    newest: dict[str, HostRecord] = {}
    lock = threading.Lock()

    def heard(record: HostRecord) -> bool:
        # Discovery.browse shows every record it hears to its `until`.
        with lock:
            record = _newer(newest.get(record.node_id), record, first_wins=True)
            newest[record.node_id] = record
        return stop_when is not None and stop_when(record)

    with Discovery(interfaces) as discovery:
        present = discovery.browse(app, session, timeout, until=heard)
    with lock:
        return {r.node_id: _newer(newest.get(r.node_id), r, first_wins=True) for r in present}


# --------------------------------------------------------------------------- Lobby

_STOP: Final = object()


class Lobby:
    """A live list of the sessions of *app* (None: every app) on the LAN.

    Takes the same filters as :func:`browse`. ``start()`` (or ``with``) begins
    listening; :attr:`sessions` is the current list; as sessions appear,
    change and vanish it reports :class:`SessionAppeared`,
    :class:`SessionChanged` and :class:`SessionVanished`, to :meth:`poll` and
    to :meth:`on_change` callbacks. Callbacks run on the lobby's own thread,
    one at a time: keep them short; they may call anything, :meth:`stop` too.

    It hears changes as hosts announce them, and every *refresh* seconds it
    also asks the LAN afresh (a short browse, as :func:`browse` does): that
    catches what a long-lived mDNS cache misses, a change back to an earlier
    record, and a host that died without a goodbye, dropped once it has
    failed to answer twice in a row (None: never ask; such a host is then
    listed until its record expires, about two minutes).

    A session whose host withdraws is reported gone only after *grace*
    seconds without another host, so that a handoff (or a takeover after a
    host timeout) reads as a change, not as a vanish and a new session.
    ``stop()`` (or leaving the ``with``) ends every thread and socket the
    lobby started.
    """

    def __init__(
        self,
        app: str | None = None,
        *,
        session: str | None = None,
        version: str | None = None,
        open_slots: bool = False,
        where: Callable[[SessionInfo], bool] | None = None,
        interfaces: Sequence[str] | None = None,
        grace: float = 1.0,
        refresh: float | None = 3.0,
        **metadata: str,
    ) -> None:
        from .discovery import resolve_interfaces  # noqa: PLC0415

        _check_app(app)
        if not grace >= 0:
            raise ValueError("grace must be zero or positive")
        if refresh is not None and not refresh >= _REFRESH_WINDOW:
            raise ValueError(f"refresh must be at least {_REFRESH_WINDOW} s, or None")
        self._app = app
        self._filter = _Filter(
            session=session, version=version, open_slots=open_slots, where=where, metadata=metadata
        )
        self._interfaces = resolve_interfaces(interfaces)
        self._grace = grace
        self._refresh = refresh
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False
        self._discovery: Discovery | None = None
        self._unwatch: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        self._inbox: queue.Queue[object] = queue.Queue()
        self._callbacks: list[Callable[[LobbyEvent], None]] = []
        self._events: deque[LobbyEvent] = deque()
        self.dropped_events = 0
        # Worker thread only. Records by node id, and the node id of each
        # service name the watch reported (its removals name only the service).
        self._records: dict[str, HostRecord] = {}
        self._names: dict[str, str] = {}
        self._misses: dict[str, int] = {}  # node id -> refreshes it did not answer
        self._gone: dict[str, tuple[HostRecord, float]] = {}  # withdrawn lately, and when
        self._listed: dict[_Key, SessionInfo] = {}
        self._vanish_at: dict[_Key, float] = {}  # listed, but its host went away
        # Read by any thread (replaced whole, under _lock).
        self._snapshot: list[SessionInfo] = []

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Lobby:
        """Begin listening (returns at once; sessions come in within about a second)."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("this Lobby was stopped; make a new one")
            if self._started:
                return self
            self._started = True
        from .discovery import Discovery  # noqa: PLC0415

        try:
            self._discovery = Discovery(self._interfaces)
            self._thread = threading.Thread(target=self._run, name="p2pstate-lobby", daemon=True)
            self._thread.start()
            self._unwatch = self._discovery.watch(self._app, self._filter.session, self._on_record)
        except BaseException:
            self.stop()
            raise
        log.debug("lobby for app=%s started on %s", self._app, self._interfaces)
        return self

    def stop(self) -> None:
        """Stop listening; no callback runs once this returns (called from
        outside a callback). Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        self._inbox.put(_STOP)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if self._discovery is not None:
            self._discovery.close()
            self._discovery = None
        log.debug("lobby for app=%s stopped", self._app)

    @property
    def running(self) -> bool:
        return self._started and not self._stopped

    def __enter__(self) -> Lobby:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped" if self._stopped else "new"
        return f"<Lobby app={self._app!r} {state} sessions={len(self._snapshot)}>"

    # ------------------------------------------------------------ reading

    @property
    def sessions(self) -> list[SessionInfo]:
        """The sessions listed now, sorted by app and session."""
        with self._lock:
            return list(self._snapshot)

    def poll(self) -> list[LobbyEvent]:
        """Every event since the last call, oldest first. Never blocks."""
        out: list[LobbyEvent] = []
        while True:
            try:
                out.append(self._events.popleft())
            except IndexError:
                return out

    def on_change(self, callback: Callable[[LobbyEvent], None]) -> Callable[[], None]:
        """Call *callback(event)* for every event. Returns a function that removes it."""
        with self._lock:
            self._callbacks.append(callback)

        def remove() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return remove

    # ------------------------------------------------------------ worker

    def _on_record(self, kind: str, record: HostRecord | None, name: str) -> None:
        # zeroconf's thread: hand over, nothing more.
        self._inbox.put((name.lower(), record))

    def _run(self) -> None:
        next_refresh = time.monotonic() + (self._refresh or 0.0)
        try:
            while True:
                deadlines = list(self._vanish_at.values())
                if self._refresh is not None:
                    deadlines.append(next_refresh)
                timeout = None
                if deadlines:
                    timeout = max(0.0, min(deadlines) - time.monotonic())
                try:
                    item = self._inbox.get(timeout=timeout)
                except queue.Empty:
                    item = None
                if item is _STOP or self._stopped:
                    return
                if isinstance(item, tuple):
                    self._heard(*item)
                if self._refresh is not None and time.monotonic() >= next_refresh:
                    self._ask_the_lan()
                    next_refresh = time.monotonic() + self._refresh
                self._expire(time.monotonic())
        except Exception:  # a bug must not pass silently; the lobby just stops changing
            log.exception("the lobby thread failed")

    def _heard(self, name: str, record: HostRecord | None) -> None:
        """What the watch reported for service *name*."""
        now = time.monotonic()
        if record is None:
            node = self._names.pop(name, None)
            if node is not None:
                self._remove(node, now)
            return
        if record.epoch == 0:
            return  # a node still starting: no session yet (its record has its own name)
        self._names[name] = record.node_id
        self._put(record, now)

    def _ask_the_lan(self) -> None:
        """Browse afresh; add or update what answers, drop what failed twice."""
        try:
            fresh = _browse_records(
                self._interfaces, self._app, self._filter.session, _REFRESH_WINDOW
            )
        except Exception:  # closing, or a network fault: try again next time
            log.debug("lobby refresh failed", exc_info=True)
            return
        if self._stopped:
            return
        now = time.monotonic()
        for node, record in fresh.items():
            self._misses.pop(node, None)
            self._put(record, now)
        for node in [n for n in self._records if n not in fresh]:
            self._misses[node] = misses = self._misses.get(node, 0) + 1
            if misses >= _REFRESH_MISSES:
                log.debug("lobby: host %s did not answer %d times; dropping it", node, misses)
                self._remove(node, now)

    def _put(self, record: HostRecord, now: float) -> None:
        node = record.node_id
        old = self._records.get(node)
        gone = self._gone.get(node)
        if old is None and gone is not None and gone[0] == record and now - gone[1] < _ECHO_S:
            # An answer queued before the goodbye and sent after it (see _newer).
            log.debug("lobby: ignoring a late copy of withdrawn host %s", node)
            return
        if old == record or _newer(old, record) is not record:
            return
        self._records[node] = record
        self._changed({(r.app, r.session) for r in (old, record) if r is not None}, now)

    def _remove(self, node: str, now: float) -> None:
        old = self._records.pop(node, None)
        self._misses.pop(node, None)
        if old is None:
            return
        for gone_node, (_, at) in list(self._gone.items()):
            if now - at > _ECHO_S:
                del self._gone[gone_node]
        self._gone[node] = (old, now)
        self._changed({(old.app, old.session)}, now)

    def _changed(self, keys: set[_Key], now: float) -> None:
        current = _sessions(r for r in self._records.values() if (r.app, r.session) in keys)
        events: list[LobbyEvent] = []
        for key in sorted(keys):
            info = current.get(key)
            if info is not None and not self._matches(info):
                info = None
            listed = self._listed.get(key)
            if info is None:
                if listed is not None and key not in self._vanish_at:
                    self._vanish_at[key] = now + self._grace
                continue
            self._vanish_at.pop(key, None)
            if listed is None:
                events.append(SessionAppeared(info=info))
            elif listed != info:
                events.append(SessionChanged(old=listed, new=info))
            else:
                continue
            self._listed[key] = info
        self._publish(events)

    def _expire(self, now: float) -> None:
        due = sorted(key for key, at in self._vanish_at.items() if at <= now)
        events: list[LobbyEvent] = []
        for key in due:
            del self._vanish_at[key]
            events.append(SessionVanished(info=self._listed.pop(key)))
        self._publish(events)

    def _matches(self, info: SessionInfo) -> bool:
        try:
            return self._filter(info)
        except Exception:
            log.exception("a lobby filter raised on %s/%s; not listing it", info.app, info.session)
            return False

    def _publish(self, events: list[LobbyEvent]) -> None:
        if not events:
            return
        with self._lock:
            self._snapshot = sorted(self._listed.values(), key=_order)
            callbacks = list(self._callbacks)
        for event in events:
            if len(self._events) >= _MAX_PENDING_EVENTS:
                self._events.popleft()
                self.dropped_events += 1
            self._events.append(event)
            for callback in callbacks:
                if self._stopped:
                    return
                try:
                    callback(event)
                except Exception:
                    log.exception("a lobby callback raised; the lobby goes on")
