"""The pyzmq adapter: sockets only, no protocol.

Every node binds one ROUTER, on every address it may use, and receives all of
its traffic there. To send to node X it uses a DEALER of its own connected to
one of X's endpoints. One TCP connection per direction keeps each sender's
messages in order, which the protocol relies on; replies never travel back on
the same socket, so no routing ids need tracking.

Only the I/O thread may call a Transport (``*_io`` in the names of its callers).
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from dataclasses import dataclass, field

import zmq

from .core.node import Send
from .errors import ProtocolError
from .messages import MAX_BATCH, Hello, Message, from_batch, to_frame

__all__ = ["BATCH_BYTES", "BATCH_MESSAGES", "Transport", "valid_endpoint"]

#: What one link sends as one frame at most (a bigger message goes alone).
#: Messages for one peer made in one pass of the I/O loop travel together:
#: one zmq send, one wake-up of the receiver, instead of one per message.
BATCH_BYTES = 256 * 1024
BATCH_MESSAGES = MAX_BATCH

log = logging.getLogger(__name__)


@dataclass
class _Link:
    socket: zmq.Socket[bytes]
    endpoints: tuple[str, ...]
    index: int
    heard: bool = False  # has X said anything since we last rotated?
    given: tuple[str, ...] = ()  # the endpoints as the protocol gave them, unchecked
    queued: list[bytes] = field(default_factory=list)  # encoded, not yet sent
    queued_bytes: int = 0


class Transport:
    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        node_id: str,
        addresses: list[str],
        *,
        max_frame_size: int,
        send_hwm: int = 10_000,
    ) -> None:
        self._ctx = context
        self.node_id = node_id
        self.max_frame_size = max_frame_size
        self._send_hwm = send_hwm
        self.stats: Counter[str] = Counter()
        self._links: dict[str, _Link] = {}
        self._queued: list[_Link] = []  # links with messages to send in flush_io
        self._last_msg: Message | None = None
        self._last_frame = b""
        self._local_nets = [_network(a) for a in addresses]
        self.router: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        # A stranger can't make us allocate more than this for one frame.
        self.router.setsockopt(zmq.MAXMSGSIZE, max_frame_size)
        self.router.setsockopt(zmq.RCVHWM, 100_000)
        port = 0
        endpoints: list[str] = []
        for address in addresses:
            host = f"[{address}]" if ":" in address else address
            try:
                self.router.bind(f"tcp://{host}:{port or '*'}")
            except zmq.ZMQError:
                self.router.bind(f"tcp://{host}:*")  # that port is taken on this address
            bound = self.router.getsockopt(zmq.LAST_ENDPOINT)
            assert isinstance(bound, bytes)
            endpoint = bound.decode()
            port = port or int(endpoint.rsplit(":", 1)[1])
            endpoints.append(endpoint)
        self.endpoints: tuple[str, ...] = tuple(endpoints)

    # ------------------------------------------------------------ receiving

    def receive_io(self, limit: int = 1000) -> list[Message]:
        """Decode up to *limit* waiting messages; bad frames are dropped and counted."""
        out: list[Message] = []
        for _ in range(limit):
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            if len(frames) != 2:
                self._bad("wrong frame count")
                continue
            self.stats["frames"] += 1
            try:
                msgs = from_batch(frames[1], max_size=self.max_frame_size)
            except ProtocolError as exc:
                self._bad(str(exc))
                continue
            for msg in msgs:
                link = self._links.get(msg.sender)
                if link is not None:
                    link.heard = True
            out.extend(msgs)
        return out

    def _bad(self, why: str) -> None:
        self.stats["bad_frames"] += 1
        # A hostile sender can repeat this endlessly: warn once, then debug.
        level = logging.WARNING if self.stats["bad_frames"] == 1 else logging.DEBUG
        log.log(level, "dropped a bad frame (%s); %d so far", why, self.stats["bad_frames"])

    # ------------------------------------------------------------ sending

    def send_io(self, send: Send) -> None:
        link = self._links.get(send.to)
        if link is not None and send.endpoints == link.given:
            endpoints = link.endpoints  # checked when the link was made
        else:
            endpoints = tuple(e for e in send.endpoints if valid_endpoint(e))
        if link is None or (endpoints and set(endpoints) != set(link.endpoints)):
            if not endpoints:
                # Endpoints come from the network: a hostile or broken peer may
                # give none that parse. Nothing to send to, then.
                self.stats["no_valid_endpoint"] += 1
                return
            self.forget_io(send.to)  # new, or the node restarted elsewhere
            link = self._connect(send.to, endpoints)
            link.given = send.endpoints
        if isinstance(send.msg, Hello) and not link.heard and len(link.endpoints) > 1:
            # Still no word from X on this address: its first address may be on an
            # interface we can't reach (VPN, container bridge). Try the next one.
            self._rotate(link)
        link.heard = False if isinstance(send.msg, Hello) else link.heard
        if send.msg is not self._last_msg:  # one change for many peers: encode it once
            self._last_msg, self._last_frame = send.msg, to_frame(send.msg)
        frame = self._last_frame
        if link.queued and (
            link.queued_bytes + len(frame) > BATCH_BYTES or len(link.queued) >= BATCH_MESSAGES
        ):
            self._send_queued(link)
        if not link.queued:
            self._queued.append(link)
        link.queued.append(frame)
        link.queued_bytes += len(frame)

    def flush_io(self) -> None:
        """Send what ``send_io`` queued: one frame per peer, in order."""
        for link in self._queued:
            if link.queued:
                self._send_queued(link)
        self._queued.clear()

    def _send_queued(self, link: _Link) -> None:
        # msgpack objects laid end to end: a batch of one is a plain message.
        frame = link.queued[0] if len(link.queued) == 1 else b"".join(link.queued)
        link.queued.clear()
        link.queued_bytes = 0
        try:
            link.socket.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            self.stats["send_queue_full"] += 1

    def forget_io(self, node_id: str) -> None:
        link = self._links.pop(node_id, None)
        if link is not None:
            if link.queued:
                self._send_queued(link)
            link.socket.close(linger=0)

    def _connect(self, node_id: str, endpoints: tuple[str, ...]) -> _Link:
        ordered = sorted(endpoints, key=self._preference)
        sock: zmq.Socket[bytes] = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self._send_hwm)
        sock.setsockopt(zmq.RECONNECT_IVL, 50)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.connect(ordered[0])
        link = _Link(sock, tuple(ordered), 0, heard=True)
        self._links[node_id] = link
        return link

    def _rotate(self, link: _Link) -> None:
        link.socket.disconnect(link.endpoints[link.index])
        link.index = (link.index + 1) % len(link.endpoints)
        link.socket.connect(link.endpoints[link.index])
        self.stats["endpoint_rotations"] += 1

    def _preference(self, endpoint: str) -> int:
        """Endpoints on one of our own subnets first: on a LAN those answer."""
        try:
            address = ipaddress.ip_address(endpoint.split("//", 1)[1].rsplit(":", 1)[0].strip("[]"))
        except ValueError:
            return 2
        return 0 if any(net is not None and address in net for net in self._local_nets) else 1

    def close_io(self) -> None:
        for node_id in list(self._links):
            self.forget_io(node_id)
        self.router.close(linger=0)


def valid_endpoint(endpoint: str) -> bool:
    """Whether *endpoint* is ``tcp://<IP literal>:<port>``: the only kind we
    connect to, so a peer cannot make us resolve names or open files."""
    if not endpoint.startswith("tcp://"):
        return False
    host, _, port = endpoint[6:].rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        return False
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _network(address: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The /24 (or /64) around one of our addresses: a cheap guess at the LAN."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    prefix = 24 if ip.version == 4 else 64
    return ipaddress.ip_network(f"{address}/{prefix}", strict=False)
