"""The I/O side of the start-up election (core/startup.py): mDNS records in,
its decisions (join this host, host ourselves, fail) carried out on the
node; and, while we host, asking the LAN for rival hosts of our session.

Anything named ``*_io`` runs on the I/O thread only; ``on_record`` and
``rediscover`` run on discovery's threads and queue work for it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable

from .core.access import Access
from .core.advert import advertised_players, advertised_secured, advertised_wire
from .core.ids import identity_of
from .core.node import Node, Role, Send
from .core.startup import Advert, Decision, Fail, Host, Join, Reason, Startup, candidate_notice
from .discovery import Discovery, HostRecord, is_candidate_name, node_label
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
from .messages import WIRE_VERSION, Hello, Message, Redirect
from .options import Options
from .persist import InitialState, Persister
from .transport import Transport

__all__ = ["StartupAdapter", "access_error"]

log = logging.getLogger(__name__)


def access_error(reason: str, session: str, node_id: str) -> PermissionDeniedError:
    """The error for a session that refuses this identity (*reason* as the core says)."""
    identity = identity_of(node_id)
    if reason == "banned":
        return BannedError(f"the admin of session {session!r} banned this identity ({identity})")
    return PermissionDeniedError(
        f"session {session!r} lets only identities its admin authorized in (readmode); "
        f"ask the admin to authorize {identity}"
    )


def _advert(record: HostRecord) -> Advert:
    """A record as the start-up election reads it."""
    return Advert(
        node_id=record.node_id,
        endpoints=record.endpoints,
        epoch=record.epoch,
        players=advertised_players(record.properties),
        secured=advertised_secured(record.properties),
        wire=advertised_wire(record.properties),
    )


class StartupAdapter:
    """Feeds the election what discovery hears and does what it decides.
    *call* queues a command for the I/O thread; *internal_error* counts a
    message that made the core raise."""

    def __init__(
        self,
        *,
        app: str,
        session: str,
        options: Options,
        node: Node,
        discovery: Discovery,
        transport: Transport,
        stats: Counter[str],
        stopped: threading.Event,
        call: Callable[[Callable[[], None]], None],
        internal_error: Callable[[object], None],
    ) -> None:
        self.app, self.session, self.options = app, session, options
        self.node, self.node_id = node, node.me.id
        self.discovery, self.transport, self.stats = discovery, transport, stats
        self.stopped, self.call, self._internal_error = stopped, call, internal_error
        # The start-up election (core/startup.py): whom to join, or host. It
        # lives on the I/O thread; discovery's threads queue records for it.
        self.election = Startup(
            node_id=self.node_id,
            secured=options.secret is not None,
            wire=WIRE_VERSION,
            discovery_window=options.discovery_window,
            hello_retry=node.config.hello_retry,
            stats=stats,
        )
        self.join_failure: P2PStateError | None = None
        # The store this session may be created from (set by Runtime.start),
        # and what it holds, until a joiner takes the session's state instead.
        self.persister: Persister | None = None
        self.initial: tuple[InitialState, int] = ((), 0)

    def open_store(self) -> Persister | None:
        """Open the store the options name (None without one): what it holds
        is the session this peer creates if it hosts."""
        store = self.options.open_store()
        if store is None:
            return None
        self.persister = Persister(store)
        self.initial = self.persister.initial(time.time())
        return self.persister

    def failure(self, started: bool, timeout: float) -> P2PStateError | None:
        """What join() raises once the start-up is over (*started*: the node
        got in, was refused, or the election failed, before the timeout)."""
        if not started:
            return SessionLostError(
                f"could not join or host session {self.session!r} of {self.app!r} "
                f"within {timeout} s"
            )
        if self.join_failure is not None:
            return self.join_failure
        reason = self.node.refused
        if reason is None:
            return None
        if reason in ("banned", "not_authorized"):
            return access_error(reason, self.session, self.node_id)
        return SessionFullError(
            f"session {self.session!r} of {self.app!r} is "
            + ("full" if reason == "full" else "not taking new players")
        )

    # ------------------------------------------------------------ discovery's threads

    def on_record(self, kind: str, record: HostRecord | None, name: str) -> None:
        """Zeroconf's thread: tell the start-up election, let a host meet its rivals."""
        if record is None:
            candidate = is_candidate_name(name)
            with contextlib.suppress(SessionClosedError):
                self.call(functools.partial(self.record_gone_io, name, candidate))
            return
        if record.node_id == self.node_id:
            return
        self.remember(record)
        if not self.stopped.is_set():
            with contextlib.suppress(SessionClosedError):
                self.call(lambda: self.observe_io(record))

    def remember(self, record: HostRecord) -> None:
        """Every record seen while starting (by browse, watch or rediscovery)
        goes to the start-up election, on the I/O thread."""
        if record.node_id != self.node_id and not self.election.done:
            with contextlib.suppress(SessionClosedError):
                self.call(functools.partial(self.election.seen, _advert(record)))

    def rediscover(self) -> None:
        """While we host, ask the LAN for hosts of our session every few
        seconds: after a split heals, zeroconf's own browser would not ask
        again for minutes, and the two hosts must meet to merge. Likewise
        while we hold the session and look for its host (a failover that
        waits for a majority: ``failover.probe_found``)."""
        interval = self.options.rediscovery_interval
        while not self.stopped.wait(interval):
            node = self.node
            if node.role is not Role.HOST and not (node.ready and node.role is Role.JOINING):
                continue
            try:
                records = self.discovery.browse(self.app, self.session, 0.25)
            except Exception:  # closing, or a network fault: try later
                log.debug("rediscovery failed", exc_info=True)
                continue
            for record in records:
                if record.node_id != self.node_id and record.epoch > 0:
                    self.remember(record)
                    with contextlib.suppress(SessionClosedError):
                        self.call(functools.partial(self.observe_io, record))

    # ------------------------------------------------------------ I/O thread

    def record_gone_io(self, name: str, candidate: bool) -> None:
        # A node's candidate record and its host record are two adverts.
        for advert in self.election.adverts():
            if node_label(advert.node_id) in name and (advert.epoch == 0) == candidate:
                self.election.gone(advert.node_id, host=not candidate, now=time.monotonic())

    def observe_io(self, record: HostRecord) -> None:
        # An open and a secured session of one name can't talk, let alone
        # merge; nor can two wire formats.
        if self.election.compatible(_advert(record)):
            now = time.monotonic()
            self.node.observe_host(
                record.node_id,
                record.endpoints,
                record.epoch,
                now,
                session_id=record.session_id,
            )

    def begin_io(self, now: float) -> None:
        """The first discovery window is over: let the election decide."""
        self.carry_out_io(self.election.begin(now), now)

    def starting(self) -> bool:
        """Looking for a host, or the first one: a Hello here is a copy that
        started with us and chose us (the core would drop it)."""
        node = self.node
        return not node.ready and node.role in (Role.IDLE, Role.JOINING)

    def message_io(self, msg: Message, now: float) -> bool:
        """While starting, a Hello is a copy that chose us, and a candidate
        notice is the copy we chose saying it is alive: both go to the
        election (the core would drop them). True if it took *msg*."""
        if isinstance(msg, Redirect) and msg.reason == "candidate":
            self.election.answered(msg.sender, now)
            return True
        if not isinstance(msg, Hello):
            return False
        self.carry_out_io(self.election.hello(msg, now), now)
        notice = candidate_notice(self.node_id, self.node.me.endpoints)
        for held in self.election.take_answers():  # "keep asking me"
            self.transport.send_io(Send(held.sender, held.endpoints, notice))
        return True

    def retry_join_io(self, now: float) -> None:
        """The election's timers: another host, or host ourselves."""
        if self.node.ready:
            self.election.joined()  # its waits are over
        elif self.starting() and self.join_failure is None:
            self.carry_out_io(self.election.tick(now), now)

    def handshake_failed_io(self, node_id: str, now: float) -> None:
        """A CURVE handshake with *node_id* failed: one of us lacks the secret."""
        self.transport.forget_io(node_id)  # stop its reconnect loop
        node = self.node
        if not node.ready and node.role is Role.JOINING and node.target_id == node_id:
            self.carry_out_io(self.election.handshake_failed(node_id, now), now)
            return
        self.stats["unauthenticated_nodes"] += 1
        level = logging.WARNING if self.stats["unauthenticated_nodes"] == 1 else logging.DEBUG
        log.log(level, "node %s failed the handshake: it does not know the secret", node_id)

    def carry_out_io(self, decision: Decision | None, now: float) -> None:
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
        initial, initial_seq = self.initial
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
        self.initial = ((), 0)
        if self.persister is not None:
            self.persister.started(self.node.replica)
        for hello in decision.hellos:
            try:
                self.node.receive(hello, now)
            except Exception:  # noqa: BLE001 (as in Loop._receive_io: drop it, go on)
                self._internal_error(hello)

    def _stored_access_io(self) -> Access | None:
        """The access state of the store this session is created from: it is
        the session's (its admin, lists, modes and limits), so it wins over
        this peer's options. Sets ``join_failure`` if it refuses this peer."""
        stored = self.persister.stored_access if self.persister is not None else None
        if stored is None:
            return None
        identity = identity_of(self.node_id)
        if not stored.may_read(identity):
            reason = stored.refusal(identity)
            self.join_failure = access_error(reason, self.session, self.node_id)
            return None
        if stored.settings() != self.options.access().settings():
            log.info(
                "session %r starts with its store's modes and limits %s; join()'s are unused",
                self.session,
                stored.settings(),
            )
        return stored
