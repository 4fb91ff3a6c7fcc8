"""The runtime: one I/O thread per SharedState owns the sockets, the discovery
adapter and the protocol core; the user's threads talk to it through a
command queue and a wake-up socket.

Anything named ``*_io`` runs on the I/O thread only.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, TypeVar

import zmq

from .codec import encode, fresh_copy
from .core.access import AUTHORIZED_ONLY, Access
from .core.ids import identity_of
from .core.node import Node, Role
from .core.writer import Outcome
from .discovery import (
    Discovery,
    HostRecord,
    check_txt,
    is_candidate_name,
    node_label,
    resolve_interfaces,
)
from .errors import (
    AuthenticationError,
    BannedError,
    IncompatibleVersionError,
    P2PStateError,
    PermissionDeniedError,
    SessionClosedError,
    SessionFullError,
    SessionLostError,
)
from .events import Event, KeyChanged
from .identity import load_identity
from .lobby import TXT_SECURED, TXT_WIRE, access_txt, advertised_secured, advertised_wire
from .messages import WIRE_VERSION, Hello
from .options import Options
from .persist import InitialState, Persister
from .session_key import derive_session_key
from .transport import Transport

__all__ = ["Runtime"]

log = logging.getLogger(__name__)

# How long a first join waits on one host before trying another or hosting.
_JOIN_RETRY = 1.0
# Hellos a candidate keeps from the copies that chose it, until it hosts.
_MAX_DEFERRED_HELLOS = 256

_T = TypeVar("_T")


class _Pending:
    """A write the user thread waits on."""

    __slots__ = ("done", "outcome")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.outcome: Outcome | None = None


class Runtime:
    def __init__(
        self,
        app: str,
        session: str,
        *,
        name: str,
        interfaces: list[str] | None,
        options: Options,
    ) -> None:
        self.app, self.session, self.options = app, session, options
        self.identity = load_identity(options.identity_dir)
        self.node_id = self.identity.new_peer_id()
        self.secured = options.secret is not None
        session_key = (
            derive_session_key(options.secret, app, session) if options.secret is not None else None
        )
        self.addresses = resolve_interfaces(interfaces)
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.transport = Transport(
            self._ctx,
            self.node_id,
            self.addresses,
            max_frame_size=options.max_frame_size,
            session_key=session_key,
            identity=self.identity,
        )
        self.node = Node(
            node_id=self.node_id,
            name=name,
            endpoints=self.transport.endpoints,
            profile=options.profile,
            config=options.core_config(),
            joined_at=time.time(),  # shown to others only; the protocol never reads it
        )
        self.discovery = Discovery(self.addresses)
        self.stats: Counter[str] = Counter()
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self._commands: deque[Callable[[], None]] = deque()
        self._wake_addr = f"inproc://p2pstate-wake-{self.node_id}"
        self._wake_in: zmq.Socket[bytes] = self._ctx.socket(zmq.PULL)
        self._wake_in.bind(self._wake_addr)
        self._wake_out: zmq.Socket[bytes] = self._ctx.socket(zmq.PUSH)
        self._wake_out.connect(self._wake_addr)
        self._wake_lock = threading.Lock()
        self._wake_pending = False
        self._pending: dict[int, _Pending] = {}
        self._waiters: list[tuple[Callable[[], bool], threading.Event]] = []
        # Non-blocking sets, per key: the request on its way, and the newest waiting.
        self._latest_in_flight: dict[str, int] = {}
        self._latest_by_req: dict[int, str] = {}
        self._latest_waiting: dict[str, tuple[tuple[Any, ...], ...]] = {}
        self._events: deque[Event] = deque()
        self.poll_events = options.poll_events
        self._callbacks: list[Callable[[Event], None]] = []
        self._hosts: dict[tuple[str, bool], HostRecord] = {}
        self._hosts_lock = threading.Lock()
        self._tried: set[str] = set()
        # Hosts a first join found but could not talk to (no common secret, or
        # another wire format), and the error that says why; with nobody else
        # to try, join() raises it rather than host a rival session.
        self._unauthenticated: dict[str, P2PStateError] = {}
        # ... and first, until when it waits for others to appear.
        self._others_until: float | None = None
        # Copies starting at the same time (see start()): the other candidates
        # this one has seen (kept by _remember, under _hosts_lock; one stays a
        # rival after its record goes, as a candidate's record goes when it
        # hosts, maybe before its host record arrives), the Hellos of those
        # that chose it as their host, and until when it waits for the rest
        # before it hosts anyway.
        self._candidates_seen: set[str] = set()
        self._deferred: dict[str, tuple[Hello, float]] = {}  # sender -> (Hello, when)
        self._rivals_until: float | None = None
        self._join_patience = _JOIN_RETRY
        self._start_deadline = float("inf")  # when start() gives up
        self.join_failure: P2PStateError | None = None
        self._join_at = 0.0
        # (epoch, players) in our record
        self._advertised: tuple[int, int] | None = None
        self._info: dict[str, Any] | None = None  # the settings in our record
        self._modes: dict[str, str] = {}  # the access TXT properties in our record
        self._rev = 0
        self._closing = False
        self._unwatch: Callable[[], None] | None = None
        # persistence (issue 8): opened by start(), closed by the I/O thread's end
        self._persister: Persister | None = None
        self._initial: tuple[InitialState, int] = ((), 0)
        self._thread = threading.Thread(
            target=self._run_io, name=f"p2pstate-io-{self.node_id}", daemon=True
        )
        self._rediscovery = threading.Thread(
            target=self._rediscover, name=f"p2pstate-mdns-{self.node_id}", daemon=True
        )

    # ================================================================ user side

    def start(self, timeout: float) -> None:
        """Find a host or become one; return once the state is usable.

        While it looks, this node advertises itself as a *candidate* (epoch 0),
        as mDNS hosts probe a name before claiming it: copies started at the
        same instant see each other's candidate records, and only the lowest
        node id hosts, so they never make two sessions to merge later."""
        deadline = time.monotonic() + timeout
        self._start_deadline = deadline
        try:
            # The settings this peer would advertise, and any modes: a record
            # too big for mDNS is the caller's ValueError, not a dead I/O thread.
            self.check_session_info(self.options.session_info())
            self._open_store()
            self._advertise_io(epoch=0)
            found = self.discovery.browse(
                self.app,
                self.session,
                min(self.options.discovery_window, timeout),
                until=lambda record: record.epoch > 0,  # a real host: join it now
            )
            self._unwatch = self.discovery.watch(self.app, self.session, self._on_record)
        except Exception:
            self._shutdown_unstarted()
            raise
        for record in found:
            self._remember(record)
        self._thread.start()
        self._rediscovery.start()
        # A game that exits without close() still hands over instead of
        # leaving its peers to time it out.
        atexit.register(self.close)
        self.call(lambda: self._begin_io(time.monotonic()))
        node = self.node
        if not self.wait_for_io(
            lambda: node.ready or node.refused is not None or self.join_failure is not None,
            max(0.0, deadline - time.monotonic()),
        ):
            self.close(timeout=0.5)
            raise SessionLostError(
                f"could not join or host session {self.session!r} of {self.app!r} "
                f"within {timeout} s"
            )
        if self.join_failure is not None:
            error = self.join_failure
            self.close(timeout=0.5)
            raise error
        if self.node.refused is not None:
            reason = self.node.refused
            self.close(timeout=0.5)
            if reason in ("banned", "not_authorized"):
                raise _access_error(reason, self.session, self.node_id)
            raise SessionFullError(
                f"session {self.session!r} of {self.app!r} is "
                + ("full" if reason == "full" else "not taking new players")
            )

    def _open_store(self) -> None:
        store = self.options.open_store()
        if store is None:
            return
        self._persister = Persister(store)
        self._initial = self._persister.initial(time.time())

    def _close_store(self) -> None:
        persister, self._persister = self._persister, None
        if persister is not None:
            try:
                persister.close()
            except Exception:  # closing must finish
                log.exception("closing the store failed")

    def run_on_io(self, fn: Callable[[], _T], timeout: float) -> _T:
        """Run *fn* on the I/O thread and return what it returns (it must not
        raise: it reads the core's state at one point between two steps)."""
        done = threading.Event()
        box: list[_T] = []

        def command() -> None:
            box.append(fn())
            done.set()

        self.call(command)
        if not done.wait(timeout) or not box:
            raise SessionClosedError("the shared state closed before it could answer")
        return box[0]

    def call(self, command: Callable[[], None]) -> None:
        """Run *command* on the I/O thread, soon."""
        if self.stopped.is_set():
            raise SessionClosedError("this shared state is closed")
        self._commands.append(command)
        # One wake-up in flight is enough: the I/O thread clears the flag before
        # it runs the queue, so a command queued after that sends a new one.
        if not self._wake_pending:
            self._wake_pending = True
            with self._wake_lock, contextlib.suppress(zmq.Again):
                self._wake_out.send(b"", zmq.NOBLOCK)

    def submit(
        self, ops: tuple[tuple[Any, ...], ...], conds: tuple[tuple[Any, ...], ...], *, wait: bool
    ) -> _Pending | None:
        self.check_expelled()
        pending = _Pending() if wait else None
        if not wait and len(ops) == 1 and ops[0][0] == "set" and not conds:
            self.call(functools.partial(self._set_latest_io, ops[0][1], ops))
            return None

        def submit_io() -> None:
            # Everything written before this goes first, coalesced or not.
            self._release_latest_io()
            if self._unsendable_io(ops, conds, pending):
                return
            try:
                req = self.node.submit(ops, conds, now=time.monotonic())
            except RuntimeError:
                if pending is not None:
                    pending.done.set()  # closing: outcome None means lost
                return
            if pending is not None:
                self._pending[req] = pending

        self.call(submit_io)
        return pending

    def _set_latest_io(self, key: str, ops: tuple[tuple[Any, ...], ...]) -> None:
        """A non-blocking set: latest wins. While one write of *key* is on its
        way, a newer one waits, replacing any older one still waiting, so a
        game writing its position every frame never piles up a backlog."""
        if key in self._latest_in_flight:
            if key in self._latest_waiting:
                self.stats["coalesced_writes"] += 1
            self._latest_waiting[key] = ops
            return
        self._submit_latest_io(key, ops)

    def _submit_latest_io(self, key: str, ops: tuple[tuple[Any, ...], ...]) -> None:
        if self._unsendable_io(ops, (), None):
            return
        try:
            req = self.node.submit(ops, (), now=time.monotonic())
        except RuntimeError:
            return  # closing
        self._latest_in_flight[key] = req
        self._latest_by_req[req] = key

    def _release_latest_io(self) -> None:
        waiting, self._latest_waiting = self._latest_waiting, {}
        for key, ops in waiting.items():
            self._submit_latest_io(key, ops)

    def _latest_done_io(self, req: int) -> None:
        key = self._latest_by_req.pop(req, None)
        if key is None or self._latest_in_flight.get(key) != req:
            return
        del self._latest_in_flight[key]
        ops = self._latest_waiting.pop(key, None)
        if ops is not None:
            self._submit_latest_io(key, ops)

    def _unsendable_io(
        self,
        ops: tuple[tuple[Any, ...], ...],
        conds: tuple[tuple[Any, ...], ...],
        pending: _Pending | None,
    ) -> bool:
        """True if this write cannot be encoded, and then fail it alone, now.
        The API's checks should make this impossible; but a write the core
        took and could never send would stay first in line, resent forever,
        and hold back every later write of this peer."""
        try:
            encode((ops, conds))
        except Exception as exc:  # noqa: BLE001 (msgpack: TypeError, OverflowError, UnicodeError...)
            self.stats["unsendable_writes"] += 1
            level = logging.ERROR if self.stats["unsendable_writes"] == 1 else logging.DEBUG
            log.log(level, "a write that cannot be encoded failed alone: %s", exc)
            if pending is not None:
                detail = f"{type(exc).__name__}: {exc}"
                pending.outcome = Outcome(req=0, status="unsendable", detail=detail, seq=0)
                pending.done.set()
            return True
        return False

    def check_expelled(self) -> None:
        """Raise BannedError (or PermissionDeniedError) once the session
        removed this peer for good."""
        reason = self.node.refused
        if reason in ("banned", "not_authorized") and self.node.ready:
            raise _access_error(reason, self.session, self.node_id)

    def wait(self, pending: _Pending, timeout: float) -> Outcome:
        if not pending.done.wait(timeout):
            raise SessionLostError(f"no host answered within {timeout} s")
        if pending.outcome is None:
            self.check_expelled()
            raise SessionClosedError("the shared state was closed before the write completed")
        return pending.outcome

    def flush(self, timeout: float) -> bool:
        """Wait until every write of ours has its answer; False on timeout."""
        self.check_expelled()
        return self._writes_answered(timeout)

    def _writes_answered(self, timeout: float) -> bool:
        return self.wait_for_io(
            lambda: not self.node.writer.pending and not self._latest_waiting, timeout
        )

    def wait_for_io(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until *predicate*, checked on the I/O thread after each step, holds."""
        done = threading.Event()
        try:
            self.call(lambda: self._waiters.append((predicate, done)))
        except SessionClosedError:
            return True
        return done.wait(timeout)

    def check_session_info(self, info: dict[str, Any]) -> None:
        """Raise ValueError if the session's settings would not fit its mDNS record."""
        merged = {**self.node.replica.info, **info}
        check_txt(
            app=self.app,
            session=self.session,
            node_id=self.node_id,
            host_name=self.node.me.name,
            session_id=self.node.replica.session_id,
            # The longest modes and an admin: a later set_access fits too.
            properties={
                **self._txt_properties(merged, 10_000, _WIDEST_ACCESS),
                "rev": "9" * 9,
            },
        )

    def poll(self) -> list[Event]:
        out: list[Event] = []
        while True:
            try:
                out.append(self._events.popleft())
            except IndexError:
                return out

    def on_change(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def close(self, timeout: float = 2.0) -> None:
        """Flush our writes, leave (a host hands over), release everything.

        Also after the I/O thread ended on its own (a store that failed, a
        bug): its sockets, mDNS and threads are released here all the same."""
        if self._closing:
            return
        self._closing = True
        atexit.unregister(self.close)
        if self._thread.is_alive():
            if self.ready.is_set():
                self._writes_answered(timeout / 2)
            self.call(lambda: self.node.leave(time.monotonic()))
            self.wait_for_io(lambda: self.node.role is Role.CLOSED, timeout)
            self.stopped.set()
            with self._wake_lock, contextlib.suppress(zmq.Again):
                self._wake_out.send(b"", zmq.NOBLOCK)
            self._thread.join(timeout + 1.0)
        else:
            self.stopped.set()
        if self._rediscovery.is_alive():
            self._rediscovery.join(2.0)
        self._shutdown_unstarted()

    def _shutdown_unstarted(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        self.discovery.close()
        if not self._thread.is_alive():
            self._close_store()
        for pending in self._pending.values():
            pending.done.set()
        self._pending.clear()
        with self._wake_lock:
            self._wake_out.close(linger=0)
        self._wake_in.close(linger=0)
        self.transport.close_io()
        self._ctx.term()

    # ================================================================ discovery

    def _on_record(self, kind: str, record: HostRecord | None, name: str) -> None:
        """Zeroconf's thread: keep the host list, and let a host meet its rivals."""
        if record is None:
            candidate = is_candidate_name(name)
            with self._hosts_lock:
                for key, known in list(self._hosts.items()):
                    if _service_name_matches(name, known) and (known.epoch == 0) == candidate:
                        del self._hosts[key]
            return
        if record.node_id == self.node_id:
            return
        self._remember(record)
        if not self.stopped.is_set():
            with contextlib.suppress(SessionClosedError):
                self.call(lambda: self._observe_io(record))

    def _remember(self, record: HostRecord) -> None:
        # A node's candidate record and its host record are two adverts.
        if record.node_id != self.node_id:
            rival = record.epoch == 0 and not self.node.ready and self._can_talk(record)
            with self._hosts_lock:
                self._hosts[(record.node_id, record.epoch > 0)] = record
                if rival:
                    self._candidates_seen.add(record.node_id)

    def _observe_io(self, record: HostRecord) -> None:
        if not self._can_talk(record):
            return
        self.node.observe_host(record.node_id, record.endpoints, record.epoch, time.monotonic())

    def _can_talk(self, record: HostRecord) -> bool:
        # An open and a secured session of one name can't talk, let alone
        # merge; nor can two wire formats.
        return (
            advertised_secured(record.properties) == self.secured
            and advertised_wire(record.properties) == WIRE_VERSION
        )

    def _unheard_rivals_io(self) -> set[str]:
        """The other candidates seen that neither chose us (their Hello) nor
        were tried by us: any of them may not have seen us, and host."""
        with self._hosts_lock:
            seen = set(self._candidates_seen)
        return seen - self._deferred.keys() - self._tried

    def _choose(self) -> HostRecord | None:
        """Whom a first join asks: the host that would win a merge; with no
        host yet, the candidate with the lowest node id (None: that is us)."""
        with self._hosts_lock:
            records = [r for r in self._hosts.values() if r.node_id not in self._tried]
        hosts = [r for r in records if r.epoch > 0]
        if hosts:
            # The host that would win a merge (as Node.rank): most players,
            # then the highest epoch, then the lowest node id.
            return max(hosts, key=lambda r: (_players(r), r.epoch, [-ord(c) for c in r.node_id]))
        lower = [r for r in records if r.node_id < self.node_id]
        return min(lower, key=lambda r: r.node_id, default=None)

    def _rediscover(self) -> None:
        """While we host, ask the LAN for hosts of our session every few
        seconds: after a split heals, zeroconf's own browser would not ask
        again for minutes, and the two hosts must meet to merge."""
        interval = self.options.rediscovery_interval
        while not self.stopped.wait(interval):
            if self.node.role is not Role.HOST:
                continue
            try:
                records = self.discovery.browse(self.app, self.session, 0.25)
            except Exception:  # closing, or a network fault: try later
                log.debug("rediscovery failed", exc_info=True)
                continue
            for record in records:
                if record.node_id != self.node_id and record.epoch > 0:
                    self._remember(record)
                    with contextlib.suppress(SessionClosedError):
                        self.call(functools.partial(self._observe_io, record))

    # ================================================================ I/O thread

    def _begin_io(self, now: float) -> None:
        self._join_at = now
        while (record := self._choose()) is not None:
            self._tried.add(record.node_id)
            secured = advertised_secured(record.properties)
            wire = advertised_wire(record.properties)
            where = f"could not join session {self.session!r} of {self.app!r}"
            if wire != WIRE_VERSION:
                # The other side could not decode a word we say, nor we its.
                self._unauthenticated[record.node_id] = IncompatibleVersionError(
                    f"{where}: its host speaks p2pstate wire format "
                    f"{wire if wire is not None else 'of a version before 0.2'}, this copy "
                    f"speaks {WIRE_VERSION}; run the same p2pstate version everywhere"
                )
            elif secured == self.secured:
                self._others_until = self._rivals_until = None
                self._deferred.clear()  # those copies will find our host
                self._join_patience = self._patience_with(record, now)
                self.node.join(record.node_id, record.endpoints, now)
                return
            else:
                # CURVE and plaintext cannot talk: don't even try.
                self._unauthenticated[record.node_id] = AuthenticationError(
                    f"{where}: it is secured: join it with the session's secret (secret=...)"
                    if secured
                    else f"{where}: it has no secret, and one was given: join it without "
                    "secret=, or use another session name"
                )
        if self._unauthenticated:
            # Browsing stops at the first host found: give the others (a rogue
            # may advertise a better rank than the real host) time to appear.
            if self._others_until is None:
                self._others_until = now + self.options.discovery_window
            if now < self._others_until:
                return
            # Someone holds this session and we can't talk to them: hosting a
            # second one of the same name would only split the players.
            self.join_failure = next(iter(self._unauthenticated.values()))
            return
        if self._unheard_rivals_io():
            # We would host, but a copy we saw may not have seen us and host
            # too, and merging two fresh sessions rolls back acknowledged
            # writes: wait until each chose us, or hosts, or we waited enough.
            if self._rivals_until is None:
                self._rivals_until = now + self._rival_wait()
            if now < self._rivals_until:
                return
            self.stats["hosted_without_rivals"] += 1
            log.info(
                "hosting session %r of %r: %d other starting copies did not answer",
                self.session,
                self.app,
                len(self._unheard_rivals_io()),
            )
        self._rivals_until = None
        initial, initial_seq = self._initial
        stored_access = self._stored_access_io()
        if self.join_failure is not None:
            return
        self.node.start_host(
            secrets.token_hex(8),
            now,
            self.options.session_info(),
            self.options.access(),
            initial=initial,
            initial_seq=initial_seq,
            stored_access=stored_access,
        )
        self._initial = ((), 0)
        if self._persister is not None:
            self._persister.started(self.node.replica)
        # Welcome the copies that chose us while we waited, without making
        # them wait for their next Hello.
        # them wait for their next Hello. Only those still asking: a copy
        # repeats its Hello every hello_retry, and one that stopped (gone,
        # or joined elsewhere) must not become a member, let alone successor.
        deferred, self._deferred = self._deferred, {}
        fresh = now - 3 * self.node.config.hello_retry
        for hello, received in deferred.values():
            if received >= fresh:
                try:
                    self.node.receive(hello, now)
                except Exception:  # noqa: BLE001 (as in _run_io: drop it, go on)
                    self._internal_error_io(hello)

    def _rival_wait(self) -> float:
        """How long a candidate that would host waits for the others it saw."""
        return max(1.0, 2 * self.options.discovery_window)

    def _patience_with(self, record: HostRecord, now: float) -> float:
        """How long a first join waits for *record* to answer before trying
        another: a candidate may itself wait ``_rival_wait`` before hosting,
        but a silent one (killed while starting) must leave us time to host
        before start() gives up."""
        if record.epoch > 0:
            return _JOIN_RETRY
        left = self._start_deadline - now
        return min(_JOIN_RETRY + self._rival_wait(), max(_JOIN_RETRY, left / 2))

    def _starting(self) -> bool:
        """Looking for a host, or the first one: a Hello here is a copy that
        started with us and chose us (the core would drop it)."""
        node = self.node
        return not node.ready and node.role in (Role.IDLE, Role.JOINING)

    def _candidate_hello_io(self, msg: Hello, now: float) -> None:
        """A Hello while we look for a session: a copy that started with us
        chose us. Keep it until we host, and host as soon as no one is left
        to wait for."""
        if msg.sender not in self._deferred and len(self._deferred) >= _MAX_DEFERRED_HELLOS:
            self.stats["dropped: Hello to a candidate"] += 1
            return
        self._deferred[msg.sender] = (msg, now)
        if self._rivals_until is not None and not self._unheard_rivals_io():
            self._begin_io(now)

    def _stored_access_io(self) -> Access | None:
        """The access state of the store this session is created from: it is
        the session's (its admin, lists, modes and limits), so it wins over
        this peer's options. Sets ``join_failure`` if it refuses this peer."""
        stored = self._persister.stored_access if self._persister is not None else None
        if stored is None:
            return None
        identity = identity_of(self.node_id)
        if not stored.may_read(identity):
            reason = stored.refusal(identity)
            self.join_failure = _access_error(reason, self.session, self.node_id)
            return None
        if stored.settings() != self.options.access().settings():
            log.info(
                "session %r starts with its store's modes and limits %s; join()'s are unused",
                self.session,
                stored.settings(),
            )
        return stored

    def _handshake_failed_io(self, node_id: str, now: float) -> None:
        """A CURVE handshake with *node_id* failed: one of us lacks the secret."""
        self.transport.forget_io(node_id)  # stop its reconnect loop
        node = self.node
        if not node.ready and node.role is Role.JOINING and node.target_id == node_id:
            self._unauthenticated[node_id] = AuthenticationError(
                f"could not join session {self.session!r} of {self.app!r}: its host did not "
                "accept our secret (a wrong secret, or a host that does not know it)"
            )
            self._begin_io(now)
            return
        self.stats["unauthenticated_nodes"] += 1
        level = logging.WARNING if self.stats["unauthenticated_nodes"] == 1 else logging.DEBUG
        log.log(level, "node %s failed the handshake: it does not know the secret", node_id)

    def _retry_join_io(self, now: float) -> None:
        """A first join that got no welcome: another host, or host ourselves."""
        if self.node.ready or self.join_failure:
            # Its waits are over (left set, _run_io would never sleep again).
            self._others_until = self._rivals_until = None
            self._deferred.clear()
            return
        if self._others_until is not None:  # see _begin_io
            if now >= self._others_until or self._choose() is not None:
                self._begin_io(now)
            return
        if self._rivals_until is not None:  # see _begin_io
            if (
                now >= self._rivals_until
                or self._choose() is not None
                or not self._unheard_rivals_io()
            ):
                self._begin_io(now)
            return
        if self.node.role is not Role.JOINING:
            return
        if now - self._join_at < self._join_patience:
            return
        self.stats["join_retries"] += 1
        self._begin_io(now)

    def _run_io(self) -> None:
        poller = zmq.Poller()
        poller.register(self.transport.router, zmq.POLLIN)
        poller.register(self._wake_in, zmq.POLLIN)
        zap = self.transport.zap
        if zap is not None:
            poller.register(zap, zmq.POLLIN)
        node = self.node
        try:
            while not self.stopped.is_set():
                now = time.monotonic()
                deadline = node.next_deadline(now)
                if not node.ready:
                    if self._others_until is not None:  # a join waiting for other hosts
                        deadline = min(deadline, self._others_until)
                    if self._rivals_until is not None:  # a candidate waiting for others
                        deadline = min(deadline, self._rivals_until)
                wait_ms = max(0, int((deadline - now) * 1000))
                ready = dict(poller.poll(wait_ms))
                if self._wake_in in ready:
                    self._drain_wake_io()
                    self._wake_pending = False
                self._run_commands_io()
                if zap is not None:
                    self._secure_io(zap in ready, time.monotonic())
                if self.transport.router in ready:
                    now = time.monotonic()
                    # Handle all that arrived, then send once: the successor
                    # acknowledges a batch of changes with one Ack.
                    for msg in self.transport.receive_io():
                        try:
                            if isinstance(msg, Hello) and self._starting():
                                self._candidate_hello_io(msg, now)
                            else:
                                node.receive(msg, now)
                        except Exception:  # noqa: BLE001 (one message must not end the session)
                            self._internal_error_io(msg)
                    self._flush_io()
                now = time.monotonic()
                node.tick(now)
                self._retry_join_io(now)
                self._flush_io()
                self.transport.flush_io()  # one frame per peer for this whole pass
        except Exception:  # a bug must not leave user threads waiting forever
            log.exception("p2pstate I/O thread failed")
            self.stopped.set()
        finally:
            self._finish_io()

    def _secure_io(self, zap_ready: bool, now: float) -> None:
        if zap_ready:
            self.transport.serve_zap_io()
        for node_id in self.transport.handshake_failures_io():
            self._handshake_failed_io(node_id, now)

    def _internal_error_io(self, msg: object) -> None:
        """A message made the core or an adapter raise: a bug, or input we did
        not foresee. Drop it and go on serving; say so loudly once."""
        self.stats["internal_errors"] += 1
        level = logging.ERROR if self.stats["internal_errors"] == 1 else logging.DEBUG
        log.log(level, "dropped a message that raised: %.200r", msg, exc_info=True)

    def _drain_wake_io(self) -> None:
        while True:
            try:
                self._wake_in.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def _run_commands_io(self) -> None:
        for _ in range(len(self._commands)):
            command = self._commands.popleft()
            try:
                command()
            except Exception:  # noqa: BLE001 (as for a message: drop it, go on serving)
                self._internal_error_io(command)
            self._flush_io()

    def _flush_io(self) -> None:
        node = self.node
        # Durable before anything leaves: no Result or Ack for a change that is
        # not stored. A store that fails raises, which ends this peer (the
        # others take over) rather than acknowledge unsaved writes.
        if self._persister is not None and self._persister.persist(node, time.time()):
            self.stats["store_batches"] += 1
        for send in node.take_outbox():
            try:
                self.transport.send_io(send)
            except Exception:  # noqa: BLE001 (endpoints come from the network: drop that send)
                self._internal_error_io(send)
        for outcome in node.take_outcomes():
            if self._latest_by_req:
                self._latest_done_io(outcome.req)
            pending = self._pending.pop(outcome.req, None)
            if pending is not None:
                pending.outcome = outcome
                pending.done.set()
        for event in node.take_events():
            self._emit_io(event)
        if node.ready and not self.ready.is_set():
            self.ready.set()
            self._initial = ((), 0)  # a joiner took the session's state instead
        if self._waiters:
            for waiter in [w for w in self._waiters if w[0]()]:
                self._waiters.remove(waiter)
                waiter[1].set()
        self._sync_advert_io()

    def _emit_io(self, event: Event) -> None:
        if isinstance(event, KeyChanged) and isinstance(event.value, (list, dict)):
            # The replica holds this object: hand out a copy nobody else shares.
            event = KeyChanged(key=event.key, value=fresh_copy(event.value), version=event.version)
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:
                log.exception("an on_change callback raised; the session goes on")
        if not self.poll_events:
            return
        if len(self._events) >= self.options.max_pending_events:
            self._events.popleft()
            self.stats["events_dropped"] += 1
            if self.stats["events_dropped"] == 1:
                log.warning("poll() is not keeping up; dropping the oldest events")
        self._events.append(event)

    def _sync_advert_io(self) -> None:
        """Advertise while we host; keep the record's epoch and player count
        current; withdraw the record once we follow another host."""
        node = self.node
        if node.role is Role.HOST:
            players = len(node.replica.members)
            # The replica replaces its info dict on every change: identity says it all.
            if (
                (node.epoch, players) != self._advertised
                or node.replica.info is not self._info
                or access_txt(node.replica.access) != self._modes
            ):
                self._advertise_io(epoch=node.epoch, players=players)
        elif self._advertised is not None and node.ready:
            self.discovery.withdraw()
            self._advertised = None

    def _advertise_io(self, *, epoch: int, players: int = 1) -> None:
        port = int(self.transport.endpoints[0].rsplit(":", 1)[1])
        properties = self._txt_properties(self.node.replica.info, players)
        # mDNS can deliver an answer built before our last change: readers
        # order our records by (epoch, rev) and keep the newest.
        self._rev += 1
        properties["rev"] = str(self._rev)
        if self._advertised is None or self._advertised[0] == 0:
            # New, or a candidate turning host: register the full record again.
            self.discovery.advertise(
                app=self.app,
                session=self.session,
                node_id=self.node_id,
                host_name=self.node.me.name,
                port=port,
                addresses=self.addresses,
                epoch=epoch,
                session_id=self.node.replica.session_id or "-",
                properties=properties,
            )
        else:
            self.discovery.update(epoch=epoch, properties=properties)
        self._advertised, self._info = (epoch, players), self.node.replica.info
        self._modes = access_txt(self.node.replica.access)

    def _txt_properties(
        self, info: dict[str, Any], players: int, access: Access | None = None
    ) -> dict[str, str]:
        properties = txt_properties(info, players)
        properties.update(access_txt(access or self.node.replica.access))
        properties[TXT_WIRE] = str(WIRE_VERSION)
        if self.secured:
            properties[TXT_SECURED] = "1"  # the lobby shows it; joiners without a secret stop
        return properties

    def _finish_io(self) -> None:
        self.transport.flush_io()
        self._close_store()  # the I/O thread was its last user
        if self._advertised is not None:
            try:
                self.discovery.withdraw()
            except Exception:  # closing must finish
                log.debug("withdraw failed while closing", exc_info=True)
            self._advertised = None
        self.stopped.set()
        for pending in self._pending.values():
            pending.done.set()
        for _, done in self._waiters:
            done.set()


_WIDEST_ACCESS = Access(admin="f" * 16, readmode=AUTHORIZED_ONLY, writemode=AUTHORIZED_ONLY)


def _access_error(reason: str, session: str, node_id: str) -> PermissionDeniedError:
    identity = identity_of(node_id)
    if reason == "banned":
        return BannedError(f"the admin of session {session!r} banned this identity ({identity})")
    return PermissionDeniedError(
        f"session {session!r} lets only identities its admin authorized in (readmode); "
        f"ask the admin to authorize {identity}"
    )


def txt_properties(info: dict[str, Any], players: int) -> dict[str, str]:
    """The session's settings as the TXT properties the lobby reads (see lobby.py)."""
    properties = {"players": str(players)}
    if info.get("max_players") is not None:
        properties["max_players"] = str(info["max_players"])
    if info.get("joinable") is False:
        properties["joinable"] = "0"
    if info.get("version") is not None:
        properties["version"] = str(info["version"])
    for key, value in (info.get("metadata") or {}).items():
        properties[f"m.{key}"] = value
    return properties


def _players(record: HostRecord) -> int:
    try:
        return int(record.properties.get("players", "1"))
    except ValueError:
        return 1


def _service_name_matches(name: str, record: HostRecord) -> bool:
    return node_label(record.node_id) in name
