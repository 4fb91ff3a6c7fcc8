"""The writes user threads make and wait for: blocking writes (a pending
answer each), non-blocking sets (latest wins, one writer's order kept), and
waits for a condition the I/O thread checks after each step (flush).

Anything named ``*_io`` runs on the I/O thread only.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from .codec import encode
from .core.node import Node
from .core.status import Status
from .core.writer import Outcome
from .errors import SessionClosedError, SessionLostError

__all__ = ["Pending", "Writes"]

log = logging.getLogger(__name__)

Op = tuple[Any, ...]


class Pending:
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


class Writes:
    """The runtime's writes and waits. *call* runs a command on the I/O
    thread; *not_on_io* raises when called from it; *check_expelled*
    raises once the session removed this peer for good."""

    def __init__(
        self,
        node: Node,
        stats: Counter[str],
        *,
        call: Callable[[Callable[[], None]], None],
        not_on_io: Callable[[str], None],
        check_expelled: Callable[[], None],
        batch_max: int,
    ) -> None:
        self.node, self.stats = node, stats
        self._call, self._not_on_io, self._check_expelled = call, not_on_io, check_expelled
        self.pending: dict[int, Pending] = {}
        # Registered by user threads, checked by the I/O thread after each
        # step, all let go when it ends (closed set then, all under the lock).
        self._waiters: list[_Waiter] = []
        self._waiters_lock = threading.Lock()
        self._waiters_closed = False
        # Non-blocking sets, per key: the request on its way, and the newest waiting.
        self._latest_in_flight: dict[str, int] = {}
        self._latest_by_req: dict[int, tuple[str, ...]] = {}
        self._latest_waiting: dict[str, Op] = {}  # key -> its op, in order
        # Keys one released batch may carry (see Runtime.__init__).
        self._latest_batch_max = batch_max

    # ------------------------------------------------------------ user side

    def submit(self, ops: tuple[Op, ...], conds: tuple[Op, ...], *, wait: bool) -> Pending | None:
        self._check_expelled()
        if wait:
            self._not_on_io("a blocking write (use wait=False)")
        pending = Pending() if wait else None
        if not wait and len(ops) == 1 and ops[0][0] == "set" and not conds:
            self._call(functools.partial(self._set_latest_io, ops[0][1], ops))
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
                self.pending[req] = pending

        self._call(submit_io)
        return pending

    def wait(self, pending: Pending, timeout: float) -> Outcome:
        if not pending.done.wait(timeout):
            raise SessionLostError(f"no host answered within {timeout} s")
        if pending.outcome is None:
            self._check_expelled()
            raise SessionClosedError("the shared state was closed before the write completed")
        return pending.outcome

    def answered(self, timeout: float) -> bool:
        """Wait until every write of ours has its answer; False on timeout,
        SessionClosedError if the session ended first (its I/O thread gone,
        unanswered writes with it)."""
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
        with contextlib.suppress(SessionClosedError):  # closing: finish_io lets it go
            self._call(functools.partial(setattr, waiter, "armed", True))
        if not waiter.done.wait(timeout):
            with self._waiters_lock:  # nobody waits for it any more
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            return False
        if not waiter.held:
            raise SessionClosedError("this shared state closed before it could answer")
        return True

    # ------------------------------------------------------------ I/O thread

    def _set_latest_io(self, key: str, ops: tuple[Op, ...]) -> None:
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

    def _submit_latest_io(self, batch: dict[str, Op]) -> None:
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
        self, ops: tuple[Op, ...], conds: tuple[Op, ...], pending: Pending | None
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
                pending.outcome = Outcome(req=0, status=Status.UNSENDABLE, detail=detail, seq=0)
                pending.done.set()
            return True
        return False

    def outcome_io(self, outcome: Outcome) -> None:
        """The core answered one of our writes: let its writer go on."""
        if self._latest_by_req:
            self._latest_done_io(outcome.req)
        pending = self.pending.pop(outcome.req, None)
        if pending is not None:
            pending.outcome = outcome
            pending.done.set()

    def check_waiters_io(self) -> None:
        """After a step: release the waits whose condition now holds."""
        if self._waiters:
            with self._waiters_lock:
                for waiter in [w for w in self._waiters if w.armed and w.predicate()]:
                    self._waiters.remove(waiter)
                    waiter.held = True
                    waiter.done.set()

    def finish_io(self) -> None:
        """The I/O thread ends: every write and wait is let go, unanswered."""
        for pending in self.pending.values():
            pending.done.set()
        with self._waiters_lock:
            self._waiters_closed = True
            for waiter in self._waiters:
                waiter.done.set()

    def release_pending(self) -> None:
        """Closing a runtime whose I/O thread never ran, or ended."""
        for pending in self.pending.values():
            pending.done.set()
        self.pending.clear()
