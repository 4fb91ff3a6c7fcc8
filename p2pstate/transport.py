"""The pyzmq adapter: sockets only, no protocol.

Every node binds one ROUTER, on every address it may use, and receives all of
its traffic there. To send to node X it uses a DEALER of its own connected to
one of X's endpoints. One TCP connection per direction keeps each sender's
messages in order, which the protocol relies on; replies never travel back on
the same socket, so no routing ids need tracking.

With a session secret, every ROUTER is a CURVE server with the session's
keypair and every DEALER a CURVE client with this installation's identity
keypair. A ZAP handler (RFC 27), served on the I/O thread, tells libzmq each
client's proven identity; every message whose sender id claims another
identity is dropped. Handshakes of new links are watched (socket monitors)
so a join can tell "wrong secret" from "no answer".

A probe of a silent host (``Send.fresh``: ``failover.probe_silent_host``)
goes over a short-lived DEALER of its own, a new TCP connection: the link may
be stuck in TCP's retransmission backoff after a blip, a new connection's SYN
leaves at once. Its routing id starts with ``PROBE_PREFIX``, and the host
sends its answer (the next Welcome, Redirect or Refused for that node) back
over that connection through its ROUTER, the one exception to "replies never
travel back". The probe socket closes on the answer, on the next probe to the
same node, or ``PROBE_LIFE`` seconds after it opened. Of what comes back on
it, only an answer from the probed node is taken: with a secret, the server
end of that connection proves the session's key, not the host's identity.

A link to a member (or to the host we join) has a socket monitor for its
lifetime, closed with it: when its connection drops (the kernel at the other
end reset it, as it does at once when a process dies), ``dropped_io``
reports its peer, and the core takes that as a suspicion to confirm
(``Node.suspect``), never as proof. Registered in the I/O thread's poller
(``watch_io``), a monitor wakes the loop as soon as the drop is seen. A
monitor costs two more zmq sockets, so strangers' links (up to
``max_links``) get none unless their handshake must be watched.

Links are a bounded resource: at most ``max_links`` of them are open to
peers that are not members (a stranger's Hello, a rival's advert, a banned
player's restarts each name a new peer id). Members' links are kept; others
are closed after ``link_idle`` seconds unused, soon after a Refused went on
them or their peer stopped being a member, and oldest first when the cap is
reached.

Only the I/O thread may call a Transport (``*_io`` in the names of its callers).
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import zmq
from zmq.utils.monitor import recv_monitor_message

from ._probes import ANSWERS, PROBE_LIFE, PROBE_PREFIX, Probes
from .core.ids import identity_of
from .core.node import Send
from .errors import ProtocolError
from .identity import Identity, fingerprint
from .messages import (
    Hello,
    Message,
    Refused,
    Welcome,
    from_batch,
    to_frame,
)
from .session_key import SessionKey

__all__ = ["BATCH_BYTES", "BATCH_MESSAGES", "PROBE_LIFE", "Transport", "valid_endpoint"]

#: What one link sends as one frame at most (a bigger message goes alone).
#: Messages for one peer made in one pass of the I/O loop travel together:
#: one zmq send, one wake-up of the receiver, instead of one per message.
BATCH_BYTES = 256 * 1024
#: Fewer than a receiver takes (MAX_BATCH): the next process of a pipeline
#: (the successor of a host) starts on a batch while the next one is made.
BATCH_MESSAGES = 128
#: Seconds a link stays open after a Refused went on it, or after its peer
#: stopped being a member: time for the last message to leave.
RETIRE_AFTER = 1.0
SWEEP_INTERVAL = 0.25

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
    # Its connection's events: drops, and handshakes on secured links.
    monitor: zmq.Socket[bytes] | None = None
    used: float = 0.0  # when we last sent or heard on it (the clock of sweep_io)
    member: bool = False  # to a member at the last sweep: kept open
    retired: bool = False  # refused, or no longer a member: closed soon


# RFC 27: where libzmq asks who may connect, in each context.
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_HANDSHAKE_FAILED = _HANDSHAKE_EVENTS & ~zmq.EVENT_HANDSHAKE_SUCCEEDED


class Transport:
    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        node_id: str,
        addresses: list[str],
        *,
        max_frame_size: int,
        send_hwm: int = 10_000,
        session_key: SessionKey | None = None,
        identity: Identity | None = None,
        max_links: int = 256,
        link_idle: float = 30.0,
    ) -> None:
        self._ctx = context
        self.node_id = node_id
        self.max_frame_size = max_frame_size
        # A batch must pass the receiver's MAXMSGSIZE (libzmq drops a bigger
        # frame and the connection with it): peers of a session share options.
        self._batch_bytes = min(BATCH_BYTES, max_frame_size)
        self._send_hwm = send_hwm
        self.stats: Counter[str] = Counter()
        # Least recently used first: the order in which non-members' links go.
        self._links: OrderedDict[str, _Link] = OrderedDict()
        self.max_links, self.link_idle = max_links, link_idle
        self._now = 0.0  # the clock of the latest sweep_io
        self._next_sweep = 0.0
        self._members: Callable[[], Collection[str]] = tuple  # as sweep_io was given
        self._queued: list[_Link] = []  # links with messages to send in flush_io
        self._last_msg: Message | None = None
        self._last_frame = b""
        self._local_nets = [_network(a) for a in addresses]
        if session_key is not None and identity is None:
            raise ValueError("a secured transport needs this installation's identity")
        self._session_key, self._identity = session_key, identity
        self._probes = Probes(
            context,
            max_frame_size=max_frame_size,
            stats=self.stats,
            on_bad=self._bad,
            session_key=session_key,
            identity=identity,
        )
        self.secured = session_key is not None
        self._unproven: dict[str, _Link] = {}  # links whose handshake we watch
        self._failed_handshakes: list[str] = []
        self._monitored: dict[object, str] = {}  # monitor socket -> its link's node id
        self._dropped: list[str] = []  # links whose connection dropped, not yet reported
        self._poller: zmq.Poller | None = None
        # node id -> the routing id of the probe connection it last spoke on
        # (host), and when: its answer goes back there
        self._answer_on: dict[str, tuple[bytes, float]] = {}
        self.zap: zmq.Socket[bytes] | None = None
        if session_key is not None:
            # Bound before the ROUTER: with no handler there, libzmq would let
            # clients in without telling us who they are.
            self.zap = context.socket(zmq.REP)
            self.zap.setsockopt(zmq.LINGER, 0)
            self.zap.bind(ZAP_ENDPOINT)
        self.router, self.endpoints = _bound_router(context, addresses, max_frame_size, session_key)

    # ------------------------------------------------------------ receiving

    def receive_io(self, limit: int = 1000) -> list[Message]:
        """Decode up to *limit* waiting messages; bad frames are dropped and
        counted, and so, with a secret, is what a sender sends in another's name."""
        out = self._probes.answers_io()
        for _ in range(limit):
            try:
                got = self._recv_frame_io()
            except zmq.Again:
                break
            if got is None:
                continue
            body, proven, route = got
            try:
                msgs = from_batch(body, max_size=self.max_frame_size)
            except ProtocolError as exc:
                self._bad(str(exc))
                continue
            self.stats["frames"] += 1
            for msg in msgs:
                if self.secured and (not proven or identity_of(msg.sender) != proven):
                    self._forged(msg.sender, proven)
                    continue
                link = self._links.get(msg.sender)
                if link is not None:
                    link.heard = True
                    self._touch(msg.sender, link)
                    if route.startswith(PROBE_PREFIX):  # a known peer's probe
                        self._answer_on[msg.sender] = (route, self._now)
                out.append(msg)
        return out

    def readable(self, ready: Collection[object]) -> bool:
        """Whether the poller found a message waiting: on the ROUTER, or an
        answer on one of our probes' sockets."""
        return self.router in ready or self._probes.readable(ready)

    def _recv_frame_io(self) -> tuple[bytes, object, bytes] | None:
        """The body of the next message (None: malformed, counted), with a
        secret the identity its sender's key proved, which our ZAP handler set
        as the connection's User-Id, and the connection's routing id. Raises
        zmq.Again when nothing waits."""
        if not self.secured:
            frames = self.router.recv_multipart(zmq.NOBLOCK, copy=True)
            if len(frames) != 2:
                self._bad("wrong frame count")
                return None
            return frames[1], None, frames[0]
        parts = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
        if len(parts) != 2:
            self._bad("wrong frame count")
            return None
        try:
            proven: object = parts[1].get("User-Id")
        except zmq.ZMQError:
            proven = None
        return parts[1].bytes, proven, parts[0].bytes

    def _forged(self, claimed: str, proven: object) -> None:
        self.stats["forged_senders"] += 1
        level = logging.WARNING if self.stats["forged_senders"] == 1 else logging.DEBUG
        log.log(
            level,
            "dropped a message from identity %s in the name of %.40r; %d so far",
            proven,
            claimed,
            self.stats["forged_senders"],
        )

    def serve_zap_io(self) -> None:
        """Answer libzmq's pending ZAP requests: any client that completed the
        CURVE handshake knows the secret and may connect; its user id is the
        identity of the key it proved."""
        if self.zap is None:
            return
        while True:
            try:
                request = self.zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.zap.send_multipart(_zap_reply(request))

    def _bad(self, why: str) -> None:
        self.stats["bad_frames"] += 1
        # A hostile sender can repeat this endlessly: warn once, then debug.
        level = logging.WARNING if self.stats["bad_frames"] == 1 else logging.DEBUG
        log.log(level, "dropped a bad frame (%s); %d so far", why, self.stats["bad_frames"])

    # ------------------------------------------------------------ sending

    def send_io(self, send: Send) -> None:
        if send.fresh:
            self._probe_io(send)
            return
        if self._answered(send):
            return
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
        self._touch(send.to, link)
        if isinstance(send.msg, Welcome):  # let in: a member, even if it leaves before a sweep
            link.member, link.retired = True, False
        link.retired = link.retired or isinstance(send.msg, Refused)
        if isinstance(send.msg, Hello) and not link.heard and len(link.endpoints) > 1:
            # Still no word from X on this address: its first address may be on an
            # interface we can't reach (VPN, container bridge). Try the next one.
            self._rotate(link)
        link.heard = False if isinstance(send.msg, Hello) else link.heard
        if send.msg is not self._last_msg:  # one change for many peers: encode it once
            self._last_msg, self._last_frame = send.msg, to_frame(send.msg)
        frame = self._last_frame
        if link.queued and (
            link.queued_bytes + len(frame) > self._batch_bytes or len(link.queued) >= BATCH_MESSAGES
        ):
            self._send_queued(link)
        if not link.queued:
            self._queued.append(link)
        link.queued.append(frame)
        link.queued_bytes += len(frame)

    def _probe_io(self, send: Send) -> None:
        """Send *send* over a new connection of its own (see the module),
        replacing our last probe of the same node (its SYN may be lost)."""
        endpoints = sorted((e for e in send.endpoints if valid_endpoint(e)), key=self._preference)
        if not endpoints:
            self.stats["no_valid_endpoint"] += 1
            return
        self._probes.open_io(send, endpoints[0], self._now)

    def _answered(self, send: Send) -> bool:
        """Host: send an answer to a probe back over the probe's connection
        (its link's may be stuck); True if it went there."""
        if not isinstance(send.msg, ANSWERS) or send.to not in self._links:
            return False
        route = self._answer_on.pop(send.to, None)
        if route is None:
            return False
        try:
            self.router.send_multipart([route[0], to_frame(send.msg)], zmq.NOBLOCK)
        except zmq.ZMQError:  # gone, or its queue is full: the link still carries it
            return False
        self.stats["probe_answers_sent"] += 1
        return True

    def flush_io(self) -> None:
        """Send what ``send_io`` queued: one frame per peer, in order.
        A probe's connection carries only the answer the core made to it
        in the step that handled it: a later answer goes over the link
        (the prober may have closed the probe since, and the ROUTER drops
        what it sends to a closed connection without a word)."""
        for link in self._queued:
            if link.queued:
                self._send_queued(link)
        self._queued.clear()
        self._answer_on.clear()

    def _send_queued(self, link: _Link) -> None:
        # msgpack objects laid end to end: a batch of one is a plain message.
        count = len(link.queued)
        frame = link.queued[0] if count == 1 else b"".join(link.queued)
        link.queued.clear()
        link.queued_bytes = 0
        try:
            link.socket.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            self.stats["send_queue_full"] += count  # messages lost, not frames

    def forget_io(self, node_id: str) -> None:
        link = self._links.pop(node_id, None)
        if link is not None:
            if link.queued:
                self._send_queued(link)
            self._close_monitor(node_id, link)
            link.socket.close(linger=0)
            self.stats["links_closed"] += 1
            self.stats["links"] = len(self._links)

    def sweep_io(self, now: float, members: Callable[[], Collection[str]]) -> None:
        """Keep the clock of the links; a few times a second, close those no
        longer needed: to non-members, unused for ``link_idle`` seconds, or
        ``RETIRE_AFTER`` after a Refused went or their peer left *members*
        (the ids whose links are kept, asked only then)."""
        self._now, self._members = now, members
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        self._probes.sweep(now)
        keep = members()
        for node_id, link in list(self._links.items()):
            if node_id in keep:
                link.member, link.retired = True, False
                if link.monitor is None:  # it became a member: watch its drops
                    self._watch(node_id, link, zmq.EVENT_DISCONNECTED)
                continue
            if link.member:  # it left, was removed or banned
                link.member, link.retired = False, True
            idle = now - link.used
            if idle >= self.link_idle or (link.retired and idle >= RETIRE_AFTER):
                self.forget_io(node_id)

    def _touch(self, node_id: str, link: _Link) -> None:
        link.used = self._now
        self._links.move_to_end(node_id)

    def _make_room(self, keep: Collection[str]) -> None:
        """At the cap, close the least recently used links to non-members
        (not in *keep*). Members' links are never closed here: they may go
        past the cap."""
        for node_id in [i for i, link in self._links.items() if i not in keep]:
            if len(self._links) < self.max_links:
                return
            self.forget_io(node_id)
            self.stats["links_evicted"] += 1

    def _connect(self, node_id: str, endpoints: tuple[str, ...]) -> _Link:
        # Membership asked now, not at the last sweep: a member that joined
        # since is kept, and one that leaves before the next sweep is seen to.
        keep = self._members()
        if len(self._links) >= self.max_links:
            self._make_room(keep)
        ordered = sorted(endpoints, key=self._preference)
        sock: zmq.Socket[bytes] = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self._send_hwm)
        # Soon after a drop: a live peer (a blip) must answer a probe within
        # the core's suspect window; a dead one backs off to the max.
        sock.setsockopt(zmq.RECONNECT_IVL, 10)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        link = _Link(sock, tuple(ordered), 0, heard=True, used=self._now)
        link.member = node_id in keep
        if self._session_key is not None and self._identity is not None:
            sock.setsockopt(zmq.CURVE_SERVERKEY, self._session_key.public_key)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self._identity.public_key)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self._identity.secret_key)
            self._watch(node_id, link, zmq.EVENT_DISCONNECTED | _HANDSHAKE_EVENTS)
            self._unproven[node_id] = link
        elif link.member:
            self._watch(node_id, link, zmq.EVENT_DISCONNECTED)
        # After the monitor, so no event can come before we listen.
        sock.connect(ordered[0])
        self._links[node_id] = link
        self.stats["links"] = len(self._links)
        return link

    def _watch(self, node_id: str, link: _Link, events: int) -> None:
        """Give *link* its monitor (see the module)."""
        monitor = link.socket.get_monitor_socket(events)
        link.monitor = monitor
        self._monitored[monitor] = node_id
        if self._poller is not None:
            self._poller.register(monitor, zmq.POLLIN)

    def handshake_failures_io(self) -> list[str]:
        """Node ids whose handshake failed since the last call: they do not
        know the session's secret (or we don't). A link stops being watched
        once a handshake succeeds."""
        for node_id, link in list(self._unproven.items()):
            self._read_monitor(node_id, link)
        failed, self._failed_handshakes = self._failed_handshakes, []
        return failed

    def watch_io(self, poller: zmq.Poller) -> None:
        """Register every link's monitor in the I/O thread's *poller*, now
        and as links come and go, so that a drop wakes the loop at once."""
        self._poller = self._probes.poller = poller
        for monitor in self._monitored:
            poller.register(monitor, zmq.POLLIN)

    def dropped_io(self, ready: Collection[object]) -> list[str]:
        """Node ids whose link's connection dropped, read from the monitors
        among *ready* (what the poller returned): a suspicion, not proof."""
        for node_id in [self._monitored[m] for m in ready if m in self._monitored]:
            link = self._links.get(node_id)
            if link is not None:
                self._read_monitor(node_id, link)
        dropped, self._dropped = self._dropped, []
        return dropped

    def _read_monitor(self, node_id: str, link: _Link) -> None:
        """Drain one link's monitor: note drops and handshake outcomes."""
        while link.monitor is not None:
            try:
                event = recv_monitor_message(link.monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                return
            if event == zmq.EVENT_DISCONNECTED:
                self.stats["links_dropped"] += 1
                if node_id not in self._dropped:
                    self._dropped.append(node_id)
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._unproven.pop(node_id, None)
            elif event & _HANDSHAKE_FAILED and node_id in self._unproven:
                self.stats["failed_handshakes"] += 1
                if node_id not in self._failed_handshakes:
                    self._failed_handshakes.append(node_id)

    def _close_monitor(self, node_id: str, link: _Link) -> None:
        self._unproven.pop(node_id, None)
        if link.monitor is not None:
            self._monitored.pop(link.monitor, None)
            if self._poller is not None:
                self._poller.unregister(link.monitor)
            link.socket.disable_monitor()
            link.monitor.close(linger=0)
            link.monitor = None

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
        self._probes.close_all()
        for node_id in list(self._links):
            self.forget_io(node_id)
        self.router.close(linger=0)
        if self.zap is not None:
            self.zap.close(linger=0)


def _zap_reply(request: list[bytes]) -> list[bytes]:
    """The ZAP reply (RFC 27) to *request*: 200 with the client's identity as
    user id for a CURVE client, 400 for anything else."""
    request_id = request[1] if len(request) > 1 else b""
    if len(request) == 7 and request[0] == b"1.0" and request[5] == b"CURVE":
        try:
            identity = fingerprint(request[6])
        except ValueError:
            pass
        else:
            return [b"1.0", request_id, b"200", b"OK", identity.encode(), b""]
    return [b"1.0", request_id, b"400", b"CURVE only", b"", b""]


def valid_endpoint(endpoint: str) -> bool:
    """Whether *endpoint* is ``tcp://<IP literal>:<port>``: the only kind we
    connect to, so a peer cannot make us resolve names or open files."""
    if not endpoint.startswith("tcp://"):
        return False
    host, _, port = endpoint[6:].rpartition(":")
    # isdigit() alone takes "²", which int() refuses: ASCII digits only.
    if not (port.isascii() and port.isdigit() and len(port) <= 5) or not 0 < int(port) < 65536:
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


def _bound_router(
    context: zmq.Context[zmq.Socket[bytes]],
    addresses: list[str],
    max_frame_size: int,
    session_key: SessionKey | None,
) -> tuple[zmq.Socket[bytes], tuple[str, ...]]:
    """Our ROUTER, bound on one port on every address (or any free port
    where that one is taken), and the endpoints it is bound at."""
    router: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
    if session_key is not None:
        router.setsockopt(zmq.CURVE_SERVER, 1)
        router.setsockopt(zmq.CURVE_SECRETKEY, session_key.secret_key)
    router.setsockopt(zmq.LINGER, 0)
    # A stranger can't make us allocate more than this for one frame.
    router.setsockopt(zmq.MAXMSGSIZE, max_frame_size)
    router.setsockopt(zmq.RCVHWM, 100_000)
    port = 0
    endpoints: list[str] = []
    for address in addresses:
        host = f"[{address}]" if ":" in address else address
        try:
            router.bind(f"tcp://{host}:{port or '*'}")
        except zmq.ZMQError:
            router.bind(f"tcp://{host}:*")  # that port is taken on this address
        bound = router.getsockopt(zmq.LAST_ENDPOINT)
        assert isinstance(bound, bytes)
        endpoint = bound.decode()
        port = port or int(endpoint.rsplit(":", 1)[1])
        endpoints.append(endpoint)
    return router, tuple(endpoints)
