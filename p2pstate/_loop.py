"""The I/O thread's loop: one pass per wake-up.

A pass waits on the sockets (the router, the waker, the links' monitors,
the ZAP socket) until something arrives or the core's next timer is due,
then runs the commands user threads queued, handles the frames that
arrived, tells the core of dropped links, runs its timers if due, and ends
with the runtime's step (``Runtime._flush_io``), which carries out all of
it once. It is its own module because it is the one part of the runtime
that decides when work happens and in what order; the runtime
(``session.py``) keeps what it owns: the threads, the sockets' lifetime,
and what the step does with the core's outputs.

Anything named ``*_io`` runs on the I/O thread only.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, cast

import zmq

from .core.node import Node
from .transport import Transport

if TYPE_CHECKING:
    from ._startup_io import StartupAdapter

__all__ = ["Loop"]

log = logging.getLogger(__name__)

#: Frames handled in one pass of the I/O loop at most, before its timers.
_FRAMES_PER_PASS = 1000
#: Messages handled before what they made is sent (a sender's batch at most).
_SEND_AFTER = 128


class Loop:
    """The passes the I/O thread runs until the session stops. The
    runtime gives it the command queue its user threads fill, the waker
    they wake it with, and its *flush* (the pass's step) and
    *internal_error* (a message or command that raised)."""

    def __init__(
        self,
        *,
        node: Node,
        transport: Transport,
        startup: StartupAdapter,
        waker: zmq.Socket[bytes] | int,
        drain_waker: Callable[[], None],
        commands: deque[Callable[[], None]],
        stats: Counter[str],
        flush: Callable[[], None],
        internal_error: Callable[[object], None],
    ) -> None:
        self.node, self.transport, self.startup = node, transport, startup
        self._waker, self._drain_waker = waker, drain_waker
        self._commands = commands  # queued by user threads (Runtime.call)
        self.stats = stats
        self._flush_io, self._internal_error_io = flush, internal_error
        self._ticked_at = 0.0  # when the I/O thread last ran the core's timers

    def _poller_io(self) -> zmq.Poller:
        """What the I/O thread waits on: the router, the waker, the links'
        monitors (a dropped host wakes us) and the ZAP socket, if any."""
        poller = zmq.Poller()
        poller.register(self.transport.router, zmq.POLLIN)
        poller.register(self._waker, zmq.POLLIN)
        self.transport.watch_io(poller)
        if self.transport.zap is not None:
            poller.register(self.transport.zap, zmq.POLLIN)
        return poller

    def run_io(self, stopped: threading.Event, finish: Callable[[], None]) -> None:
        """The I/O thread's body: passes until *stopped* is set, then
        *finish* (also after a pass raised, which sets *stopped*)."""
        poller = self._poller_io()
        zap = self.transport.zap
        try:
            while not stopped.is_set():
                self._pass_io(poller, zap)
        except Exception:  # a bug must not leave user threads waiting forever
            log.exception("p2pstate I/O thread failed")
            stopped.set()
        finally:
            finish()

    def _pass_io(self, poller: zmq.Poller, zap: zmq.Socket[bytes] | None) -> None:
        """One wake-up of the I/O thread: what woke it, the timers if due,
        then one step carries out all of it (a wake-up costs CPU, and on a
        busy machine that CPU is latency: nothing is done twice per pass)."""
        node = self.node
        now = time.monotonic()
        deadline = node.next_deadline(self._ticked_at)
        starting = self.startup.election.next_deadline()
        if starting is not None and not node.ready:
            deadline = min(deadline, starting)
        # Rounded up: a wait rounded down to 0 ms would spin until the deadline.
        ready = dict(poller.poll(max(0, math.ceil((deadline - now) * 1000))))
        self.stats["io_passes"] += 1
        if self._waker in ready:
            self._drain_waker()
        self._run_commands_io()
        if zap is not None:
            self._secure_io(zap in ready, time.monotonic())
        if self.transport.readable(ready):
            self._receive_io()
        self._suspect_io(ready)
        now = time.monotonic()
        # The core's timers run when it says they are due, not on every
        # message: a host's tick weighs the whole membership's liveness.
        if now >= node.next_deadline(self._ticked_at):
            node.tick(now)
            self._ticked_at = now
        self.startup.retry_join_io(now)
        self._flush_io()
        self.transport.sweep_io(now, self._linked_io)

    def _receive_io(self) -> None:
        """Handle what arrived, and send what it made every _SEND_AFTER
        messages: the peers downstream (the successor, the writers) work on
        one batch while we handle the next, where handling all before
        sending any left them idle, then us."""
        node, router = self.node, self.transport.router
        handled = 0
        for _ in range(_FRAMES_PER_PASS):
            msgs = self.transport.receive_io(limit=1)  # [] for a bad frame too (counted)
            now = time.monotonic()
            for msg in msgs:
                try:
                    if not (self.startup.starting() and self.startup.message_io(msg, now)):
                        node.receive(msg, now)
                except Exception:  # noqa: BLE001 (one message must not end the session)
                    self._internal_error_io(msg)
            handled += len(msgs)
            if handled >= _SEND_AFTER:
                self._flush_io()
                handled = 0
            if not cast(int, router.get(zmq.EVENTS)) & zmq.POLLIN:
                break  # nothing more waits (the pass's step sends the rest)

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
            self.startup.handshake_failed_io(node_id, now)

    def _suspect_io(self, ready: Collection[object]) -> None:
        """Links' monitors saw connections drop: tell the core, which
        confirms whether its host is lost."""
        for node_id in self.transport.dropped_io(ready):
            self.node.suspect(node_id, time.monotonic())  # the core confirms it

    def _run_commands_io(self) -> None:
        """Run the commands queued so far; the pass's step carries out what they made."""
        for _ in range(len(self._commands)):
            command = self._commands.popleft()
            try:
                command()
            except Exception:  # noqa: BLE001 (as for a message: drop it, go on serving)
                self._internal_error_io(command)
