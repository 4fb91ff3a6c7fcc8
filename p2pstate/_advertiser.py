"""The mDNS advert of a host: what the runtime advertises, kept current with
the session (epoch, players, settings, modes), withdrawn once it follows
another host. The record's schema is core/advert.py's; this is its I/O.

Anything named ``*_io`` runs on the I/O thread only.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from .core.access import AUTHORIZED_ONLY, Access
from .core.advert import (
    MAX_TXT_TOTAL_BYTES,
    TXT_REVISION,
    TXT_SECURED,
    access_properties,
    host_properties,
    info_fault,
    txt_bytes,
)
from .core.node import Node, Role
from .discovery import Discovery, check_txt
from .messages import MAX_NAME_BYTES, WIRE_VERSION

__all__ = ["Advertiser", "advert_room"]

log = logging.getLogger(__name__)

# The widest access a record may carry: every mode advertised, and an admin.
_WIDEST_ACCESS = Access(admin="f" * 16, readmode=AUTHORIZED_ONLY, writemode=AUTHORIZED_ONLY)


def advert_room(app: str, session: str, node_id: str) -> int:
    """Bytes of mDNS record left for the session's settings once every
    other entry is at its widest, for whichever member hosts: the same on
    every copy of this app and session (see core/advert.py)."""
    widest = {
        "app": app,
        "session": session,
        "id": "f" * len(node_id),  # every copy's ids have one length
        "name": "n" * MAX_NAME_BYTES,
        "epoch": "9" * 20,
        "sid": "f" * 16,
        "players": "9" * 9,
        TXT_REVISION: "9" * 9,
        **host_properties({}, 0, _WIDEST_ACCESS, wire=WIRE_VERSION, secured=True),
        TXT_SECURED: "1",
    }
    return MAX_TXT_TOTAL_BYTES - txt_bytes(widest)


class Advertiser:
    """Publishes the host's record through *discovery*, from the node's state."""

    def __init__(
        self,
        *,
        app: str,
        session: str,
        node: Node,
        discovery: Discovery,
        addresses: list[str],
        port: int,
        secured: bool,
        stats: Counter[str],
    ) -> None:
        self.app, self.session, self.node = app, session, node
        self.discovery, self.addresses, self.port = discovery, addresses, port
        self.secured, self.stats = secured, stats
        # (epoch, players) in our record; None: nothing advertised.
        self.advertised: tuple[int, int] | None = None
        self._info: dict[str, Any] | None = None  # the settings in our record
        self._modes: dict[str, str] = {}  # the access TXT properties in our record
        self._rev = 0
        # What we failed to advertise (role, epoch, players, info): not retried.
        self._failed: tuple[tuple[Role, int, int, Access], dict[str, Any]] | None = None

    def properties(
        self, info: dict[str, Any], players: int, access: Access | None = None
    ) -> dict[str, str]:
        return host_properties(
            info,
            players,
            access or self.node.replica.access,
            wire=WIRE_VERSION,
            secured=self.secured,
        )

    def check_session_info(self, info: dict[str, Any]) -> None:
        """Raise ValueError if the session's settings would not fit its mDNS
        record: the host's own check of an info write, then the record's."""
        node = self.node
        merged = {**node.replica.info, **info}
        fault = info_fault(merged, node.config.advert_room)
        if fault is not None:
            raise ValueError(fault)
        check_txt(
            app=self.app,
            session=self.session,
            node_id=node.me.id,
            host_name=node.me.name,
            session_id=node.replica.session_id,
            # The longest modes and an admin: a later set_access fits too.
            properties={
                **self.properties(merged, 10_000, _WIDEST_ACCESS),
                TXT_REVISION: "9" * 9,
            },
        )

    def guarded_io(self) -> None:
        """Advertising follows every step but is not part of one: a failure
        there (zeroconf, a record the core let through by mistake) is dropped
        and counted, never the end of the I/O thread. Not retried until what
        would be advertised changes."""
        node = self.node
        # The replica replaces its info and access on every change: identity says it all.
        wanted = (node.role, node.epoch, len(node.replica.members), node.replica.access)
        failed = self._failed
        if failed is not None and failed[0] == wanted and failed[1] is node.replica.info:
            return
        try:
            self.sync_io()
        except Exception:  # the session goes on unadvertised
            self._failed = (wanted, node.replica.info)
            self.stats["advert_errors"] += 1
            level = logging.WARNING if self.stats["advert_errors"] == 1 else logging.DEBUG
            log.log(level, "could not advertise the session; it goes on", exc_info=True)

    def sync_io(self) -> None:
        """Advertise while we host; keep the record's epoch and player count
        current; withdraw the record once we follow another host."""
        node = self.node
        if node.role is Role.HOST:
            players = len(node.replica.members)
            # The replica replaces its info dict on every change: identity says it all.
            if (
                (node.epoch, players) != self.advertised
                or node.replica.info is not self._info
                or access_properties(node.replica.access) != self._modes
            ):
                self.advertise_io(epoch=node.epoch, players=players)
        elif self.advertised is not None and node.ready:
            self.discovery.withdraw()
            self.advertised = None

    def advertise_io(self, *, epoch: int, players: int = 1) -> None:
        node = self.node
        properties = self.properties(node.replica.info, players)
        # mDNS can deliver an answer built before our last change: readers
        # order our records by (epoch, rev) and keep the newest.
        self._rev += 1
        properties[TXT_REVISION] = str(self._rev)
        if self.advertised is None or self.advertised[0] == 0:
            # New, or a candidate turning host: register the full record again.
            self.discovery.advertise(
                app=self.app,
                session=self.session,
                node_id=node.me.id,
                host_name=node.me.name,
                port=self.port,
                addresses=self.addresses,
                epoch=epoch,
                session_id=node.replica.session_id or "-",
                properties=properties,
            )
        else:
            self.discovery.update(epoch=epoch, properties=properties)
        self.advertised, self._info = (epoch, players), node.replica.info
        self._modes = access_properties(node.replica.access)

    def withdraw_io(self) -> None:
        """Take our record off the LAN while closing (a failure is only logged)."""
        if self.advertised is None:
            return
        try:
            self.discovery.withdraw()
        except Exception:  # closing must finish
            log.debug("withdraw failed while closing", exc_info=True)
        self.advertised = None
