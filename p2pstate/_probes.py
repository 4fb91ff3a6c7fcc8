"""The prober's side of a silence probe (``Send.fresh``; see the transport's
module docstring): each probe has a DEALER socket of its own, so that its
connection is new (not stuck behind a stalled link's retransmissions), and
lives until its answer comes, the next probe of the same node, or
``PROBE_LIFE`` seconds."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

import zmq

from .core.node import Send
from .errors import ProtocolError
from .identity import Identity
from .messages import Message, Redirect, Refused, Welcome, from_batch, to_frame
from .session_key import SessionKey

__all__ = ["ANSWERS", "PROBE_LIFE", "PROBE_PREFIX", "Probes"]

#: The routing id of a probe's connection starts with this (an id libzmq
#: makes up starts with a zero byte: never this).
PROBE_PREFIX = b"probe:"
#: Seconds a probe's socket waits for its answer (the core's window is far
#: shorter: an answer later than that is news of a live host all the same).
PROBE_LIFE = 1.0
#: What the host's ROUTER may answer over a probe's connection.
ANSWERS = (Welcome, Redirect, Refused)


@dataclass
class _Probe:
    """A probe's own connection to node ``to``, until its answer comes."""

    socket: zmq.Socket[bytes]
    to: str
    opened: float


class Probes:
    """Our open probes, one per probed node, owned by the I/O thread."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        *,
        max_frame_size: int,
        stats: Counter[str],
        on_bad: Callable[[str], None],
        session_key: SessionKey | None = None,
        identity: Identity | None = None,
    ) -> None:
        self._ctx, self._max_frame_size = ctx, max_frame_size
        self._stats, self._on_bad = stats, on_bad
        self._session_key, self._identity = session_key, identity
        self._open: dict[str, _Probe] = {}  # node id -> our probe of it
        self.poller: zmq.Poller | None = None

    def __iter__(self) -> Iterator[str]:
        return iter(self._open)

    def __len__(self) -> int:
        return len(self._open)

    def readable(self, ready: Collection[object]) -> bool:
        return any(p.socket in ready for p in self._open.values())

    def open_io(self, send: Send, endpoint: str, now: float) -> None:
        """Send *send* to *endpoint* over a new connection, replacing our
        last probe of the same node (its SYN may be lost)."""
        self.close(send.to)
        sock: zmq.Socket[bytes] = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, PROBE_PREFIX + os.urandom(8))
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_frame_size)
        if self._session_key is not None and self._identity is not None:
            sock.setsockopt(zmq.CURVE_SERVERKEY, self._session_key.public_key)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self._identity.public_key)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self._identity.secret_key)
        sock.connect(endpoint)
        self._open[send.to] = _Probe(sock, send.to, now)
        if self.poller is not None:
            self.poller.register(sock, zmq.POLLIN)
        self._stats["probes_sent"] += 1
        try:
            sock.send(to_frame(send.msg), zmq.NOBLOCK)  # queued until connected
        except zmq.Again:
            self._stats["send_queue_full"] += 1

    def answers_io(self) -> list[Message]:
        """The answers waiting on our probes' sockets, from the probed node
        only; a probe is done (closed) once answered."""
        out: list[Message] = []
        for probe in list(self._open.values()):
            try:
                body = probe.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                continue
            self.close(probe.to)
            try:
                msgs = from_batch(body, max_size=self._max_frame_size)
            except ProtocolError as exc:
                self._on_bad(str(exc))
                continue
            self._stats["probe_answers_received"] += 1
            out.extend(m for m in msgs if m.sender == probe.to and isinstance(m, ANSWERS))
        return out

    def sweep(self, now: float) -> None:
        """Close the probes unanswered for ``PROBE_LIFE``."""
        for node_id in [i for i, p in self._open.items() if now - p.opened >= PROBE_LIFE]:
            self.close(node_id)

    def close(self, node_id: str) -> None:
        probe = self._open.pop(node_id, None)
        if probe is not None:
            if self.poller is not None:
                self.poller.unregister(probe.socket)
            probe.socket.close(linger=0)

    def close_all(self) -> None:
        for node_id in list(self._open):
            self.close(node_id)
