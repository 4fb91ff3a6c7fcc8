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
from dataclasses import replace
from typing import Any, TypeVar

import zmq

from ._dispatch import Dispatcher
from ._view import View, ViewPublisher
from .codec import encode, fresh_copy
from .core.access import AUTHORIZED_ONLY, Access
from .core.advert import MAX_TXT_TOTAL_BYTES, info_fault, info_properties, txt_bytes
from .core.ids import identity_of
from .core.node import Node, Role
from .core.startup import Advert, Decision, Fail, Host, Join, Reason, Startup
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
from .messages import MAX_NAME_BYTES, WIRE_VERSION, Hello
from .options import Options
from .persist import InitialState, Persister
from .session_key import derive_session_key
from .transport import Transport

__all__ = ["Runtime"]

log = logging.getLogger(__name__)

# Events waiting for slow on_change callbacks before the oldest are dropped
# (max_pending_events bounds poll()'s buffer, and may be set far lower).
_MAX_CALLBACK_BACKLOG = 100_000

_T = TypeVar("_T")


class _Pending:
    """A write the user thread waits on."""

    __slots__ = ("done", "outcome")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.outcome: Outcome | None = None


class _Waiter:
    """A user thread waiting for a condition the I/O thread checks."""

    __slots__ = ("armed", "done", "held", "predicate")

    def __init__(self, predicate: Callable[[], bool]) -> None:
        self.predicate = predicate
        self.done = threading.Event()
        self.held = False  # done without held: the session ended first
        # Set by a command, so it is checked only after every command queued
        # before it ran (a flush() after writes waits for those writes).
        self.armed = False


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
            max_links=options.max_links,
            link_idle=options.link_idle,
        )
        self.node = Node(
            node_id=self.node_id,
            name=name,
            endpoints=self.transport.endpoints,
            profile=options.profile,
            config=replace(options.core_config(), advert_room=self._advert_room()),
            joined_at=time.time(),  # shown to others only; the protocol never reads it
        )
        self.discovery = Discovery(self.addresses)
        self.stats: Counter[str] = Counter()  # counted on the I/O thread only
        # Counted by user threads (see count()), merged when stats are read.
        self._user_stats: Counter[str] = Counter()
        self._user_stats_lock = threading.Lock()
        # What user threads read: republished by the I/O thread (see _flush_io).
        self._views = ViewPublisher(self.node)
        self.view: View = self._views.view
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
        self._wake_closed = False  # under _wake_lock
        self._pending: dict[int, _Pending] = {}
        # Registered by user threads, checked by the I/O thread after each
        # step, all let go when it ends (closed set then, all under the lock).
        self._waiters: list[_Waiter] = []
        self._waiters_lock = threading.Lock()
        self._waiters_closed = False
        # Non-blocking sets, per key: the request on its way, and the newest waiting.
        self._latest_in_flight: dict[str, int] = {}
        self._latest_by_req: dict[int, tuple[str, ...]] = {}
        self._latest_waiting: dict[str, tuple[Any, ...]] = {}  # key -> its op, in order
        # Keys one released batch may carry: each value is at most
        # max_value_size, and the change must fit a frame with room to spare.
        self._latest_batch_max = max(1, options.max_frame_size // (4 * options.max_value_size))
        self._events: deque[Event] = deque()
        # What we failed to advertise (role, epoch, players, info): not retried.
        self._advert_failed: tuple[tuple[Role, int, int, Access], dict[str, Any]] | None = None
        self.poll_events = options.poll_events
        self._dispatcher = Dispatcher(
            f"p2pstate-callbacks-{self.node_id}",
            max(_MAX_CALLBACK_BACKLOG, options.max_pending_events),
        )
        # The start-up election (core/startup.py): whom to join, or host. It
        # lives on the I/O thread; discovery's threads queue records for it.
        self._startup = Startup(
            node_id=self.node_id,
            secured=self.secured,
            wire=WIRE_VERSION,
            discovery_window=options.discovery_window,
            hello_retry=self.node.config.hello_retry,
            stats=self.stats,
        )
        self.join_failure: P2PStateError | None = None
        # (epoch, players) in our record
        self._advertised: tuple[int, int] | None = None
        self._info: dict[str, Any] | None = None  # the settings in our record
        self._modes: dict[str, str] = {}  # the access TXT properties in our record
        self._rev = 0
        self._closing = False
        # Who releases sockets, mDNS and the zmq context: close(), or the I/O
        # thread itself when it outlives close()'s wait (under _release_lock).
        self._release_lock = threading.Lock()
        self._io_done = False
        self._release_on_exit = False
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
        self._startup.deadline = deadline
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
        try:
            started = self.wait_for_io(
                lambda: node.ready or node.refused is not None or self.join_failure is not None,
                max(0.0, deadline - time.monotonic()),
            )
        except SessionClosedError:  # the I/O thread ended (a store that failed, a bug)
            started = False
        if not started:
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
        self._not_on_io("this call")
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
            self._wake()

    def _wake(self) -> None:
        with self._wake_lock, contextlib.suppress(zmq.Again):
            if not self._wake_closed:  # the I/O thread may have released it
                self._wake_out.send(b"", zmq.NOBLOCK)

    def submit(
        self, ops: tuple[tuple[Any, ...], ...], conds: tuple[tuple[Any, ...], ...], *, wait: bool
    ) -> _Pending | None:
        self.check_expelled()
        if wait:
            self._not_on_io("a blocking write (use wait=False)")
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
        game writing its position every frame never piles up a backlog.

        Once one write waits, every later non-blocking set waits with it, and
        all that waited go out as one change: no write overtakes one this
        writer made before it (a score never shows before the position
        written first), and the newest value of each key lands together."""
        if key in self._latest_in_flight or self._latest_waiting:
            if key in self._latest_waiting:
                self.stats["coalesced_writes"] += 1
            self._latest_waiting[key] = ops[0]
            if len(self._latest_waiting) >= self._latest_batch_max:
                self._release_latest_io()  # out now: still behind all before it
            return
        self._submit_latest_io({key: ops[0]})

    def _submit_latest_io(self, batch: dict[str, tuple[Any, ...]]) -> None:
        ops = tuple(batch.values())
        if self._unsendable_io(ops, (), None):
            return
        try:
            req = self.node.submit(ops, (), now=time.monotonic())
        except RuntimeError:
            return  # closing
        for key in batch:
            self._latest_in_flight[key] = req
        self._latest_by_req[req] = tuple(batch)

    def _release_latest_io(self) -> None:
        waiting, self._latest_waiting = self._latest_waiting, {}
        if waiting:
            self._submit_latest_io(waiting)

    def _latest_done_io(self, req: int) -> None:
        keys = self._latest_by_req.pop(req, None)
        if keys is None:
            return
        for key in keys:
            if self._latest_in_flight.get(key) == req:
                del self._latest_in_flight[key]
        # The waiting writes go once none of their keys has one on its way.
        if self._latest_waiting and self._latest_in_flight.keys().isdisjoint(self._latest_waiting):
            self._release_latest_io()

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
        """Wait until every write of ours has its answer; False on timeout,
        SessionClosedError if the session ended first (its I/O thread gone,
        unanswered writes with it)."""
        self.check_expelled()
        return self._writes_answered(timeout)

    def _writes_answered(self, timeout: float) -> bool:
        return self.wait_for_io(
            lambda: not self.node.writer.pending and not self._latest_waiting, timeout
        )

    def wait_for_io(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until *predicate*, checked on the I/O thread after each step,
        holds: True; False on timeout; SessionClosedError if the I/O thread
        ended first (closed, or failed), since then it never will."""
        self._not_on_io("waiting for the session (flush)")
        waiter = _Waiter(predicate)
        with self._waiters_lock:
            if self._waiters_closed:
                raise SessionClosedError("this shared state is closed")
            self._waiters.append(waiter)
        with contextlib.suppress(SessionClosedError):  # closing: _finish_io lets it go
            self.call(functools.partial(setattr, waiter, "armed", True))
        if not waiter.done.wait(timeout):
            with self._waiters_lock:  # nobody waits for it any more
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            return False
        if not waiter.held:
            raise SessionClosedError("this shared state closed before it could answer")
        return True

    def _not_on_io(self, what: str) -> None:
        """Code of the user's that runs on the I/O thread (a Storage) cannot
        wait for that thread: raise at once rather than hang it."""
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                f"{what} cannot be made from p2pstate's I/O thread (in a Storage method): "
                "it would wait for the thread it blocks"
            )

    def count(self, name: str) -> None:
        """Count *name* from a user thread (the I/O thread counts in stats)."""
        with self._user_stats_lock:
            self._user_stats[name] += 1

    def counts(self) -> dict[str, int]:
        """Every counter of the runtime: its own, the user threads', the dispatcher's."""
        with self._user_stats_lock:
            out = dict(self._user_stats)
        out.update(self.stats)  # one C-level copy under the GIL: no torn read
        out.update(self._dispatcher.counts())
        return out

    def _advert_room(self) -> int:
        """Bytes of mDNS record left for the session's settings once every
        other entry is at its widest, for whichever member hosts: the same on
        every copy of this app and session (see core/advert.py)."""
        widest = {
            "app": self.app,
            "session": self.session,
            "id": "f" * len(self.node_id),  # every copy's ids have one length
            "name": "n" * MAX_NAME_BYTES,
            "epoch": "9" * 20,
            "sid": "f" * 16,
            "players": "9" * 9,
            "rev": "9" * 9,
            **self._txt_properties({}, 0, _WIDEST_ACCESS),
            TXT_SECURED: "1",
        }
        return MAX_TXT_TOTAL_BYTES - txt_bytes(widest)

    def check_session_info(self, info: dict[str, Any]) -> None:
        """Raise ValueError if the session's settings would not fit its mDNS
        record: the host's own check of an info write, then the record's."""
        merged = {**self.node.replica.info, **info}
        fault = info_fault(merged, self.node.config.advert_room)
        if fault is not None:
            raise ValueError(fault)
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
        return self._dispatcher.add(callback)

    def close(self, timeout: float = 2.0) -> None:
        """Flush our writes, leave (a host hands over), release everything.

        Also after the I/O thread ended on its own (a store that failed, a
        bug): its sockets, mDNS and threads are released here all the same."""
        self._not_on_io("close()")
        if self._closing:
            return
        self._closing = True
        atexit.unregister(self.close)
        # From a callback, this does not wait for the callback's own thread.
        self._dispatcher.stop(timeout)
        if self._thread.is_alive():
            with contextlib.suppress(SessionClosedError):  # the I/O thread ended meanwhile
                if self.ready.is_set():
                    self._writes_answered(timeout / 2)
                self.call(lambda: self.node.leave(time.monotonic()))
                self.wait_for_io(lambda: self.node.role is Role.CLOSED, timeout)
            self.stopped.set()
            self._wake()
            self._thread.join(timeout + 1.0)
        else:
            self.stopped.set()
        if self._rediscovery.is_alive():
            self._rediscovery.join(2.0)
        with self._release_lock:
            # An I/O thread still running owns its sockets: it releases
            # everything itself when it ends (see _run_io), never under it.
            if self._thread.ident is not None and not self._io_done:
                self._release_on_exit = True
                return
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
            self._wake_closed = True
            self._wake_out.close(linger=0)
        self._wake_in.close(linger=0)
        self.transport.close_io()
        self._ctx.term()

    # ================================================================ discovery

    def _on_record(self, kind: str, record: HostRecord | None, name: str) -> None:
        """Zeroconf's thread: tell the start-up election, let a host meet its rivals."""
        if record is None:
            candidate = is_candidate_name(name)
            with contextlib.suppress(SessionClosedError):
                self.call(functools.partial(self._record_gone_io, name, candidate))
            return
        if record.node_id == self.node_id:
            return
        self._remember(record)
        if not self.stopped.is_set():
            with contextlib.suppress(SessionClosedError):
                self.call(lambda: self._observe_io(record))

    def _remember(self, record: HostRecord) -> None:
        """Every record seen while starting (by browse, watch or rediscovery)
        goes to the start-up election, on the I/O thread."""
        if record.node_id != self.node_id and not self._startup.done:
            with contextlib.suppress(SessionClosedError):
                self.call(functools.partial(self._startup.seen, _advert(record)))

    def _record_gone_io(self, name: str, candidate: bool) -> None:
        # A node's candidate record and its host record are two adverts.
        for advert in self._startup.adverts():
            if node_label(advert.node_id) in name and (advert.epoch == 0) == candidate:
                self._startup.gone(advert.node_id, host=not candidate)

    def _observe_io(self, record: HostRecord) -> None:
        # An open and a secured session of one name can't talk, let alone
        # merge; nor can two wire formats.
        if self._startup.compatible(_advert(record)):
            now = time.monotonic()
            self.node.observe_host(record.node_id, record.endpoints, record.epoch, now)

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
        """The first discovery window is over: let the election decide."""
        self._carry_out_io(self._startup.begin(now), now)

    def _carry_out_io(self, decision: Decision | None, now: float) -> None:
        if isinstance(decision, Join):
            self.node.join(decision.node_id, decision.endpoints, now)
        elif isinstance(decision, Host):
            self._host_io(decision, now)
        elif isinstance(decision, Fail):
            self.join_failure = self._join_error(decision)

    def _join_error(self, fail: Fail) -> P2PStateError:
        """Why we cannot join the session a host of it holds (join() raises it)."""
        where = f"could not join session {self.session!r} of {self.app!r}"
        if fail.reason is Reason.INCOMPATIBLE:
            wire = fail.wire if fail.wire is not None else "of a version before 0.2"
            return IncompatibleVersionError(
                f"{where}: its host speaks p2pstate wire format {wire}, this copy "
                f"speaks {WIRE_VERSION}; run the same p2pstate version everywhere"
            )
        if fail.reason is Reason.SECURED:
            return AuthenticationError(
                f"{where}: it is secured: join it with the session's secret (secret=...)"
            )
        if fail.reason is Reason.OPEN:
            return AuthenticationError(
                f"{where}: it has no secret, and one was given: join it without "
                "secret=, or use another session name"
            )
        return AuthenticationError(
            f"{where}: its host did not accept our secret (a wrong secret, or a host "
            "that does not know it)"
        )

    def _host_io(self, decision: Host, now: float) -> None:
        """Create the session, then welcome the copies that chose us while we
        waited, without making them wait for their next Hello."""
        if decision.unanswered:
            log.info(
                "hosting session %r of %r: %d other starting copies did not answer",
                self.session,
                self.app,
                decision.unanswered,
            )
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
        for hello in decision.hellos:
            try:
                self.node.receive(hello, now)
            except Exception:  # noqa: BLE001 (as in _run_io: drop it, go on)
                self._internal_error_io(hello)

    def _starting(self) -> bool:
        """Looking for a host, or the first one: a Hello here is a copy that
        started with us and chose us (the core would drop it)."""
        node = self.node
        return not node.ready and node.role in (Role.IDLE, Role.JOINING)

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
            self._carry_out_io(self._startup.handshake_failed(node_id, now), now)
            return
        self.stats["unauthenticated_nodes"] += 1
        level = logging.WARNING if self.stats["unauthenticated_nodes"] == 1 else logging.DEBUG
        log.log(level, "node %s failed the handshake: it does not know the secret", node_id)

    def _retry_join_io(self, now: float) -> None:
        """The election's timers: another host, or host ourselves."""
        if self.node.ready:
            self._startup.joined()  # its waits are over
        elif self._starting() and self.join_failure is None:
            self._carry_out_io(self._startup.tick(now), now)

    def _run_io(self) -> None:
        poller = zmq.Poller()
        poller.register(self.transport.router, zmq.POLLIN)
        poller.register(self._wake_in, zmq.POLLIN)
        self.transport.watch_io(poller)  # links' monitors: a dropped host wakes us
        zap = self.transport.zap
        if zap is not None:
            poller.register(zap, zmq.POLLIN)
        node = self.node
        try:
            while not self.stopped.is_set():
                now = time.monotonic()
                deadline = node.next_deadline(now)
                starting = self._startup.next_deadline()
                if starting is not None and not node.ready:
                    deadline = min(deadline, starting)
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
                                self._carry_out_io(self._startup.hello(msg, now), now)
                            else:
                                node.receive(msg, now)
                        except Exception:  # noqa: BLE001 (one message must not end the session)
                            self._internal_error_io(msg)
                    self._flush_io()
                for node_id in self.transport.dropped_io(ready):
                    node.suspect(node_id, time.monotonic())  # the core confirms it
                now = time.monotonic()
                node.tick(now)
                self._retry_join_io(now)
                self._flush_io()
                self.transport.flush_io()  # one frame per peer for this whole pass
                self.transport.sweep_io(now, self._linked_io)
        except Exception:  # a bug must not leave user threads waiting forever
            log.exception("p2pstate I/O thread failed")
            self.stopped.set()
        finally:
            try:
                self._finish_io()
            finally:
                with self._release_lock:
                    self._io_done = True
                    release = self._release_on_exit
                if release:  # close() gave up waiting for us: release what we own
                    self._shutdown_unstarted()

    def _linked_io(self) -> set[str]:
        """The peers whose links the transport keeps open: the members we
        know and the host we follow or join. Others' links are closed when
        idle, refused or past the cap (Transport.sweep_io)."""
        linked = {m.id for m in self.node.replica.members}
        target = self.node.target_id
        if target is not None:
            linked.add(target)
        return linked

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
        if self._views.publish():
            # Before any write returns or event goes out: what they report
            # is readable by then.
            self.view = self._views.view
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
            with self._waiters_lock:
                for waiter in [w for w in self._waiters if w.armed and w.predicate()]:
                    self._waiters.remove(waiter)
                    waiter.held = True
                    waiter.done.set()
        self._advert_guarded_io()

    def _advert_guarded_io(self) -> None:
        """Advertising follows every step but is not part of one: a failure
        there (zeroconf, a record the core let through by mistake) is dropped
        and counted, never the end of the I/O thread. Not retried until what
        would be advertised changes."""
        node = self.node
        # The replica replaces its info and access on every change: identity says it all.
        wanted = (node.role, node.epoch, len(node.replica.members), node.replica.access)
        failed = self._advert_failed
        if failed is not None and failed[0] == wanted and failed[1] is node.replica.info:
            return
        try:
            self._sync_advert_io()
        except Exception:  # the session goes on unadvertised
            self._advert_failed = (wanted, node.replica.info)
            self.stats["advert_errors"] += 1
            level = logging.WARNING if self.stats["advert_errors"] == 1 else logging.DEBUG
            log.log(level, "could not advertise the session; it goes on", exc_info=True)

    def _emit_io(self, event: Event) -> None:
        if isinstance(event, KeyChanged) and isinstance(event.value, (list, dict)):
            # The replica holds this object: hand out a copy nobody else shares.
            event = KeyChanged(key=event.key, value=fresh_copy(event.value), version=event.version)
        if self._dispatcher.wanted:
            self._dispatcher.put(event)  # the I/O thread runs no user code
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
        with self._waiters_lock:
            self._waiters_closed = True
            for waiter in self._waiters:
                waiter.done.set()


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
    return {"players": str(players), **info_properties(info)}


def _advert(record: HostRecord) -> Advert:
    """A record as the start-up election reads it."""
    return Advert(
        node_id=record.node_id,
        endpoints=record.endpoints,
        epoch=record.epoch,
        players=_players(record),
        secured=advertised_secured(record.properties),
        wire=advertised_wire(record.properties),
    )


def _players(record: HostRecord) -> int:
    try:
        return int(record.properties.get("players", "1"))
    except ValueError:
        return 1
