"""p2pstate.browse and p2pstate.Lobby against real mDNS on 127.0.0.1.

Sessions come from real p2pstate.join calls, or from adverts published with
Discovery directly, which stand in for the TXT keys that the core does not
write yet (max_players, joinable, secured, version, m.*). Every test uses its
own random app name, so nothing from another test or run is ever listed.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import p2pstate
from p2pstate import Lobby, SessionInfo
from p2pstate.discovery import Discovery, HostRecord
from p2pstate.lobby import (
    SessionAppeared,
    SessionChanged,
    SessionVanished,
    _newer,
    _sessions,
)

LOOPBACK = ["127.0.0.1"]
FAST = {"discovery_window": 0.3}


@pytest.fixture
def app() -> str:
    return f"lobby-{secrets.token_hex(4)}"


@pytest.fixture
def join(app: str) -> Iterator[Callable[..., p2pstate.SharedState]]:
    opened: list[p2pstate.SharedState] = []

    def make(session: str = "default", **kw: object) -> p2pstate.SharedState:
        s = p2pstate.join(app, session, interfaces=LOOPBACK, **FAST, **kw)  # type: ignore[arg-type]
        opened.append(s)
        return s

    yield make
    for s in reversed(opened):
        s.close()


class FakeHosts:
    """Adverts published straight through Discovery, one per fake host."""

    def __init__(self, app: str) -> None:
        self.app = app
        self.adverts: dict[str, Discovery] = {}

    def advertise(
        self,
        name: str,
        *,
        session: str = "default",
        epoch: int = 1,
        properties: dict[str, str] | None = None,
        node_id: str | None = None,
    ) -> Discovery:
        d = Discovery(LOOPBACK)
        d.advertise(
            app=self.app,
            session=session,
            node_id=node_id or secrets.token_hex(8),
            host_name=name,
            port=9,
            addresses=LOOPBACK,
            epoch=epoch,
            session_id=secrets.token_hex(8),
            properties=properties or {"players": "1"},
        )
        self.adverts[name] = d
        return d

    def close(self) -> None:
        for d in self.adverts.values():
            d.close()
        self.adverts.clear()


@pytest.fixture
def fakes(app: str) -> Iterator[FakeHosts]:
    hosts = FakeHosts(app)
    yield hosts
    hosts.close()


def eventually(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def record(**kw: object) -> HostRecord:
    base: dict[str, object] = {
        "app": "a",
        "session": "s",
        "node_id": "ab",
        "host_name": "h",
        "endpoints": ("tcp://127.0.0.1:9",),
        "epoch": 1,
        "session_id": "sid",
        "properties": {},
    }
    base.update(kw)
    return HostRecord(**base)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- records, no network


def test_session_info_defaults_and_candidates() -> None:
    assert _sessions([record(epoch=0)]) == {}  # a node still starting is no session
    (info,) = _sessions([record()]).values()
    assert (info.players, info.max_players, info.joinable, info.secured) == (1, None, True, False)
    assert info.version is None and info.metadata == {}
    assert info.endpoint == "tcp://127.0.0.1:9" and info.host_id == "ab" and info.epoch == 1
    assert info.free_slots is None and info.has_room
    hash(info)  # frozen, hashable although metadata is a dict


def test_session_info_reads_the_txt_keys() -> None:
    props = {
        "players": "3",
        "max_players": "4",
        "joinable": "no",
        "secured": "1",
        "version": "1.2",
        "m.map": "dust",
        "m.": "ignored",
        "other": "ignored",
    }
    (info,) = _sessions([record(properties=props)]).values()
    assert (info.players, info.max_players, info.joinable, info.secured) == (3, 4, False, True)
    assert info.version == "1.2" and info.metadata == {"map": "dust"}
    assert info.free_slots == 1 and not info.has_room  # room, but not joinable


@pytest.mark.parametrize(
    "props",
    [
        {"players": "-1", "max_players": "0", "joinable": "maybe", "secured": ""},
        {"players": "x", "max_players": "9" * 30, "joinable": "", "secured": "2"},
    ],
)
def test_garbled_txt_values_fall_back_to_defaults(props: dict[str, str]) -> None:
    (info,) = _sessions([record(properties=props)]).values()
    assert (info.players, info.max_players, info.joinable, info.secured) == (1, None, True, False)


def test_full_session_has_no_room() -> None:
    (info,) = _sessions([record(properties={"players": "5", "max_players": "4"})]).values()
    assert info.free_slots == 0 and not info.has_room


def test_one_session_per_name_the_merge_winner() -> None:
    records = [
        record(node_id="01", epoch=2, host_name="old"),
        record(node_id="ff", epoch=3, host_name="new"),
        record(node_id="02", epoch=3, host_name="tie-winner"),
        record(node_id="03", epoch=9, session="other", host_name="other"),
    ]
    found = _sessions(records)
    assert found[("a", "s")].host_name == "tie-winner"  # highest epoch, then lowest id
    assert found[("a", "other")].host_name == "other"


def test_late_records_do_not_win() -> None:
    """Answers can come late and out of order: never believe an older epoch
    (or rev); within one browse, the first answer of an epoch wins."""
    host = record(epoch=1, properties={"players": "2"})
    late_candidate = record(epoch=0, properties={"players": "1"})
    late_same_epoch = record(epoch=1, properties={"players": "1"})
    assert _newer(host, late_candidate) is host
    assert _newer(host, late_same_epoch) is late_same_epoch  # live: the last heard
    assert _newer(host, late_same_epoch, first_wins=True) is host  # one-shot: the first
    assert _newer(host, record(epoch=2), first_wins=True).epoch == 2
    # With a rev, the order is known whatever the arrival.
    rev3 = record(epoch=1, properties={"players": "3", "rev": "3"})
    rev2 = record(epoch=1, properties={"players": "2", "rev": "2"})
    assert _newer(rev3, rev2) is rev3 and _newer(rev2, rev3, first_wins=True) is rev3
    assert _newer(None, late_candidate) is late_candidate
    assert _newer(host, record(node_id="cd", epoch=0)).node_id == "cd"  # another host


def test_bad_arguments_are_refused_before_any_network() -> None:
    with pytest.raises(TypeError, match="metadata values are str"):
        p2pstate.browse("a", mode=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="SessionInfo field"):
        p2pstate.browse("a", players="2")
    with pytest.raises(TypeError, match="callable"):
        p2pstate.browse("a", where="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        p2pstate.browse("a", 0)
    with pytest.raises(ValueError, match="limit"):
        p2pstate.browse("a", limit=0)
    with pytest.raises(ValueError, match="app"):
        p2pstate.browse("")
    with pytest.raises(TypeError, match="SessionInfo field"):
        Lobby("a", host_name="x")
    with pytest.raises(ValueError, match="grace"):
        Lobby("a", grace=-1)


# --------------------------------------------------------------------------- browse


@pytest.mark.alone  # asserts a wall-clock bound
def test_browse_lists_real_sessions_with_their_players(
    join: Callable[..., object], app: str
) -> None:
    join(name="alice")
    join(name="bob")
    join("room-2", name="carol")
    started = time.monotonic()
    found = p2pstate.browse(app, interfaces=LOOPBACK)
    took = time.monotonic() - started
    assert [(i.session, i.host_name, i.players) for i in found] == [
        ("default", "alice", 2),
        ("room-2", "carol", 1),
    ]
    assert all(isinstance(i, SessionInfo) and i.app == app and i.epoch == 1 for i in found)
    assert 0.9 < took < 2.5  # listens for the whole timeout: it cannot know who else is there

    # limit: return as soon as enough sessions match.
    started = time.monotonic()
    (room,) = p2pstate.browse(app, 5.0, session="room-2", limit=1, interfaces=LOOPBACK)
    assert room.host_name == "carol" and time.monotonic() - started < 1.0

    assert p2pstate.browse(app, 0.5, where=lambda i: i.players > 1) == found[:1]
    assert p2pstate.browse(app, 0.5, session="nope") == []
    assert p2pstate.browse(f"{app}-other", 0.5) == []


def test_browse_reads_advertised_details_and_filters_on_them(fakes: FakeHosts, app: str) -> None:
    fakes.advertise(
        "full",
        session="s1",
        properties={
            "players": "4",
            "max_players": "4",
            "secured": "1",
            "version": "1.2",
            "m.map": "dust",
            "m.mode": "ctf",
        },
    )
    fakes.advertise(
        "open", session="s2", properties={"players": "1", "max_players": "4", "m.mode": "ctf"}
    )
    fakes.advertise("closed", session="s3", properties={"players": "1", "joinable": "0"})
    fakes.advertise("candidate", session="s4", epoch=0)
    # Two hosts of s5 (a split, or a failover in progress): the higher epoch is listed.
    fakes.advertise("s5-old", session="s5", epoch=2)
    fakes.advertise("s5-new", session="s5", epoch=3)

    found = {i.session: i for i in p2pstate.browse(app, interfaces=LOOPBACK)}
    assert sorted(found) == ["s1", "s2", "s3", "s5"]
    s1 = found["s1"]
    assert (s1.host_name, s1.players, s1.max_players, s1.secured, s1.version) == (
        "full",
        4,
        4,
        True,
        "1.2",
    )
    assert s1.metadata == {"map": "dust", "mode": "ctf"} and s1.endpoint.endswith(":9")
    assert not found["s3"].joinable and found["s5"].host_name == "s5-new"

    def sessions(**filters: object) -> list[str]:
        return [i.session for i in p2pstate.browse(app, 0.6, interfaces=LOOPBACK, **filters)]  # type: ignore[arg-type]

    assert sessions(open_slots=True) == ["s2", "s5"]
    assert sessions(mode="ctf") == ["s1", "s2"]
    assert sessions(mode="ctf", map="dust") == ["s1"]
    assert sessions(version="1.2") == ["s1"]
    assert sessions(mode="ctf", open_slots=True, where=lambda i: i.players < 2) == ["s2"]


def test_a_real_session_advertises_its_settings(
    join: Callable[..., p2pstate.SharedState], app: str
) -> None:
    """join(max_players=..., version=..., metadata=...) as the lobby reads them."""
    alice = join(name="alice", max_players=2, version="1.2", metadata={"map": "dust"})
    (info,) = p2pstate.browse(app, 0.5, interfaces=LOOPBACK)
    assert (info.players, info.max_players, info.version, info.metadata) == (
        1,
        2,
        "1.2",
        {"map": "dust"},
    )
    assert p2pstate.browse(app, 0.5, interfaces=LOOPBACK, open_slots=True, map="dust") == [info]
    with Lobby(app, interfaces=LOOPBACK, open_slots=True) as lobby:
        eventually(lambda: [i.players for i in lobby.sessions] == [1])
        join(name="bob")  # now full
        eventually(lambda: lobby.sessions == [], timeout=8)
        alice.set_session_info(max_players=3, metadata={"map": "mirage"})
        eventually(lambda: [i.metadata for i in lobby.sessions] == [{"map": "mirage"}])
        alice.set_session_info(joinable=False)
        eventually(lambda: lobby.sessions == [], timeout=8)
    (info,) = p2pstate.browse(app, 0.5, interfaces=LOOPBACK)
    assert (info.players, info.max_players, info.joinable) == (2, 3, False)


# --------------------------------------------------------------------------- Lobby


class Recorder:
    def __init__(self) -> None:
        self.events: list[object] = []
        self.lock = threading.Lock()

    def __call__(self, event: object) -> None:
        with self.lock:
            self.events.append(event)

    def kinds(self) -> list[str]:
        with self.lock:
            return [type(e).__name__ for e in self.events]


def test_lobby_reports_sessions_appearing_changing_and_vanishing(
    fakes: FakeHosts, app: str
) -> None:
    got = Recorder()
    with Lobby(app, interfaces=LOOPBACK, grace=0.2) as lobby:
        remove = lobby.on_change(got)
        host = fakes.advertise("alice", properties={"players": "1", "m.map": "dust"})
        eventually(lambda: got.kinds() == ["SessionAppeared"])
        (info,) = lobby.sessions
        assert (info.host_name, info.players, info.metadata) == ("alice", 1, {"map": "dust"})

        host.update(properties={"players": "2", "m.map": "dust"})
        eventually(lambda: got.kinds() == ["SessionAppeared", "SessionChanged"])
        change = got.events[1]
        assert isinstance(change, SessionChanged)
        assert (change.old.players, change.new.players) == (1, 2)
        assert lobby.sessions == [change.new]

        host.withdraw()
        eventually(lambda: got.kinds()[-1:] == ["SessionVanished"])
        assert lobby.sessions == []
        # poll() saw the same events, in the same order.
        assert lobby.poll() == got.events
        assert lobby.poll() == []
        remove()
    assert not lobby.running
    with pytest.raises(RuntimeError, match="stopped"):
        lobby.start()


def test_lobby_filters_live(fakes: FakeHosts, app: str) -> None:
    """A session that stops matching (it filled up) vanishes; one that starts
    matching again (more room) appears."""
    with Lobby(app, interfaces=LOOPBACK, open_slots=True, mode="ctf", grace=0.1) as lobby:
        host = fakes.advertise(
            "a", properties={"players": "1", "max_players": "2", "m.mode": "ctf"}
        )
        fakes.advertise("b", session="other", properties={"players": "1", "m.mode": "dm"})
        eventually(lambda: [i.host_name for i in lobby.sessions] == ["a"])
        host.update(properties={"players": "2", "max_players": "2", "m.mode": "ctf"})
        eventually(lambda: lobby.sessions == [])
        host.update(properties={"players": "2", "max_players": "3", "m.mode": "ctf"})
        eventually(lambda: [i.max_players for i in lobby.sessions] == [3])
        kinds = [type(e) for e in lobby.poll()]
        assert kinds == [SessionAppeared, SessionVanished, SessionAppeared]


@pytest.mark.alone  # asserts a wall-clock bound
def test_the_refresh_catches_a_change_back_and_a_crashed_host(
    spawn: Callable[..., Any], app_name: str, fakes: FakeHosts
) -> None:
    """Two things a long-lived mDNS cache misses: a record changed back to an
    earlier value (zeroconf reports no update for a record it still holds),
    and a host that died without a goodbye (its record stays for minutes)."""
    fakes.app = app_name
    with Lobby(app_name, interfaces=LOOPBACK, refresh=1.0) as lobby:
        fake = fakes.advertise("fake", session="fake", properties={"players": "1"})
        eventually(lambda: [i.players for i in lobby.sessions] == [1])
        fake.update(properties={"players": "2"})
        eventually(lambda: [i.players for i in lobby.sessions] == [2])
        fake.update(properties={"players": "1"})  # back to what the cache still holds
        eventually(lambda: [i.players for i in lobby.sessions] == [1], timeout=5)

        peer = spawn()  # a real host, in a process of its own
        peer.wait_ready()
        eventually(lambda: "default" in [i.session for i in lobby.sessions])
        killed_at = time.monotonic()
        peer.kill()  # SIGKILL: no goodbye
        eventually(lambda: [i.session for i in lobby.sessions] == ["fake"], timeout=12)
        took = time.monotonic() - killed_at
    # Two missed refreshes of 1 s (+0.5 s of listening each), not mDNS's ~120 s.
    assert took < 8, f"a crashed host was listed for {took:.1f} s"


def test_a_graceful_handoff_reads_as_a_change(
    join: Callable[..., p2pstate.SharedState], app: str
) -> None:
    alice = join(name="alice")
    join(name="bob")
    with Lobby(app, interfaces=LOOPBACK) as lobby:
        started = time.monotonic()
        eventually(lambda: [(i.host_name, i.players) for i in lobby.sessions] == [("alice", 2)])
        first_seen = time.monotonic() - started
        lobby.poll()
        alice.close()  # hands over to bob
        eventually(lambda: [(i.host_name, i.players) for i in lobby.sessions] == [("bob", 1)])
        time.sleep(1.2)  # past the grace: no vanish came after all
        events = lobby.poll()
        kinds = [type(e).__name__ for e in events]
        assert kinds and set(kinds) == {"SessionChanged"}, (kinds, events)
        assert events[-1].new.epoch == 2  # type: ignore[union-attr]
    assert first_seen < 3.0, f"an existing session took {first_seen:.2f} s to show"


def test_a_crash_and_takeover_reads_as_a_change(spawn: Callable[..., Any], app_name: str) -> None:
    """kill -9 of the host: the next peer takes over at epoch 2 and is listed
    in its place; the dead host's record, which lingers in mDNS caches, is not."""
    first = spawn(name="first")
    first.wait_ready()
    spawn(name="second").wait_ready()
    with Lobby(app_name, interfaces=LOOPBACK, refresh=1.0) as lobby:
        eventually(lambda: [(i.host_name, i.players) for i in lobby.sessions] == [("first", 2)])
        lobby.poll()
        first.kill()
        eventually(lambda: [(i.host_name, i.epoch) for i in lobby.sessions] == [("second", 2)])
        time.sleep(2.5)  # two refreshes: the dead host's record is dropped meanwhile
        (info,) = lobby.sessions
        assert (info.host_name, info.epoch) == ("second", 2)
        kinds = [type(e).__name__ for e in lobby.poll()]
        assert kinds and set(kinds) == {"SessionChanged"}, kinds


def test_lobby_callbacks_may_raise_or_stop_it(fakes: FakeHosts, app: str) -> None:
    lobby = Lobby(app, interfaces=LOOPBACK)
    seen = threading.Event()

    def bad(event: object) -> None:
        raise RuntimeError("a bug in the game's callback")

    def stop_from_callback(event: object) -> None:
        lobby.stop()  # must not deadlock on its own thread
        seen.set()

    lobby.on_change(bad)
    lobby.on_change(stop_from_callback)
    with lobby:
        fakes.advertise("alice")
        assert seen.wait(5)
    assert not lobby.running
    assert "running" not in repr(lobby)


def test_every_app_and_a_session_filter(fakes: FakeHosts, app: str) -> None:
    fakes.advertise("alice", session="one")
    fakes.advertise("bob", session="two")
    with Lobby(None, session="two", interfaces=LOOPBACK) as lobby:
        eventually(lambda: [i.host_name for i in lobby.sessions if i.app == app] == ["bob"])
        assert all(i.session == "two" for i in lobby.sessions)
