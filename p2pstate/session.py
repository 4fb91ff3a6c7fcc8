"""The runtime: one I/O thread per SharedState owns the sockets, the discovery
adapter and the protocol core; the user's threads talk to it through a
command queue and a wake-up socket. It keeps the thread, the command queue
and the dispatch of the core's outputs (each pass's step); the rest is
composed: the I/O loop's passes (``_loop.py``), the write waiters
(``_writes.py``), the host's mDNS advert (``_advertiser.py``) and the
start-up election's I/O (``_startup_io.py``).

Anything named ``*_io`` runs on the I/O thread only.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import zmq

from ._advertiser import Advertiser, advert_room
from ._dispatch import Dispatcher
from ._loop import Loop
from ._startup_io import StartupAdapter, access_error
from ._view import View, ViewPublisher
from ._writes import Pending, Writes
from .codec import fresh_copy
from .core.node import Node, Role
from .core.writer import Outcome
from .discovery import Discovery, resolve_interfaces
from .errors import SessionClosedError
from .events import Event, KeyChanged
from .identity import Identity, load_identity
from .options import Options
from .persist import Persister
from .session_key import derive_session_key
from .transport import Transport

__all__ = ["Runtime"]

log = logging.getLogger(__name__)

# Events waiting for slow on_change callbacks before the oldest are dropped
# (max_pending_events bounds poll()'s buffer, and may be set far lower).
_MAX_CALLBACK_BACKLOG = 100_000

_T = TypeVar("_T")

#: Linux's eventfd: the cheaper way to wake the I/O thread (see _Waker).
_EVENTFD = hasattr(os, "eventfd")


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
        self.addresses = resolve_interfaces(interfaces)
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.transport = _open_transport(
            self._ctx,
            app=app,
            session=session,
            node_id=self.node_id,
            identity=self.identity,
            addresses=self.addresses,
            options=options,
        )
        self.node = Node(
            node_id=self.node_id,
            name=name,
            endpoints=self.transport.endpoints,
            profile=options.profile,
            config=replace(
                options.core_config(), advert_room=advert_room(app, session, self.node_id)
            ),
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
        self._waker = _Waker(self._ctx, self.node_id)
        self.poll_events = options.poll_events
        self._compose()
        self._closing = False
        # Who releases sockets, mDNS and the zmq context: close(), or the I/O
        # thread itself when it outlives close()'s wait (under _release_lock).
        self._release_lock = threading.Lock()
        self._io_done = False
        self._release_on_exit = False
        self._unwatch: Callable[[], None] | None = None
        # persistence (issue 8): opened by start(), closed by the I/O thread's end
        self._persister: Persister | None = None

    def _compose(self) -> None:
        """The parts the runtime owns, each with its own state, and its threads."""
        options = self.options
        self._events = _EventBuffer(options.max_pending_events, self.stats)
        self._dispatcher = Dispatcher(
            f"p2pstate-callbacks-{self.node_id}",
            max(_MAX_CALLBACK_BACKLOG, options.max_pending_events),
        )
        self._thread = threading.Thread(
            target=self._run_io, name=f"p2pstate-io-{self.node_id}", daemon=True
        )
        self._writes = Writes(
            self.node,
            self.stats,
            call=self.call,
            not_on_io=self._not_on_io,
            check_expelled=self.check_expelled,
            # Keys one released batch may carry: each value is at most
            # max_value_size, and the change must fit a frame with room to spare.
            batch_max=max(1, options.max_frame_size // (4 * options.max_value_size)),
        )
        self._advertiser = Advertiser(
            app=self.app,
            session=self.session,
            node=self.node,
            discovery=self.discovery,
            addresses=self.addresses,
            port=int(self.transport.endpoints[0].rsplit(":", 1)[1]),
            secured=self.secured,
            stats=self.stats,
        )
        self.startup = StartupAdapter(
            app=self.app,
            session=self.session,
            options=options,
            node=self.node,
            discovery=self.discovery,
            transport=self.transport,
            stats=self.stats,
            stopped=self.stopped,
            call=self.call,
            internal_error=self._internal_error_io,
        )
        self._rediscovery = threading.Thread(
            target=self.startup.rediscover, name=f"p2pstate-mdns-{self.node_id}", daemon=True
        )
        self._loop = Loop(
            node=self.node,
            transport=self.transport,
            startup=self.startup,
            waker=self._waker.socket,
            drain_waker=self._waker.drain_io,
            commands=self._commands,
            stats=self.stats,
            flush=self._flush_io,
            internal_error=self._internal_error_io,
        )

    # ================================================================ user side

    def start(self, timeout: float) -> None:
        """Find a host or become one; return once the state is usable.

        While it looks, this node advertises itself as a *candidate* (epoch 0),
        as mDNS hosts probe a name before claiming it: copies started at the
        same instant see each other's candidate records, and only the lowest
        node id hosts, so they never make two sessions to merge later."""
        deadline = time.monotonic() + timeout
        self.startup.election.deadline = deadline
        try:
            # The settings this peer would advertise, and any modes: a record
            # too big for mDNS is the caller's ValueError, not a dead I/O thread.
            self.check_session_info(self.options.session_info())
            self._persister = self.startup.open_store()
            self._advertiser.advertise_io(epoch=0)
            found = self.discovery.browse(
                self.app,
                self.session,
                min(self.options.discovery_window, timeout),
                until=lambda record: record.epoch > 0,  # a real host: join it now
            )
            self._unwatch = self.discovery.watch(self.app, self.session, self.startup.on_record)
        except Exception:
            self._shutdown_unstarted()
            raise
        for record in found:
            self.startup.remember(record)
        self._thread.start()
        self._rediscovery.start()
        # A game that exits without close() still hands over instead of
        # leaving its peers to time it out.
        atexit.register(self.close)
        self.call(lambda: self.startup.begin_io(time.monotonic()))
        node, startup = self.node, self.startup
        try:
            started = self.wait_for_io(
                lambda: node.ready or node.refused is not None or startup.join_failure is not None,
                max(0.0, deadline - time.monotonic()),
            )
        except SessionClosedError:  # the I/O thread ended (a store that failed, a bug)
            started = False
        error = self.startup.failure(started, timeout)
        if error is not None:
            self.close(timeout=0.5)
            raise error

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
        self._waker.wake_once()

    def submit(
        self, ops: tuple[tuple[Any, ...], ...], conds: tuple[tuple[Any, ...], ...], *, wait: bool
    ) -> Pending | None:
        return self._writes.submit(ops, conds, wait=wait)

    def check_expelled(self) -> None:
        """Raise BannedError (or PermissionDeniedError) once the session
        removed this peer for good."""
        reason = self.node.refused
        if reason in ("banned", "not_authorized") and self.node.ready:
            raise access_error(reason, self.session, self.node_id)

    def wait(self, pending: Pending, timeout: float) -> Outcome:
        return self._writes.wait(pending, timeout)

    def flush(self, timeout: float) -> bool:
        """Wait until every write of ours has its answer (see Writes.answered)."""
        self.check_expelled()
        return self._writes.answered(timeout)

    def wait_for_io(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until *predicate* holds on the I/O thread (see Writes.wait_for_io)."""
        return self._writes.wait_for_io(predicate, timeout)

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

    def check_session_info(self, info: dict[str, Any]) -> None:
        """Raise ValueError if the session's settings would not fit its mDNS record."""
        self._advertiser.check_session_info(info)

    def poll(self) -> list[Event]:
        return self._events.take()

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
                    self._writes.answered(timeout / 2)
                self.call(lambda: self.node.leave(time.monotonic()))
                self.wait_for_io(lambda: self.node.role is Role.CLOSED, timeout)
            self.stopped.set()
            self._waker.wake()
            self._thread.join(timeout + 1.0)
        else:
            self.stopped.set()
        if self._rediscovery.is_alive():
            self._rediscovery.join(2.0)
        with self._release_lock:
            # An I/O thread still running owns its sockets: it releases
            # everything itself when it ends (see _end_io), never under it.
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
        self._writes.release_pending()
        self._waker.close()
        self.transport.close_io()
        self._ctx.term()

    # ================================================================ I/O thread

    def _run_io(self) -> None:
        self._loop.run_io(self.stopped, self._end_io)

    def _end_io(self) -> None:
        """The I/O thread ends (closed, or failed): the last frames, the
        store and the advert; then what close() left to it, if anything."""
        try:
            self._finish_io()
        finally:
            with self._release_lock:
                self._io_done = True
                release = self._release_on_exit
            if release:  # close() gave up waiting for us: release what we own
                self._shutdown_unstarted()

    def _internal_error_io(self, msg: object) -> None:
        """A message made the core or an adapter raise: a bug, or input we did
        not foresee. Drop it and go on serving; say so loudly once."""
        self.stats["internal_errors"] += 1
        level = logging.ERROR if self.stats["internal_errors"] == 1 else logging.DEBUG
        log.log(level, "dropped a message that raised: %.200r", msg, exc_info=True)

    def _flush_io(self) -> None:
        """The pass's step: carry out everything the core made, once."""
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
            self._writes.outcome_io(outcome)
        events = [_handed_out(event) for event in node.take_events()]
        if self.poll_events:
            for event in events:
                self._events.put_io(event)
        # One frame per peer for the whole pass, sent before the on_change
        # thread is woken: pyzmq lets go of the GIL in send, and that thread
        # would take it and hold the frames after the first.
        self.transport.flush_io()
        if events and self._dispatcher.wanted:
            for event in events:
                self._dispatcher.put(event)  # the I/O thread runs no user code
        if node.ready and not self.ready.is_set():
            self.ready.set()
            self.startup.initial = ((), 0)  # a joiner took the session's state instead
        self._writes.check_waiters_io()
        self._advertiser.guarded_io()

    def _finish_io(self) -> None:
        self.transport.flush_io()
        self._close_store()  # the I/O thread was its last user
        self._advertiser.withdraw_io()
        self.stopped.set()
        self._writes.finish_io()


def _open_transport(
    ctx: zmq.Context[zmq.Socket[bytes]],
    *,
    app: str,
    session: str,
    node_id: str,
    identity: Identity,
    addresses: list[str],
    options: Options,
) -> Transport:
    """This node's sockets, secured with the session's key if it has a secret."""
    session_key = (
        derive_session_key(options.secret, app, session) if options.secret is not None else None
    )
    return Transport(
        ctx,
        node_id,
        addresses,
        max_frame_size=options.max_frame_size,
        session_key=session_key,
        identity=identity,
        max_links=options.max_links,
        link_idle=options.link_idle,
    )


def _handed_out(event: Event) -> Event:
    """*event* as users get it: the replica holds a list or dict value, so
    they get a copy nobody else shares."""
    if isinstance(event, KeyChanged) and isinstance(event.value, (list, dict)):
        return KeyChanged(key=event.key, value=fresh_copy(event.value), version=event.version)
    return event


class _Waker:
    """What user threads wake the I/O thread's poll with: on Linux an
    eventfd (a kernel counter the poller watches: a write and a read, about
    half the round trip of a zmq inproc pair, measured), elsewhere an
    inproc PUSH/PULL pair. One wake-up in flight is enough: the I/O thread
    clears the flag before it runs the command queue, so a command queued
    after that sends a new one."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], node_id: str) -> None:
        self._lock = threading.Lock()
        self._pending = False
        self._closed = False  # under _lock
        self._fd = -1
        self._out: zmq.Socket[bytes] | None = None
        # What the I/O thread polls (a zmq socket, or a file descriptor).
        self.socket: zmq.Socket[bytes] | int
        if _EVENTFD:
            self._fd = self.socket = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            return
        address = f"inproc://p2pstate-wake-{node_id}"
        self._in: zmq.Socket[bytes] = ctx.socket(zmq.PULL)
        self._in.bind(address)
        self.socket = self._in
        self._out = ctx.socket(zmq.PUSH)
        self._out.connect(address)

    def wake_once(self) -> None:
        """Wake the I/O thread unless a wake-up is already on its way."""
        if not self._pending:
            self._pending = True
            self.wake()

    def wake(self) -> None:
        with self._lock:
            if self._closed:  # the I/O thread may have released it
                return
            if self._out is None:
                os.eventfd_write(self._fd, 1)
            else:
                with contextlib.suppress(zmq.Again):
                    self._out.send(b"", zmq.NOBLOCK)

    def drain_io(self) -> None:
        if self._out is None:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._fd)  # the count of wake-ups, back to 0
        else:
            while True:
                try:
                    self._in.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
        self._pending = False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._out is None:
                os.close(self._fd)
                return
            self._out.close(linger=0)
        self._in.close(linger=0)


class _EventBuffer:
    """The events kept for poll(): the I/O thread appends, a user thread
    takes them all; past *limit* the oldest go (and are counted)."""

    def __init__(self, limit: int, stats: Counter[str]) -> None:
        self._events: deque[Event] = deque()
        self._limit, self._stats = limit, stats

    def put_io(self, event: Event) -> None:
        if len(self._events) >= self._limit:
            self._events.popleft()
            self._stats["events_dropped"] += 1
            if self._stats["events_dropped"] == 1:
                log.warning("poll() is not keeping up; dropping the oldest events")
        self._events.append(event)

    def take(self) -> list[Event]:
        out: list[Event] = []
        while True:
            try:
                out.append(self._events.popleft())
            except IndexError:
                return out
