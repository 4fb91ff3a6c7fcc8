"""mDNS / DNS-SD adapter: the host of a session advertises it, peers browse for it.

One :class:`Discovery` owns one python-zeroconf instance bound to an explicit list
of interface addresses (never "all interfaces"), and runs everything on that
instance's event-loop thread. Records read from the network are untrusted: an
unusable advertisement is dropped with a debug log and never raises.

A one-shot browse() also sends legacy unicast queries (RFC 6762 6.7) from its
own short-lived sockets, which existing hosts answer within milliseconds instead
of the up to ~1.1 s a multicast browse can take (see _LegacyQuery).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
import os
import re
import secrets
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import ifaddr

# The DNS* classes are public API but missing from zeroconf's __all__, which mypy
# --strict (no implicit re-export) goes by; the ignore does not make them Any.
from zeroconf import (  # type: ignore[attr-defined]
    DNSAddress,
    DNSIncoming,
    DNSOutgoing,
    DNSPointer,
    DNSQuestion,
    DNSQuestionType,
    DNSService,
    DNSText,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf import Error as ZeroconfError
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo

from .core.advert import MAX_TXT_ENTRY_BYTES, MAX_TXT_TOTAL_BYTES

__all__ = [
    "ENV_INTERFACES",
    "SERVICE_TYPE",
    "Discovery",
    "HostRecord",
    "WatchCallback",
    "node_label",
    "resolve_interfaces",
]

log = logging.getLogger(__name__)

SERVICE_TYPE: Final = "_p2pstate._tcp.local."
ENV_INTERFACES: Final = "P2PSTATE_INTERFACES"

# TXT keys owned by this module; user properties may not use them.
_KEY_APP: Final = "app"
_KEY_SESSION: Final = "session"
_KEY_NODE_ID: Final = "id"
_KEY_HOST_NAME: Final = "name"
_KEY_EPOCH: Final = "epoch"
_KEY_SESSION_ID: Final = "sid"
_RESERVED_KEYS: Final = frozenset(
    {_KEY_APP, _KEY_SESSION, _KEY_NODE_ID, _KEY_HOST_NAME, _KEY_EPOCH, _KEY_SESSION_ID}
)

# RFC 6763 6.1: one TXT string holds at most 255 bytes; the total cap keeps the
# whole answer (PTR+SRV+TXT+A) inside one typical 1500-byte Ethernet frame.
_MAX_TXT_ENTRY_BYTES: Final = MAX_TXT_ENTRY_BYTES
_MAX_TXT_TOTAL_BYTES: Final = MAX_TXT_TOTAL_BYTES
_MAX_LABEL_BYTES: Final = 63
_MAX_EPOCH_DIGITS: Final = 20
_MAX_NODE_ID_CHARS: Final = 128

# Short TTL (RFC default for PTR/TXT is 75 min) so a host that vanished without
# a goodbye (crash, cable pulled) drops out of peers' lists within ~2 minutes.
_RECORD_TTL_S: Final = 120
_RESOLVE_TIMEOUT_MS: Final = 3000
# Upper bound for waiting on the zeroconf loop; real operations take milliseconds.
_LOOP_CALL_TIMEOUT_S: Final = 10.0

# One-shot "legacy unicast" queries (RFC 6762 6.7), see _LegacyQuery.
_MDNS_GROUP_V4: Final = "224.0.0.251"
_MDNS_PORT: Final = 5353
_TYPE_A: Final = 1
_TYPE_PTR: Final = 12
_TYPE_TXT: Final = 16
_TYPE_SRV: Final = 33
_CLASS_IN: Final = 1
# Send times (seconds after the start of browse), then doubling like zeroconf's
# browser; answers arrive in under a millisecond, the repeats cover lost packets.
_LEGACY_SEND_AT_S: Final = (0.0, 0.05, 0.15, 0.4, 1.0)
# A follow-up query for an answer that lacked its SRV/TXT/A is repeated at this
# interval, at most _LEGACY_FOLLOW_UP_TRIES times per instance.
_LEGACY_FOLLOW_UP_RETRY_S: Final = 0.1
_LEGACY_FOLLOW_UP_TRIES: Final = 4
# RFC 6762 17: an mDNS message is at most 9000 bytes; larger datagrams are cut and
# then fail to parse. Instances/addresses remembered per browse are capped so a
# flood of made-up answers cannot grow memory without bound.
_LEGACY_MAX_PACKET: Final = 9000
_LEGACY_MAX_NAMES: Final = 256
_MAX_ADDRESSES_PER_HOST: Final = 16
_LEGACY_MAX_PACKETS_PER_WAKE: Final = 64

# "<identity>.<instance>" (see core/ids.py); plain hex is accepted from older peers.
_NODE_ID_RE: Final = re.compile(r"[0-9a-fA-F]+(\.[0-9a-fA-F]+)?")
_EPOCH_RE: Final = re.compile(r"[0-9]+")
_NON_LABEL_CHARS_RE: Final = re.compile(r"[^a-z0-9]+")
_APP_PREFIX_CHARS: Final = 24

# Linux <net/if.h> flags, read from /sys/class/net/<ifname>/flags.
_IFF_UP: Final = 0x1
_IFF_RUNNING: Final = 0x40
_IFF_MULTICAST: Final = 0x1000
_LINK_LOCAL_V4: Final = ipaddress.IPv4Network("169.254.0.0/16")


@dataclass(frozen=True, kw_only=True)
class HostRecord:
    """A session host as advertised over mDNS."""

    app: str
    session: str
    node_id: str
    host_name: str
    endpoints: tuple[str, ...]
    epoch: int
    session_id: str
    properties: dict[str, str] = field(default_factory=dict)


WatchCallback = Callable[[str, HostRecord | None, str], None]
"""``callback(kind, record, service_name)``; kind is "added", "updated" or "removed"."""


# --------------------------------------------------------------------------- interfaces


def resolve_interfaces(interfaces: Sequence[str] | None) -> list[str]:
    """Pick the interface addresses mDNS should use.

    Explicit list, else env var ``P2PSTATE_INTERFACES`` (comma separated), else
    all IPv4 addresses of this machine's up, multicast-capable interfaces,
    skipping 169.254.x link-local; 127.0.0.1 only when nothing else is usable.
    Raises ValueError for an empty explicit list or a string that is not an IP.
    """
    if interfaces is not None:
        result = _normalise_addresses(interfaces, source="interfaces")
        if not result:
            raise ValueError("interfaces: at least one interface address is required")
        return result
    env = os.environ.get(ENV_INTERFACES, "")
    if env.strip():
        result = _normalise_addresses(env.split(","), source=ENV_INTERFACES)
        if not result:
            raise ValueError(f"{ENV_INTERFACES}={env!r} names no interface address")
        return result
    return _local_ipv4_addresses()


def _normalise_addresses(raw: Sequence[str], *, source: str) -> list[str]:
    # A bare string is a Sequence[str] too; iterating it would yield characters.
    if isinstance(raw, str):
        raise TypeError(f"{source}: expected a sequence of addresses, got the string {raw!r}")
    result: list[str] = []
    for item in raw:
        text = item.strip()
        if not text:
            continue
        try:
            addr = str(ipaddress.ip_address(text))
        except ValueError:
            raise ValueError(f"{source}: {text!r} is not an IP address") from None
        if addr not in result:
            result.append(addr)
    return result


def _local_ipv4_addresses() -> list[str]:
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        if not _adapter_usable(adapter.name):
            continue
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):  # IPv6 entries are tuples
                continue
            try:
                addr = ipaddress.IPv4Address(ip.ip)
            except ValueError:
                continue
            if addr.is_loopback or addr in _LINK_LOCAL_V4 or addr.is_unspecified:
                continue
            if str(addr) not in found:
                found.append(str(addr))
    if not found:
        log.debug("no usable LAN interface found, falling back to 127.0.0.1")
        return ["127.0.0.1"]
    return found


def _adapter_usable(name: str) -> bool:
    """True unless the OS says the interface is down or cannot multicast."""
    if not sys.platform.startswith("linux"):
        # ifaddr only lists configured addresses; there is no portable stdlib
        # way to read link flags elsewhere, so trust it.
        return True
    base = name.split(":", 1)[0]  # "eth0:1" alias labels share eth0's flags
    try:
        with open(f"/sys/class/net/{base}/flags", encoding="ascii") as fh:
            flags = int(fh.read().strip(), 16)
    except (OSError, ValueError):
        return True
    wanted = _IFF_UP | _IFF_RUNNING | _IFF_MULTICAST
    return flags & wanted == wanted


# --------------------------------------------------------------------------- advert encoding


@dataclass(frozen=True, kw_only=True)
class _AdSpec:
    app: str
    session: str
    node_id: str
    host_name: str
    port: int
    addresses: tuple[str, ...]
    epoch: int
    session_id: str
    properties: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Advert:
    spec: _AdSpec
    info: ServiceInfo


#: Ends the instance name of a candidate's record (a node still looking for a
#: host, epoch 0). It must differ from the name the node uses once it hosts:
#: the goodbyes of a withdrawn candidate record go on for a while, and one for
#: a shared name would delete the host record that replaced it from caches.
CANDIDATE_SUFFIX: Final = "-c"


def is_candidate_name(name: str) -> bool:
    """Whether service *name* (as a watch reports it) is a candidate's record."""
    return name.split(".", 1)[0].lower().endswith(CANDIDATE_SUFFIX)


def node_label(node_id: str) -> str:
    """The part of a record's instance name that names its node: up to 16
    characters of the identity and 8 of the instance (at most 25), so that two
    copies run from one installation advertise under different names."""
    identity, _, instance = node_id.partition(".")
    return identity[:16] + (f"-{instance[:8]}" if instance else "")


def _instance_name(app: str, node_id: str, *, candidate: bool = False) -> str:
    prefix = _NON_LABEL_CHARS_RE.sub("-", app.lower()).strip("-")[:_APP_PREFIX_CHARS].strip("-")
    label = f"{prefix or 'p2p'}-{node_label(node_id)}" + (CANDIDATE_SUFFIX if candidate else "")
    assert len(label.encode()) <= _MAX_LABEL_BYTES
    return label


def _validate_spec(spec: _AdSpec) -> None:
    for fname, value in (
        ("app", spec.app),
        ("session", spec.session),
        ("session_id", spec.session_id),
    ):
        if not value:
            raise ValueError(f"{fname} must not be empty")
    if len(spec.node_id) > _MAX_NODE_ID_CHARS or not _NODE_ID_RE.fullmatch(spec.node_id):
        raise ValueError(f"node_id must be a non-empty hex string, got {spec.node_id!r}")
    if not 1 <= spec.port <= 65535:
        raise ValueError(f"port must be in 1..65535, got {spec.port}")
    if spec.epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {spec.epoch}")
    if not spec.addresses:
        raise ValueError("addresses: at least one address to advertise is required")
    for addr in spec.addresses:
        ip = ipaddress.ip_address(addr)
        if ip.is_unspecified or ip.is_multicast:
            raise ValueError(f"addresses: {addr} cannot be connected to")


def check_txt(
    *,
    app: str,
    session: str,
    node_id: str,
    host_name: str,
    session_id: str,
    properties: Mapping[str, str],
) -> None:
    """Raise ValueError (or TypeError) if an advertisement with these
    properties would not fit mDNS's TXT record limits, before anyone relies
    on it being advertised."""
    spec = _AdSpec(
        app=app,
        session=session,
        node_id=node_id,
        host_name=host_name,
        port=1,
        addresses=("127.0.0.1",),
        epoch=1,
        session_id=session_id or "-",
        properties=tuple(properties.items()),
    )
    _build_txt(spec)


def _build_txt(spec: _AdSpec) -> dict[str, str]:
    txt = {
        _KEY_APP: spec.app,
        _KEY_SESSION: spec.session,
        _KEY_NODE_ID: spec.node_id,
        _KEY_HOST_NAME: spec.host_name,
        _KEY_EPOCH: str(spec.epoch),
        _KEY_SESSION_ID: spec.session_id,
    }
    seen_lower: set[str] = set(_RESERVED_KEYS)
    for key, value in spec.properties:
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"TXT properties must map str to str, got {key!r}: {value!r}")
        # RFC 6763 6.4: keys are printable ASCII without '=', compared case-insensitively.
        if not key or "=" in key or not all(" " <= ch <= "~" for ch in key):
            raise ValueError(f"TXT key {key!r} must be non-empty printable ASCII without '='")
        if key.lower() in seen_lower:
            what = "is reserved" if key.lower() in _RESERVED_KEYS else "is a duplicate"
            raise ValueError(f"TXT key {key!r} {what} (keys are case-insensitive)")
        seen_lower.add(key.lower())
        txt[key] = value
    total = 0
    for key, value in txt.items():
        size = len(key.encode()) + 1 + len(value.encode())
        if size > _MAX_TXT_ENTRY_BYTES:
            raise ValueError(
                f"TXT entry {key!r} is {size} bytes encoded; "
                f"key=value must be <= {_MAX_TXT_ENTRY_BYTES}"
            )
        total += 1 + size  # one length byte per string
    if total > _MAX_TXT_TOTAL_BYTES:
        raise ValueError(
            f"TXT record is {total} bytes encoded; the limit is {_MAX_TXT_TOTAL_BYTES}"
        )
    return txt


def _build_info(spec: _AdSpec) -> ServiceInfo:
    _validate_spec(spec)
    instance = _instance_name(spec.app, spec.node_id, candidate=spec.epoch == 0)
    return ServiceInfo(
        SERVICE_TYPE,
        f"{instance}.{SERVICE_TYPE}",
        port=spec.port,
        properties=_build_txt(spec),
        server=f"{instance}.local.",
        host_ttl=_RECORD_TTL_S,
        other_ttl=_RECORD_TTL_S,
        parsed_addresses=list(spec.addresses),
    )


# --------------------------------------------------------------------------- advert decoding


def _record_from_info(info: ServiceInfo) -> HostRecord | None:
    """Decode a resolved service; None (with a debug log) if it is unusable."""
    name = info.name
    txt: dict[str, str] = {}
    for raw_key, raw_value in info.properties.items():
        try:
            key = raw_key.decode("utf-8")
            value = "" if raw_value is None else raw_value.decode("utf-8")
        except UnicodeDecodeError:
            log.debug("ignoring non-UTF-8 TXT entry %r in %s", raw_key, name)
            continue
        txt[key] = value
    missing = [key for key in sorted(_RESERVED_KEYS) if key not in txt]
    if missing:
        log.debug("ignoring %s: TXT lacks %s", name, ",".join(missing))
        return None
    app, session, sid = txt[_KEY_APP], txt[_KEY_SESSION], txt[_KEY_SESSION_ID]
    node_id, epoch_text = txt[_KEY_NODE_ID], txt[_KEY_EPOCH]
    if not app or not session or not sid:
        log.debug("ignoring %s: empty app/session/sid", name)
        return None
    if len(node_id) > _MAX_NODE_ID_CHARS or not _NODE_ID_RE.fullmatch(node_id):
        log.debug("ignoring %s: bad node id %r", name, node_id)
        return None
    if len(epoch_text) > _MAX_EPOCH_DIGITS or not _EPOCH_RE.fullmatch(epoch_text):
        log.debug("ignoring %s: bad epoch %r", name, epoch_text)
        return None
    endpoints = _endpoints(info)
    if not endpoints:
        log.debug("ignoring %s: no usable endpoint (port %r)", name, info.port)
        return None
    return HostRecord(
        app=app,
        session=session,
        node_id=node_id,
        host_name=txt[_KEY_HOST_NAME],
        endpoints=endpoints,
        epoch=int(epoch_text),
        session_id=sid,
        properties={k: v for k, v in txt.items() if k not in _RESERVED_KEYS},
    )


def _endpoints(info: ServiceInfo) -> tuple[str, ...]:
    port = info.port
    if port is None or not 1 <= port <= 65535:
        return ()
    result: list[str] = []
    for text in info.parsed_scoped_addresses():
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if ip.is_unspecified or ip.is_multicast:
            continue
        endpoint = f"tcp://[{text}]:{port}" if ip.version == 6 else f"tcp://{text}:{port}"
        if endpoint not in result:
            result.append(endpoint)
    return tuple(result)


def _matches(record: HostRecord, app: str | None, session: str | None) -> bool:
    return (app is None or record.app == app) and (session is None or record.session == session)


# --------------------------------------------------------------------------- watching


class _Watch:
    """One continuous browse. Lives on the zeroconf loop thread after start."""

    def __init__(
        self,
        zc: Zeroconf,
        app: str | None,
        session: str | None,
        callback: WatchCallback,
    ) -> None:
        self._zc = zc
        self._app = app
        self._session = session
        self._callback = callback
        self._browser: AsyncServiceBrowser | None = None
        self._known: dict[str, HostRecord] = {}
        # Latest event number per service name: a slow resolve that finishes after a
        # newer event (or a removal) for the same name must not deliver stale data.
        self._latest: dict[str, int] = {}
        self._counter = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # Set from any thread; read on the loop before every delivery.
        self.stopped = False

    async def async_start(self) -> None:
        if self.stopped:
            return
        # QM (multicast) questions: a unicast (QU) answer is sent to ip:5353, and
        # with several zeroconf sockets sharing that port on one machine (two game
        # copies, or tests) the kernel hands it to just one of them.
        self._browser = AsyncServiceBrowser(
            self._zc,
            [SERVICE_TYPE],
            handlers=[self._on_state_change],
            question_type=DNSQuestionType.QM,
        )

    async def async_stop(self) -> None:
        self.stopped = True
        browser, self._browser = self._browser, None
        if browser is not None:
            await browser.async_cancel()
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        self._known.clear()
        self._latest.clear()

    def _on_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        # Runs on the zeroconf loop: must neither block nor raise.
        try:
            if self.stopped:
                return
            if state_change is ServiceStateChange.Removed:
                self._latest.pop(name, None)
                self._forget(name)
                return
            self._counter += 1
            self._latest[name] = self._counter
            task = asyncio.get_running_loop().create_task(
                self._resolve(service_type, name, self._counter)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        except Exception:
            log.exception("mDNS watch failed to handle %s for %s", state_change, name)

    async def _resolve(self, service_type: str, name: str, seq: int) -> None:
        try:
            info = AsyncServiceInfo(service_type, name)
            resolved = await info.async_request(
                self._zc, _RESOLVE_TIMEOUT_MS, question_type=DNSQuestionType.QM
            )
            if self.stopped or self._latest.get(name) != seq:
                return
            if not resolved:
                log.debug("could not resolve %s within %d ms", name, _RESOLVE_TIMEOUT_MS)
                return
            record = _record_from_info(info)
            if record is None:
                return  # garbled: keep whatever we last delivered for this name
            if not _matches(record, self._app, self._session):
                self._forget(name)  # it may have matched before (e.g. session renamed)
                return
            old = self._known.get(name)
            if old == record:
                return  # e.g. an address refresh that changed nothing we expose
            self._known[name] = record
            self._emit("added" if old is None else "updated", record, name)
        except Exception:  # CancelledError is a BaseException and passes through
            log.exception("mDNS watch failed to resolve %s", name)

    def _forget(self, name: str) -> None:
        if self._known.pop(name, None) is not None:
            self._emit("removed", None, name)

    def _emit(self, kind: str, record: HostRecord | None, name: str) -> None:
        try:
            self._callback(kind, record, name)
        except Exception:
            log.exception("mDNS watch callback raised on %s %s", kind, name)


# --------------------------------------------------------------------------- one-shot query


def _open_legacy_socket(address: str) -> socket.socket | None:
    """A UDP socket on an ephemeral port of ``address`` that multicasts out of it only."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if ip.version != 4 or ip.is_unspecified or ip.is_multicast:
        # IPv6 would need an interface index; the multicast browse still covers it.
        log.debug("no legacy mDNS query on %s: IPv4 interface addresses only", address)
        return None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address))
        # Unsigned char: the portable size for these two (OpenBSD requires it).
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, bytes([255]))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, bytes([1]))
        sock.bind((address, 0))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        log.debug("no legacy mDNS query on %s: %s", address, exc)
        return None
    return sock


class _LegacyQuery:
    """A one-shot browse by legacy unicast DNS queries (RFC 6762 6.7).

    Responders rate-limit multicast answers (a record at most once per second,
    RFC 6762 6) and aggregate them for up to 500 ms, so a multicast browse can
    take over a second to hear from a host that was just asked. A query sent
    from a port other than 5353 is a "legacy" query, which python-zeroconf
    answers at once by unicast to that port, with SRV/TXT/A as additionals.
    (QU questions don't help: every copy on one machine shares port 5353 and
    the kernel hands a unicast reply to just one of them.)

    One socket per IPv4 interface address, bound to that address and an
    ephemeral port, sends to 224.0.0.251:5353 out of that interface only.
    A reply counts only if it comes from port 5353 with the id of one of our
    queries; anything else, or anything unusable, is dropped (debug log).
    Every method runs on browse()'s thread, except wake(), which is thread-safe.
    """

    def __init__(
        self, interfaces: Sequence[str], deliver: Callable[[str, HostRecord], None]
    ) -> None:
        self._deliver = deliver
        self._ids: set[int] = set()
        self._started = 0.0
        self._sends = 0
        # Keys are lowercase names (DNS names compare case-insensitively).
        self._instances: dict[str, str] = {}  # key -> instance name as advertised
        self._srv: dict[str, DNSService] = {}
        self._txt: dict[str, DNSText] = {}
        self._addresses: dict[str, dict[bytes, DNSAddress]] = {}  # host key -> records
        self._decoded: dict[str, tuple[object, ...]] = {}  # key -> records last decoded
        self._follow_ups: dict[str, tuple[int, float]] = {}  # key -> (sent, last at)
        self._socks: list[socket.socket] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        for address in interfaces:
            sock = _open_legacy_socket(address)
            if sock is not None:
                self._socks.append(sock)

    def close(self) -> None:
        for sock in (*self._socks, self._wake_r, self._wake_w):
            sock.close()
        self._socks.clear()

    def wake(self) -> None:
        """Make run() look at its stop event now (from any thread)."""
        # OSError: the buffer is full (a wake-up is pending anyway) or run() is over.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def start(self) -> None:
        """Send the first query."""
        self._started = time.monotonic()
        self._send_browse()

    def run(self, deadline: float, stop: threading.Event) -> None:
        """Repeat the query and collect answers until ``deadline`` or ``stop``."""
        if not self._socks:
            return
        with selectors.DefaultSelector() as selector:
            selector.register(self._wake_r, selectors.EVENT_READ, None)
            for sock in self._socks:
                selector.register(sock, selectors.EVENT_READ, sock)
            while not stop.is_set():
                now = time.monotonic()
                if now >= deadline:
                    return
                if now >= self._next_send():
                    self._send_browse()
                until = min(self._next_send(), deadline, self._send_follow_ups(now))
                for key, _ in selector.select(max(0.0, until - now)):
                    if key.data is None:
                        self._drain_wake()
                    else:
                        self._receive(key.data)

    # ------------------------------------------------------------ sending

    def _next_send(self) -> float:
        if self._sends < len(_LEGACY_SEND_AT_S):
            offset = _LEGACY_SEND_AT_S[self._sends]
        else:
            offset = _LEGACY_SEND_AT_S[-1] * 2 ** (self._sends - len(_LEGACY_SEND_AT_S) + 1)
        return self._started + offset

    def _send_browse(self) -> None:
        self._sends += 1
        self._send([DNSQuestion(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN)])

    def _send_follow_ups(self, now: float) -> float:
        """Ask again for what answers lacked; return when to look again."""
        questions: list[DNSQuestion] = []
        due = float("inf")
        for key, name in self._instances.items():
            missing = self._missing(key, name)
            if not missing:
                continue
            sent, last = self._follow_ups.get(key, (0, 0.0))
            if sent >= _LEGACY_FOLLOW_UP_TRIES:
                continue
            if sent and now < last + _LEGACY_FOLLOW_UP_RETRY_S:
                due = min(due, last + _LEGACY_FOLLOW_UP_RETRY_S)
                continue
            questions.extend(missing)
            self._follow_ups[key] = (sent + 1, now)
            if sent + 1 < _LEGACY_FOLLOW_UP_TRIES:
                due = min(due, now + _LEGACY_FOLLOW_UP_RETRY_S)
        if questions:
            self._send(questions)
        return due

    def _missing(self, key: str, name: str) -> list[DNSQuestion]:
        srv = self._srv.get(key)
        missing = []
        if srv is None:
            missing.append(DNSQuestion(name, _TYPE_SRV, _CLASS_IN))
        elif not self._addresses.get(srv.server_key):
            missing.append(DNSQuestion(srv.server, _TYPE_A, _CLASS_IN))  # AAAA come as extras
        if key not in self._txt:
            missing.append(DNSQuestion(name, _TYPE_TXT, _CLASS_IN))
        return missing

    def _send(self, questions: list[DNSQuestion]) -> None:
        for sock in self._socks:
            # A fresh id per packet: responders drop a repeat of an identical
            # query within 800 ms, and replies are matched against these ids.
            query_id = secrets.randbelow(0xFFFF) + 1
            out = DNSOutgoing(0, False, query_id)  # flags 0: standard query
            for question in questions:
                out.add_question(question)
            self._ids.add(query_id)
            for packet in out.packets():
                try:
                    sock.sendto(packet, (_MDNS_GROUP_V4, _MDNS_PORT))
                except OSError as exc:
                    log.debug("legacy mDNS query via %s failed: %s", sock.getsockname()[0], exc)
                    break

    # ------------------------------------------------------------ receiving

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError: drained
            while self._wake_r.recv(64):
                pass

    def _receive(self, sock: socket.socket) -> None:
        for _ in range(_LEGACY_MAX_PACKETS_PER_WAKE):
            try:
                data, source = sock.recvfrom(_LEGACY_MAX_PACKET)
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. an ICMP error reported on the socket
                log.debug("legacy mDNS receive failed: %s", exc)
                return
            self._handle(data, source)

    def _handle(self, data: bytes, source: tuple[str, int]) -> None:
        host, port = source[0], source[1]
        if port != _MDNS_PORT:
            log.debug("legacy mDNS: ignoring a packet from %s:%s (not port 5353)", host, port)
            return
        msg = DNSIncoming(data, (host, port))
        if not msg.valid or not msg.is_response() or msg.id not in self._ids:
            log.debug("legacy mDNS: ignoring an invalid or unasked-for packet from %s", host)
            return
        for record in msg.answers():
            if record.ttl > 0:  # ttl 0 is a goodbye
                self._store(record)
        for key in list(self._instances):
            self._decode(key)

    def _store(self, record: object) -> None:
        suffix = "." + SERVICE_TYPE.lower()
        if isinstance(record, DNSPointer):
            key = record.alias_key
            if (
                record.key == SERVICE_TYPE.lower()
                and key.endswith(suffix)
                and _fits(self._instances, key)
            ):
                self._instances.setdefault(key, record.alias)
        elif isinstance(record, DNSService):
            if record.key.endswith(suffix) and _fits(self._srv, record.key):
                self._srv[record.key] = record
        elif isinstance(record, DNSText):
            if record.key.endswith(suffix) and _fits(self._txt, record.key):
                self._txt[record.key] = record
        elif isinstance(record, DNSAddress) and _fits(self._addresses, record.key):
            known = self._addresses.setdefault(record.key, {})
            if record.address in known or len(known) < _MAX_ADDRESSES_PER_HOST:
                known[record.address] = record

    def _decode(self, key: str) -> None:
        srv, txt = self._srv.get(key), self._txt.get(key)
        if srv is None or txt is None:
            return
        addresses = tuple(self._addresses.get(srv.server_key, ()))
        if not addresses:
            return
        inputs = (srv.port, srv.server_key, txt.text, addresses)
        if self._decoded.get(key) == inputs:
            return  # the same answer again (we ask more than once)
        self._decoded[key] = inputs
        name = self._instances[key]
        try:
            info = ServiceInfo(
                SERVICE_TYPE,
                name,
                port=srv.port,
                weight=srv.weight,
                priority=srv.priority,
                properties=txt.text,
                server=srv.server,
                addresses=list(addresses),
            )
        except (ZeroconfError, TypeError, ValueError) as exc:
            log.debug("ignoring %s: %r", name, exc)
            return
        record = _record_from_info(info)
        if record is not None:
            self._deliver(name, record)


def _fits(table: Mapping[str, object], key: str) -> bool:
    return key in table or len(table) < _LEGACY_MAX_NAMES


# --------------------------------------------------------------------------- discovery


def _new_zeroconf(interfaces: list[str]) -> Zeroconf:
    """A Zeroconf on exactly these interfaces, running its own loop thread.

    Zeroconf attaches to the calling thread's running asyncio loop if there is
    one; the blocking methods of Discovery would then deadlock that loop.
    """
    try:
        return Zeroconf(interfaces=interfaces, use_asyncio=False)
    except TypeError:
        pass  # older zeroconf (e.g. 0.131) has no use_asyncio
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return Zeroconf(interfaces=interfaces)
    # Build it on a helper thread, where no loop runs, so it starts its own.
    with concurrent.futures.ThreadPoolExecutor(1, "p2pstate-zeroconf-init") as pool:
        return pool.submit(Zeroconf, interfaces=interfaces).result()


class _Heard:
    """What one Discovery.browse() heard, from either path (a watch, legacy
    queries), keyed by lowercase name since both may report an instance;
    ``got_one`` is set once a record satisfies *stop_on*."""

    def __init__(
        self,
        app: str | None,
        session: str | None,
        *,
        stop_on: Callable[[HostRecord], bool] | None,
    ) -> None:
        self._app, self._session, self._stop_on = app, session, stop_on
        self._found: dict[str, HostRecord] = {}
        self._lock = threading.Lock()
        self.got_one = threading.Event()
        self.wake: Callable[[], None] = lambda: None  # the legacy query's, once made

    def on_event(self, kind: str, record: HostRecord | None, name: str) -> None:
        with self._lock:
            if record is None:
                self._found.pop(name.lower(), None)
            else:
                self._found[name.lower()] = record
        if record is not None and self._stop_on is not None and self._stop_on(record):
            self.got_one.set()
            self.wake()

    def on_answer(self, name: str, record: HostRecord) -> None:
        # Like a watch: a host that no longer matches is dropped.
        matching = _matches(record, self._app, self._session)
        self.on_event("added", record if matching else None, name)

    def records(self) -> list[HostRecord]:
        with self._lock:
            return list(self._found.values())


class Discovery:
    """Owns one Zeroconf instance bound to the given interfaces.

    Every method is thread-safe. Work runs on zeroconf's own loop thread; the
    calling thread only waits (milliseconds) for it. Methods may also be called
    from a watch callback (which runs on that loop thread): they then schedule
    their work without waiting, except browse(), which would deadlock and raises.
    """

    def __init__(self, interfaces: Sequence[str]) -> None:
        self._interfaces = resolve_interfaces(interfaces)
        self._zc = _new_zeroconf(list(self._interfaces))
        loop = self._zc.loop
        assert loop is not None
        self._loop: asyncio.AbstractEventLoop = loop
        self._lock = threading.Lock()
        self._closed = False
        self._advert: _Advert | None = None
        self._watches: set[_Watch] = set()
        # Keeps the zeroconf calls in submission order on the loop (asyncio.Lock
        # wakes waiters FIFO, and submitted coroutines start in call order).
        self._op_lock = asyncio.Lock()
        # Strong refs to zeroconf's repeat-broadcast tasks so they are not collected;
        # split so close() can drop announcements but let goodbyes finish.
        self._announce_tasks: set[asyncio.Future[Any]] = set()
        self._goodbye_tasks: set[asyncio.Future[Any]] = set()
        log.debug("mDNS discovery started on %s", self._interfaces)

    @property
    def interfaces(self) -> list[str]:
        return list(self._interfaces)

    def __enter__(self) -> Discovery:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---------------------------------------------------------------- advertising

    def advertise(
        self,
        *,
        app: str,
        session: str,
        node_id: str,
        host_name: str,
        port: int,
        addresses: Sequence[str],
        epoch: int,
        session_id: str,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        """Advertise this node as host of app/session (replaces any previous advert).

        Skips the ~0.75 s name probe (the instance name embeds the node id, so it
        is unique) and does not wait for the announcements: returns in ~1 ms.
        Raises ValueError when a field is invalid or the TXT record is too big.
        """
        if isinstance(addresses, str):
            raise TypeError("addresses must be a sequence of strings, not a string")
        spec = _AdSpec(
            app=app,
            session=session,
            node_id=node_id,
            host_name=host_name,
            port=port,
            addresses=tuple(_normalise_addresses(addresses, source="addresses")),
            epoch=epoch,
            session_id=session_id,
            properties=tuple((properties or {}).items()),
        )
        self._publish(lambda _current: spec)

    def update(
        self, *, epoch: int | None = None, properties: Mapping[str, str] | None = None
    ) -> None:
        """Change the advertised epoch and/or replace the extra TXT properties.

        ``properties`` replaces the whole set of extra keys (None keeps them).
        Raises RuntimeError when nothing is being advertised.
        """

        def change(current: _AdSpec | None) -> _AdSpec:
            if current is None:
                raise RuntimeError("update() called while not advertising")
            return replace(
                current,
                epoch=current.epoch if epoch is None else epoch,
                properties=current.properties if properties is None else tuple(properties.items()),
            )

        self._publish(change)

    def withdraw(self) -> None:
        """Stop advertising (peers get a goodbye). Idempotent."""
        with self._lock:
            advert, self._advert = self._advert, None
            if advert is None or self._closed:
                return
            future = self._submit(self._async_unregister(advert.info))
        self._wait(future)

    def _publish(self, make_spec: Callable[[_AdSpec | None], _AdSpec]) -> None:
        started = time.monotonic()
        with self._lock:
            # Derive the new spec under the lock so concurrent update() calls
            # each build on the other's result instead of losing one.
            self._check_open()
            old = self._advert
            spec = make_spec(None if old is None else old.spec)
            info = _build_info(spec)  # validates; raises before any state changes
            advert = _Advert(spec, info)
            self._advert = advert
            future = self._submit(self._async_publish(None if old is None else old.info, info))
        try:
            self._wait(future)
        except BaseException:
            with self._lock:
                if self._advert is advert:
                    self._advert = None
            raise
        log.debug("advertised %s in %.1f ms", info.name, (time.monotonic() - started) * 1000)

    async def _async_publish(self, old: ServiceInfo | None, new: ServiceInfo) -> None:
        async with self._op_lock:
            if old is not None and old.key == new.key:
                self._track(await self._zc.async_update_service(new), self._announce_tasks)
                return
            if old is not None:
                self._track(await self._zc.async_unregister_service(old), self._goodbye_tasks)
            # cooperating_responders skips the 3-probe conflict check.
            self._track(
                await self._zc.async_register_service(new, cooperating_responders=True),
                self._announce_tasks,
            )

    async def _async_unregister(self, info: ServiceInfo) -> None:
        async with self._op_lock:
            self._track(await self._zc.async_unregister_service(info), self._goodbye_tasks)

    @staticmethod
    def _track(awaitable: Any, tasks: set[asyncio.Future[Any]]) -> None:
        # zeroconf returns the task that sends the repeated announcements/goodbyes.
        if isinstance(awaitable, asyncio.Future):
            tasks.add(awaitable)
            awaitable.add_done_callback(tasks.discard)

    # ---------------------------------------------------------------- browsing

    def watch(
        self,
        app: str | None,
        session: str | None,
        callback: WatchCallback,
    ) -> Callable[[], None]:
        """Browse continuously; ``callback(kind, record, service_name)`` on changes.

        kind is "added", "updated" (any field changed) or "removed" (record None;
        also sent when a host stops matching app/session). Callbacks run on the
        zeroconf thread, must be quick, and their exceptions are logged. Returns
        an idempotent stop function; once it returns (called outside a callback)
        no further callback runs.
        """
        watch = _Watch(self._zc, app, session, callback)
        with self._lock:
            self._check_open()
            self._watches.add(watch)
            future = self._submit(watch.async_start())
        self._wait(future)

        def stop() -> None:
            self._stop_watch(watch)

        return stop

    def _stop_watch(self, watch: _Watch) -> None:
        with self._lock:
            if watch not in self._watches:
                return
            self._watches.discard(watch)
            watch.stopped = True
            future = self._submit(watch.async_stop())
        self._wait(future)

    def browse(
        self,
        app: str | None,
        session: str | None,
        timeout: float,
        *,
        first: bool = False,
        until: Callable[[HostRecord], bool] | None = None,
    ) -> list[HostRecord]:
        """Collect the matching hosts seen within ``timeout`` seconds.

        With ``first=True`` returns as soon as one matching host is resolved
        (with every host resolved by then); with ``until``, as soon as a host
        for which it is true is. Order is discovery order.

        Two ways run side by side and either may report a host: legacy unicast
        queries (RFC 6762 6.7; an existing host answers within milliseconds,
        see _LegacyQuery) and a multicast browse like watch()'s, for networks
        that filter the former (and for hosts that appear during the window).
        """
        if self._on_loop_thread():
            raise RuntimeError("browse() cannot be called from a watch callback; use watch()")
        self._check_open()
        started = time.monotonic()
        deadline = started + max(0.0, timeout)
        heard = _Heard(app, session, stop_on=(lambda _: True) if first else until)
        legacy = _LegacyQuery(self._interfaces, heard.on_answer)
        heard.wake = legacy.wake
        try:
            legacy.start()  # before the watch: its answer is usually here first
            stop = self.watch(app, session, heard.on_event)
            try:
                try:
                    legacy.run(deadline, heard.got_one)
                except Exception:  # a bug there must not cost us the multicast path
                    log.exception("legacy mDNS query failed; browsing by multicast only")
                heard.got_one.wait(max(0.0, deadline - time.monotonic()))
            finally:
                stop()
        finally:
            legacy.close()
        result = heard.records()
        log.debug(
            "browse app=%s session=%s found %d host(s) in %.1f ms",
            app,
            session,
            len(result),
            (time.monotonic() - started) * 1000,
        )
        return result

    # ---------------------------------------------------------------- shutdown

    def close(self) -> None:
        """Withdraw, stop all watches and close zeroconf (joins its thread). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            watches = list(self._watches)
            self._watches.clear()
            for watch in watches:
                watch.stopped = True
            self._advert = None
        if self._on_loop_thread():
            # Zeroconf.close() joins the loop thread, which is this one: hand it off.
            threading.Thread(
                target=self._shutdown, args=(watches,), name="p2pstate-discovery-close"
            ).start()
            return
        self._shutdown(watches)

    def _shutdown(self, watches: list[_Watch]) -> None:
        try:
            future = asyncio.run_coroutine_threadsafe(self._async_quiesce(watches), self._loop)
            future.result(_LOOP_CALL_TIMEOUT_S)
        except Exception:
            log.exception("error stopping mDNS watches")
        # Zeroconf.close() sends goodbyes for the registered advert, then joins its thread.
        self._zc.close()
        log.debug("mDNS discovery on %s closed", self._interfaces)

    async def _async_quiesce(self, watches: list[_Watch]) -> None:
        for watch in watches:
            await watch.async_stop()
        # Zeroconf.close() closes the sockets first and then waits for every pending
        # task, so a still-running announcement would only delay close by ~0.45 s.
        for task in list(self._announce_tasks):
            task.cancel()
        # Goodbyes from a recent withdraw() must go out before the sockets close.
        async with self._op_lock:
            if self._goodbye_tasks:
                await asyncio.wait(list(self._goodbye_tasks), timeout=_LOOP_CALL_TIMEOUT_S)

    # ---------------------------------------------------------------- loop plumbing

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("Discovery is closed")

    def _on_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _submit(self, coro: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _wait(self, future: concurrent.futures.Future[None]) -> None:
        # On the loop thread the work can only run after we return: don't wait.
        if self._on_loop_thread():
            future.add_done_callback(_log_future_error)
            return
        future.result(_LOOP_CALL_TIMEOUT_S)


def _log_future_error(future: concurrent.futures.Future[None]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.error("mDNS operation failed: %r", exc)
