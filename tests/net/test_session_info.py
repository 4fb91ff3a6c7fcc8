"""Session settings: max_players, joinable, metadata in the mDNS record, kept
through a failover."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import pytest

import p2pstate
from p2pstate.discovery import Discovery, HostRecord


def _record(app: str, want: Callable[[HostRecord], bool], timeout: float = 5.0) -> HostRecord:
    deadline = time.monotonic() + timeout
    with Discovery(["127.0.0.1"]) as d:
        while True:
            for record in d.browse(app, "default", 0.3):
                if record.epoch > 0 and want(record):
                    return record
            assert time.monotonic() < deadline, "no such advertisement"


def test_max_players_refuses_the_next_peer() -> None:
    app = f"full-{secrets.token_hex(4)}"
    a = p2pstate.join(app, interfaces=["127.0.0.1"], discovery_window=0.3, max_players=2)
    b = p2pstate.join(app, interfaces=["127.0.0.1"], discovery_window=0.3)
    try:
        with pytest.raises(p2pstate.SessionFullError, match="full"):
            p2pstate.join(app, interfaces=["127.0.0.1"], discovery_window=0.3)
        assert len(a.peers) == 2 and a.is_host
        assert _record(app, lambda r: r.properties.get("max_players") == "2")
        a.set_session_info(joinable=False)
        b.close()
        with pytest.raises(p2pstate.SessionFullError, match="not taking"):
            p2pstate.join(app, interfaces=["127.0.0.1"], discovery_window=0.3)
        assert len(a.peers) == 1, "a refused peer must not start a second session either"
    finally:
        b.close()
        a.close()


def test_session_info_is_advertised_and_survives_a_failover() -> None:
    app = f"info-{secrets.token_hex(4)}"
    a = p2pstate.join(
        app, interfaces=["127.0.0.1"], discovery_window=0.3, version="1.2", metadata={"map": "dust"}
    )
    b = p2pstate.join(app, interfaces=["127.0.0.1"], discovery_window=0.3)
    try:
        # The advertisement catches up with the second player: wait for it,
        # as a record read a moment earlier may still say one.
        record = _record(
            app,
            lambda r: r.properties.get("m.map") == "dust" and r.properties.get("players") == "2",
        )
        assert record.properties["version"] == "1.2"
        b.set_session_info(metadata={"map": "inferno", "mode": "ctf"})
        assert b.session_info["metadata"] == {"map": "inferno", "mode": "ctf"}  # acknowledged
        deadline = time.monotonic() + 5
        while a.session_info["metadata"] != {"map": "inferno", "mode": "ctf"}:
            assert time.monotonic() < deadline, "the host never applied the new settings"
            time.sleep(0.01)
        _record(app, lambda r: r.properties.get("m.mode") == "ctf")
        with pytest.raises(ValueError, match="bytes"):
            b.set_session_info(metadata={"big": "x" * 300})
        with pytest.raises(ValueError):
            b.set_session_info(max_players=0)
        a.close()  # b hosts now, and advertises the same settings
        deadline = time.monotonic() + 5
        while not b.is_host:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        moved = _record(
            app, lambda r: r.node_id == b.me.id and r.properties.get("m.map") == "inferno"
        )
        assert moved.properties["version"] == "1.2" and moved.properties["m.mode"] == "ctf"
    finally:
        b.close()
        a.close()


def test_quick_join_fills_an_open_session_then_makes_a_new_one() -> None:
    app = f"quick-{secrets.token_hex(4)}"
    opened: list[p2pstate.SharedState] = []
    try:
        for _ in range(3):
            opened.append(
                p2pstate.quick_join(
                    app,
                    metadata={"mode": "ctf"},
                    max_players=2,
                    browse_timeout=0.5,
                    interfaces=["127.0.0.1"],
                    discovery_window=0.3,
                )
            )
            time.sleep(0.3)  # let the new session's record be seen
        first, second, third = opened
        assert first.session == second.session, "the second joins the open one"
        assert third.session != first.session, "the first is full: a new one is made"
        assert first.session_info["metadata"] == {"mode": "ctf"}
        assert third.is_host and third.session_info["metadata"] == {"mode": "ctf"}
        other = p2pstate.quick_join(
            app,
            metadata={"mode": "dm"},
            browse_timeout=0.5,
            interfaces=["127.0.0.1"],
            discovery_window=0.3,
        )
        opened.append(other)
        assert other.session not in {first.session, third.session}, "metadata must match"
    finally:
        for s in reversed(opened):
            s.close()
