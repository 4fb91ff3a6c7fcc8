"""Copies of p2pstate with different wire formats find each other on the LAN
but refuse to join, with a clear error, instead of exchanging frames that
neither can read (or hosting a rival session of the same name)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest
from netkit import Join, new_installation

import p2pstate
from p2pstate.discovery import Discovery
from p2pstate.lobby import TXT_WIRE, advertised_wire
from p2pstate.messages import WIRE_VERSION

LOOPBACK = ["127.0.0.1"]


@pytest.fixture
def old_host(app_name: str) -> Iterator[Discovery]:
    """The advertisement of a host running another wire format (one from
    before the field existed: no ``wire`` key at all)."""
    d = Discovery(LOOPBACK)
    d.advertise(
        app=app_name,
        session="default",
        node_id=secrets.token_hex(8),
        host_name="old copy",
        port=9,  # nothing listens: a join that tried to talk to it would time out
        addresses=LOOPBACK,
        epoch=3,
        session_id=secrets.token_hex(8),
        properties={"players": "2", "rev": "1"},
    )
    yield d
    d.close()


def test_hosts_advertise_their_wire_format(join: Join, app_name: str) -> None:
    host = join()
    (info,) = p2pstate.browse(app_name, timeout=1.0, interfaces=LOOPBACK)
    assert info.host_id == host.me.id and info.compatible


def test_joining_a_host_of_another_wire_format_raises(app_name: str, old_host: Discovery) -> None:
    with pytest.raises(p2pstate.IncompatibleVersionError, match=f"speaks {WIRE_VERSION}"):
        p2pstate.join(
            app_name,
            interfaces=LOOPBACK,
            discovery_window=0.3,
            timeout=5.0,
            identity_dir=new_installation(),
        )
    (info,) = p2pstate.browse(app_name, timeout=1.0, interfaces=LOOPBACK)
    assert not info.compatible and info.host_name == "old copy", "no rival session was made"


def test_quick_join_passes_over_sessions_it_cannot_speak_to(
    app_name: str, old_host: Discovery
) -> None:
    s = p2pstate.quick_join(
        app_name,
        browse_timeout=0.5,
        interfaces=LOOPBACK,
        discovery_window=0.3,
        identity_dir=new_installation(),
    )
    try:
        assert s.is_host and s.session != "default"
    finally:
        s.close()


@pytest.mark.parametrize(
    ("properties", "wire"),
    [({}, None), ({TXT_WIRE: "2"}, 2), ({TXT_WIRE: "x"}, None), ({TXT_WIRE: "0"}, None)],
)
def test_advertised_wire_reads_what_the_network_says(
    properties: dict[str, str], wire: int | None
) -> None:
    assert advertised_wire(properties) == wire


@pytest.mark.parametrize("text", ["²", "٣", "1" * 40, "-1"])
def test_an_advert_with_odd_digits_is_ignored_not_fatal(
    join: Join, app_name: str, text: str
) -> None:
    """Regression: "²".isdigit() is true and int("²") raises; one such advert
    killed the I/O thread of every host that saw it."""
    assert advertised_wire({TXT_WIRE: text}) is None
    host = join()
    host["before"] = 1
    d = Discovery(LOOPBACK)
    try:
        d.advertise(
            app=app_name,
            session="default",
            node_id=secrets.token_hex(8),
            host_name="odd",
            port=9,
            addresses=LOOPBACK,
            epoch=5,
            session_id=secrets.token_hex(8),
            properties={"wire": text, "rev": text, "players": text},
        )
        seen = {i.host_name for i in p2pstate.browse(app_name, timeout=1.0, interfaces=LOOPBACK)}
        assert "odd" in seen
        time.sleep(0.3)  # the host's own mDNS watch hears it too (no event to wait on)
        host["after"] = 2  # the I/O thread is alive and serving
        assert host["after"] == 2 and host.is_host
        assert host.stats.get("internal_errors", 0) == 0
    finally:
        d.close()
