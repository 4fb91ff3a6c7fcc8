"""The mDNS record's schema, both directions (core/advert.py): what a host
advertises reads back as the same settings, through the TXT record zeroconf
would carry and the lobby's reading of it, with no network."""

from __future__ import annotations

from typing import Any

import pytest

from p2pstate.core.access import ADMIN_ONLY, ANY, AUTHORIZED_ONLY, UNBANNED_ONLY, Access
from p2pstate.core.advert import advertised_players, host_properties, read_properties
from p2pstate.discovery import _AdSpec, _build_info, _record_from_info
from p2pstate.lobby import _session_info
from p2pstate.messages import WIRE_VERSION

ADMIN = "0123456789abcdef"

CASES: list[tuple[dict[str, Any], int, Access, bool]] = [
    ({"max_players": None, "joinable": True, "version": None, "metadata": {}}, 1, Access(), False),
    (
        {"max_players": 8, "joinable": False, "version": "1.2", "metadata": {"map": "dust"}},
        3,
        Access(admin=ADMIN, readmode=AUTHORIZED_ONLY, writemode=ADMIN_ONLY),
        True,
    ),
    (
        {"max_players": 2, "joinable": True, "version": "", "metadata": {"a": "", "b.c": "é"}},
        2,
        Access(admin=ADMIN, readmode=UNBANNED_ONLY),
        False,
    ),
]


@pytest.mark.parametrize(("info", "players", "access", "secured"), CASES)
def test_what_a_host_advertises_reads_back(
    info: dict[str, Any], players: int, access: Access, secured: bool
) -> None:
    properties = host_properties(info, players, access, wire=WIRE_VERSION, secured=secured)
    said = read_properties(properties)
    assert said.players == advertised_players(properties) == players
    assert (said.max_players, said.joinable, said.version) == (
        info["max_players"],
        info["joinable"],
        info["version"],
    )
    assert said.metadata == info["metadata"]
    assert (said.readmode, said.writemode, said.secured, said.wire) == (
        access.readmode,
        access.writemode,
        secured,
        WIRE_VERSION,
    )
    # The admin is advertised only where it decides who may join.
    shown = access.readmode in (ADMIN_ONLY, AUTHORIZED_ONLY)
    assert said.admin == (access.admin if shown else None)


@pytest.mark.parametrize(("info", "players", "access", "secured"), CASES)
def test_the_whole_record_round_trips_to_the_lobby(
    info: dict[str, Any], players: int, access: Access, secured: bool
) -> None:
    """Through the TXT record as zeroconf encodes it, then the lobby's SessionInfo."""
    properties = host_properties(info, players, access, wire=WIRE_VERSION, secured=secured)
    spec = _AdSpec(
        app="game",
        session="room",
        node_id=f"{ADMIN}.01",
        host_name="alice",
        port=4000,
        addresses=("127.0.0.1",),
        epoch=5,
        session_id="sid",
        properties=tuple({**properties, "rev": "7"}.items()),
    )
    record = _record_from_info(_build_info(spec))
    assert record is not None
    session = _session_info(record)
    assert session is not None
    assert (session.players, session.max_players, session.joinable) == (
        players,
        info["max_players"],
        info["joinable"],
    )
    assert (session.version, session.metadata) == (info["version"], info["metadata"])
    assert (session.readmode, session.writemode, session.secured) == (
        access.readmode,
        access.writemode,
        secured,
    )
    assert session.compatible and session.epoch == 5 and session.host_name == "alice"
    assert (session.readmode == ANY) == (access.readmode == ANY)


def test_unreadable_values_are_their_defaults() -> None:
    said = read_properties(
        {
            "players": "x",
            "max_players": "0",
            "joinable": "maybe",
            "readmode": "root",
            "admin": "a.b",
        }
    )
    assert (said.players, said.max_players, said.joinable, said.readmode, said.admin) == (
        1,
        None,
        True,
        ANY,
        None,
    )
