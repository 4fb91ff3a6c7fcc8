"""Real mDNS tests for p2pstate.discovery, confined to 127.0.0.1.

Every Zeroconf here (and inside Discovery) is bound to ["127.0.0.1"] only.
Each test uses its own random app name so records from other tests (or other
test runs on the machine) never match.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
import secrets
import select
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from zeroconf import (  # type: ignore[attr-defined]  # public, but not in __all__
    DNSIncoming,
    DNSOutgoing,
    DNSQuestionType,
    DNSRecord,
    ServiceInfo,
    Zeroconf,
)
from zeroconf import Error as ZeroconfError

from p2pstate import discovery as discovery_module
from p2pstate.discovery import (
    ENV_INTERFACES,
    SERVICE_TYPE,
    Discovery,
    HostRecord,
    resolve_interfaces,
)

LOOPBACK = ["127.0.0.1"]
MDNS_GROUP = "224.0.0.251"
MDNS_PORT = 5353
TYPE_A, TYPE_PTR, TYPE_TXT, TYPE_SRV = 1, 12, 16, 33
REPO_ROOT = Path(__file__).resolve().parents[2]

Event = tuple[str, HostRecord | None, str]


def _probe_loopback_mdns() -> str | None:
    """Return None if mDNS works on 127.0.0.1 here, else the reason it does not."""
    name = f"probe-{secrets.token_hex(4)}.{SERVICE_TYPE}"
    info = ServiceInfo(
        SERVICE_TYPE,
        name,
        port=9,
        properties={"probe": "1"},
        server=f"probe-{secrets.token_hex(4)}.local.",
        parsed_addresses=["127.0.0.1"],
    )
    zcs: list[Zeroconf] = []
    try:
        responder = Zeroconf(interfaces=LOOPBACK)
        zcs.append(responder)
        querier = Zeroconf(interfaces=LOOPBACK)
        zcs.append(querier)
        assert responder.loop is not None
        asyncio.run_coroutine_threadsafe(
            responder.async_register_service(info, cooperating_responders=True),
            responder.loop,
        ).result(5)
        found = querier.get_service_info(
            SERVICE_TYPE, name, timeout=2000, question_type=DNSQuestionType.QM
        )
        if found is None:
            return "a service registered on 127.0.0.1 was not resolved within 2 s"
        return None
    except (OSError, ZeroconfError, TimeoutError, concurrent.futures.TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        for zc in zcs:
            zc.close()


@pytest.fixture(scope="module")
def loopback_mdns() -> None:
    """Skip (not fail) where mDNS on 127.0.0.1 cannot work, e.g. lo is down."""
    reason = _probe_loopback_mdns()
    if reason is not None:
        pytest.skip(
            "mDNS over 127.0.0.1 does not work here "
            f"({reason}); loopback must be up: `ip link set lo up` (as root)"
        )


@pytest.fixture
def app() -> str:
    return f"test-{secrets.token_hex(4)}"


@pytest.fixture
def make_discovery(loopback_mdns: None) -> Iterator[Callable[[], Discovery]]:
    created: list[Discovery] = []

    def make() -> Discovery:
        disc = Discovery(LOOPBACK)
        created.append(disc)
        return disc

    yield make
    for disc in created:
        disc.close()


def _node_id() -> str:
    return secrets.token_hex(16)


def _advertise(disc: Discovery, app: str, **overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "app": app,
        "session": "lobby",
        "node_id": _node_id(),
        "host_name": "Alice",
        "port": 40123,
        "addresses": ["127.0.0.1"],
        "epoch": 3,
        "session_id": secrets.token_hex(8),
        "properties": {"players": "1", "max_players": "4", "joinable": "1"},
    }
    fields.update(overrides)
    disc.advertise(**fields)  # type: ignore[arg-type]
    return fields


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


class _Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, kind: str, record: HostRecord | None, name: str) -> None:
        with self._lock:
            self.events.append((kind, record, name))

    def kinds(self) -> list[str]:
        with self._lock:
            return [kind for kind, _, _ in self.events]

    def last(self) -> Event:
        with self._lock:
            return self.events[-1]


# --------------------------------------------------------------------------- tests


@pytest.mark.alone  # asserts a wall-clock bound
def test_advertise_then_browse_from_second_instance(
    make_discovery: Callable[[], Discovery], app: str
) -> None:
    host, peer = make_discovery(), make_discovery()
    started = time.monotonic()
    fields = _advertise(host, app, properties={"players": "2", "version": "1.4"})
    assert time.monotonic() - started < 0.5, "advertise() must not block on probing"

    found = peer.browse(app, "lobby", timeout=5.0, first=True)

    assert len(found) == 1
    record = found[0]
    assert record == HostRecord(
        app=app,
        session="lobby",
        node_id=str(fields["node_id"]),
        host_name="Alice",
        endpoints=("tcp://127.0.0.1:40123",),
        epoch=3,
        session_id=str(fields["session_id"]),
        properties={"players": "2", "version": "1.4"},
    )


def test_browse_filters_other_app_and_session(
    make_discovery: Callable[[], Discovery], app: str
) -> None:
    wanted, other_app, other_session = make_discovery(), make_discovery(), make_discovery()
    peer = make_discovery()
    wanted_fields = _advertise(wanted, app)
    _advertise(other_app, app + "-other")
    _advertise(other_session, app, session="elsewhere")

    same_session = peer.browse(app, "lobby", timeout=1.0)
    any_session = peer.browse(app, None, timeout=1.0)

    assert [r.node_id for r in same_session] == [wanted_fields["node_id"]]
    assert sorted(r.session for r in any_session) == ["elsewhere", "lobby"]
    assert all(r.app == app for r in any_session)


def test_update_is_seen_by_watcher(make_discovery: Callable[[], Discovery], app: str) -> None:
    host, peer = make_discovery(), make_discovery()
    recorder = _Recorder()
    stop = peer.watch(app, None, recorder)
    _advertise(host, app, epoch=1, properties={"players": "1"})
    assert _wait_for(lambda: recorder.kinds() == ["added"])

    host.update(epoch=2, properties={"players": "2", "joinable": "0"})

    assert _wait_for(lambda: recorder.kinds() == ["added", "updated"])
    _, record, _ = recorder.last()
    assert record is not None
    assert record.epoch == 2
    assert record.properties == {"players": "2", "joinable": "0"}
    # properties=None keeps the extra keys
    host.update(epoch=5)
    assert _wait_for(lambda: recorder.kinds()[-1:] == ["updated"] and len(recorder.kinds()) == 3)
    _, record, _ = recorder.last()
    assert record is not None and record.epoch == 5 and record.properties["players"] == "2"
    stop()
    stop()  # idempotent


def test_withdraw_is_seen_as_removed(make_discovery: Callable[[], Discovery], app: str) -> None:
    host, peer = make_discovery(), make_discovery()
    recorder = _Recorder()
    stop = peer.watch(app, "lobby", recorder)
    _advertise(host, app)
    assert _wait_for(lambda: recorder.kinds() == ["added"])
    added_name = recorder.last()[2]

    host.withdraw()
    host.withdraw()  # idempotent

    assert _wait_for(lambda: recorder.kinds() == ["added", "removed"])
    assert recorder.last() == ("removed", None, added_name)
    stop()


def test_a_withdrawn_candidate_record_never_removes_the_host_record(
    make_discovery: Callable[[], Discovery], app: str
) -> None:
    """Regression: a node withdrew its candidate record (epoch 0) when it
    joined someone, then took over as host under the same instance name while
    the candidate's goodbyes were still going out; a late goodbye deleted the
    new host record from listeners' caches. The two records have two names."""
    host, peer = make_discovery(), make_discovery()
    recorder = _Recorder()
    stop = peer.watch(app, "lobby", recorder)
    fields = _advertise(host, app, epoch=0)
    assert _wait_for(lambda: recorder.kinds() == ["added"])
    candidate_name = recorder.last()[2]
    host.withdraw()  # it joined someone: goodbyes for the candidate record go out...
    _advertise(host, app, node_id=fields["node_id"], epoch=2)  # ... while it takes over
    time.sleep(1.5)  # past every goodbye
    live = {name for kind, record, name in recorder.events if record is not None}
    removed = {name for kind, record, name in recorder.events if kind == "removed"}
    host_names = live - {candidate_name}
    assert host_names, recorder.events
    assert not host_names & removed, "the host record was removed by the candidate's goodbye"
    stop()


def test_watch_callback_exception_does_not_break_watch(
    make_discovery: Callable[[], Discovery], app: str
) -> None:
    host, peer = make_discovery(), make_discovery()
    calls: list[str] = []

    def explode(kind: str, record: HostRecord | None, name: str) -> None:
        calls.append(kind)
        raise RuntimeError("callback bug")

    peer.watch(app, None, explode)
    _advertise(host, app, epoch=1)
    assert _wait_for(lambda: calls == ["added"])
    host.update(epoch=2)
    assert _wait_for(lambda: calls == ["added", "updated"])


def test_garbled_txt_is_ignored(make_discovery: Callable[[], Discovery], app: str) -> None:
    good_host, peer = make_discovery(), make_discovery()
    good = _advertise(good_host, app)
    base: dict[str, str | bytes] = {
        "app": app,
        "session": "lobby",
        "id": "ab12",
        "name": "Mallory",
        "epoch": "1",
        "sid": "s1",
    }
    garbled: list[tuple[dict[str, str | bytes], int]] = [
        ({**base, "epoch": "1x"}, 4000),
        ({**base, "epoch": "-4"}, 4001),
        ({k: v for k, v in base.items() if k != "sid"}, 4002),
        ({**base, "id": "not-hex!"}, 4003),
        ({**base, "app": b"\xff\xfe"}, 4004),
        (base, 0),  # no usable endpoint
    ]
    recorder = _Recorder()
    peer.watch(app, None, recorder)
    raw = Zeroconf(interfaces=LOOPBACK)
    try:
        assert raw.loop is not None
        for i, (props, port) in enumerate(garbled):
            info = ServiceInfo(
                SERVICE_TYPE,
                f"garbled-{i}-{app}.{SERVICE_TYPE}",
                port=port,
                properties=props,
                server=f"garbled-{i}-{app}.local.",
                parsed_addresses=["127.0.0.1"],
            )
            asyncio.run_coroutine_threadsafe(
                raw.async_register_service(info, cooperating_responders=True), raw.loop
            ).result(5)

        found = peer.browse(app, None, timeout=1.0)
    finally:
        raw.close()

    assert [r.node_id for r in found] == [good["node_id"]]
    assert all(
        record is not None and record.node_id == good["node_id"] for _, record, _ in recorder.events
    )


def test_advertise_rejects_oversized_or_invalid_txt(
    make_discovery: Callable[[], Discovery], app: str
) -> None:
    host = make_discovery()
    with pytest.raises(ValueError, match="<= 255"):
        _advertise(host, app, properties={"metadata": "x" * 250})
    with pytest.raises(ValueError, match="1300"):
        _advertise(host, app, properties={f"k{i}": "y" * 200 for i in range(7)})
    with pytest.raises(ValueError, match="reserved"):
        _advertise(host, app, properties={"Epoch": "9"})
    with pytest.raises(ValueError, match="hex"):
        _advertise(host, app, node_id="node-1")
    with pytest.raises(RuntimeError, match="not advertising"):
        host.update(epoch=1)
    # A rejected advertise leaves nothing half-registered, and a valid one still works.
    _advertise(host, app)
    with pytest.raises(ValueError, match="<= 255"):
        host.update(properties={"metadata": "x" * 300})
    host.update(epoch=4)


def test_resolve_interfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_INTERFACES, " 127.0.0.1, 10.1.2.3,,127.0.0.1 ")
    assert resolve_interfaces(None) == ["127.0.0.1", "10.1.2.3"]
    assert resolve_interfaces(["192.168.7.7"]) == ["192.168.7.7"]  # explicit wins

    monkeypatch.setenv(ENV_INTERFACES, "eth0")
    with pytest.raises(ValueError, match=ENV_INTERFACES):
        resolve_interfaces(None)
    with pytest.raises(ValueError):
        resolve_interfaces([])
    with pytest.raises(TypeError):
        resolve_interfaces("127.0.0.1")

    # Automatic choice: only reads local interface addresses, opens no socket.
    monkeypatch.delenv(ENV_INTERFACES)
    auto = resolve_interfaces(None)
    assert auto
    assert all(addr.count(".") == 3 and not addr.startswith("169.254.") for addr in auto)
    assert "127.0.0.1" not in auto or auto == ["127.0.0.1"]


def test_close_leaves_no_thread_behind(loopback_mdns: None, app: str) -> None:
    before = set(threading.enumerate())
    host, peer = Discovery(LOOPBACK), Discovery(LOOPBACK)
    _advertise(host, app)
    recorder = _Recorder()
    peer.watch(app, None, recorder)
    assert _wait_for(lambda: recorder.kinds() == ["added"])
    peer.browse(app, None, timeout=0.2)

    host.close()
    assert _wait_for(lambda: recorder.kinds() == ["added", "removed"]), "close sends goodbye"
    peer.close()
    host.close()  # idempotent
    peer.close()

    assert _wait_for(lambda: set(threading.enumerate()) <= before, timeout=2.0), (
        set(threading.enumerate()) - before
    )
    with pytest.raises(RuntimeError, match="closed"):
        _advertise(host, app)


def test_host_in_another_process_is_found(
    make_discovery: Callable[[], Discovery], app: str
) -> None:
    node_id = _node_id()
    script = textwrap.dedent(
        f"""
        import sys, time
        from p2pstate.discovery import Discovery
        disc = Discovery(["127.0.0.1"])
        disc.advertise(app={app!r}, session="lobby", node_id={node_id!r},
                       host_name="Remote", port=41000, addresses=["127.0.0.1"],
                       epoch=7, session_id="remote-sid", properties={{"players": "3"}})
        print("ready", flush=True)
        time.sleep(30)  # the test kills us long before; bounded in case it cannot
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10.0)
        line = proc.stdout.readline() if ready else ""
        assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
        peer = make_discovery()
        found = peer.browse(app, "lobby", timeout=5.0, first=True)
        assert len(found) == 1
        record = found[0]
        assert record.node_id == node_id
        assert record.host_name == "Remote"
        assert record.endpoints == ("tcp://127.0.0.1:41000",)
        assert record.epoch == 7
        assert record.session_id == "remote-sid"
        assert record.properties == {"players": "3"}
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()


def test_usable_from_inside_a_running_asyncio_loop(loopback_mdns: None, app: str) -> None:
    # Zeroconf would attach to a running loop and the blocking calls would deadlock it.
    async def main() -> list[HostRecord]:
        with Discovery(LOOPBACK) as host, Discovery(LOOPBACK) as peer:
            _advertise(host, app)
            return peer.browse(app, None, timeout=5.0, first=True)

    found = asyncio.run(main())
    assert len(found) == 1


def test_methods_callable_from_a_watch_callback(
    make_discovery: Callable[[], Discovery], app: str
) -> None:
    host = make_discovery()
    before = set(threading.enumerate())
    peer = Discovery(LOOPBACK)
    seen: list[str] = []
    stops: list[Callable[[], None]] = []

    def on_event(kind: str, record: HostRecord | None, name: str) -> None:
        # Runs on zeroconf's thread: none of these may wait for that thread.
        seen.append(kind)
        peer.watch(app, None, lambda *_: None)
        stops[0]()
        peer.close()

    stops.append(peer.watch(app, None, on_event))
    _advertise(host, app)
    assert _wait_for(lambda: seen == ["added"])
    # close() from the callback hands off to a short-lived thread that joins zeroconf's.
    assert _wait_for(lambda: set(threading.enumerate()) <= before, timeout=2.0)
    assert seen == ["added"]
    with pytest.raises(RuntimeError, match="closed"):
        peer.watch(app, None, lambda *_: None)


# --------------------------------------------------------------------------- one-shot legacy query


def _fake_host_info(label: str, txt: dict[str, str | bytes], port: int = 40555) -> ServiceInfo:
    return ServiceInfo(
        SERVICE_TYPE,
        f"{label}.{SERVICE_TYPE}",
        port=port,
        properties=txt,
        server=f"{label}.local.",
        parsed_addresses=["127.0.0.1"],
    )


def _txt(app: str | bytes, node_id: str, **overrides: str | bytes) -> dict[str, str | bytes]:
    return {
        "app": app,
        "session": "lobby",
        "id": node_id,
        "name": "Fake",
        "epoch": "1",
        "sid": "fake-sid",
        **overrides,
    }


def _all_records(info: ServiceInfo) -> list[DNSRecord]:
    return [info.dns_pointer(), info.dns_service(), info.dns_text(), *info.dns_addresses()]


def _response(query_id: int, records: list[DNSRecord], flags: int = 0x8400) -> bytes:
    """A DNS message (by default an authoritative response) holding ``records``."""
    out = DNSOutgoing(flags, False, query_id)
    for record in records:
        out.add_answer_at_time(record, 0)
    packet: bytes = out.packets()[0]
    return packet


Reply = Callable[[DNSIncoming], list[tuple[bytes, bool]]]


class _FakeResponder:
    """Answers legacy mDNS queries seen on 127.0.0.1 as ``reply`` says.

    Hears 224.0.0.251:5353 on 127.0.0.1 only (bound to the group address, never
    0.0.0.0) and answers each query that came from a port other than 5353 by
    unicast to its sender: ``reply(query)`` lists (packet, from_port_5353). The
    packet goes out from 127.0.0.1:5353 like a real responder's, or else from
    an ephemeral port of 127.0.0.1.
    """

    def __init__(self, reply: Reply) -> None:
        self._reply = reply
        self._lock = threading.Lock()
        self._queries: list[DNSIncoming] = []
        self.sent = 0
        self._rx = self._shared_5353_socket(MDNS_GROUP)
        self._rx.setsockopt(
            socket.IPPROTO_IP,
            socket.IP_ADD_MEMBERSHIP,
            socket.inet_aton(MDNS_GROUP) + socket.inet_aton("127.0.0.1"),
        )
        self._tx = self._shared_5353_socket("127.0.0.1")
        self._other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._other.bind(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-mdns-responder")
        self._thread.start()

    @staticmethod
    def _shared_5353_socket(address: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):  # zeroconf sets it on its 5353 sockets
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address, MDNS_PORT))
        return sock

    def queries(self) -> list[DNSIncoming]:
        with self._lock:
            return list(self._queries)

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._rx], [], [], 0.05)
            if not ready:
                continue
            data, source = self._rx.recvfrom(9000)
            if source[1] == MDNS_PORT:
                continue  # ordinary mDNS traffic, not a legacy query
            query = DNSIncoming(data, source)
            if not query.valid or not query.is_query():
                continue
            with self._lock:
                self._queries.append(query)
            for packet, from_5353 in self._reply(query):
                (self._tx if from_5353 else self._other).sendto(packet, source)
                with self._lock:
                    self.sent += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in (self._rx, self._tx, self._other):
            sock.close()


@pytest.fixture
def fake_responder(loopback_mdns: None) -> Iterator[Callable[[Reply], _FakeResponder]]:
    created: list[_FakeResponder] = []

    def make(reply: Reply) -> _FakeResponder:
        responder = _FakeResponder(reply)
        created.append(responder)
        return responder

    yield make
    for responder in created:
        responder.close()


@pytest.mark.alone  # asserts a wall-clock bound
@pytest.mark.parametrize("reannounce", [False, True], ids=["idle-host", "just-announced"])
def test_back_to_back_cold_browses_each_find_the_host_fast(
    make_discovery: Callable[[], Discovery], app: str, reannounce: bool
) -> None:
    # Each browse by multicast makes the host multicast its answer, which RFC 6762
    # then forbids it to repeat for a second (same for its own announcements): a
    # multicast-only browse within that second waits up to ~1.1 s.
    host = make_discovery()
    fields = _advertise(host, app)
    for attempt in range(10):
        if reannounce:
            host.update(epoch=10 + attempt)
        with Discovery(LOOPBACK) as peer:  # a cold cache, as in join()
            started = time.monotonic()
            found = peer.browse(app, "lobby", timeout=0.3, first=True)
            elapsed = time.monotonic() - started
        assert [r.node_id for r in found] == [fields["node_id"]], f"attempt {attempt}"
        assert elapsed < 0.3, f"attempt {attempt} took {elapsed:.3f} s"
        if reannounce:
            assert found[0].epoch == 10 + attempt


def test_browse_without_legacy_answers_still_finds_host(
    make_discovery: Callable[[], Discovery], app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a network that filters legacy queries: the multicast path alone works.
    monkeypatch.setattr(discovery_module, "_open_legacy_socket", lambda address: None)
    host, peer = make_discovery(), make_discovery()
    fields = _advertise(host, app)
    found = peer.browse(app, "lobby", timeout=5.0, first=True)
    assert [r.node_id for r in found] == [fields["node_id"]]


def test_legacy_socket_binds_to_the_interface_address() -> None:
    sock = discovery_module._open_legacy_socket("127.0.0.1")
    assert sock is not None
    try:
        address, port = sock.getsockname()
        assert address == "127.0.0.1"
        assert port not in (0, MDNS_PORT)
    finally:
        sock.close()
    for unusable in ("0.0.0.0", "::1", "224.0.0.251", "not-an-ip"):
        assert discovery_module._open_legacy_socket(unusable) is None


def test_browse_asks_again_for_records_an_answer_lacked(
    fake_responder: Callable[[Reply], _FakeResponder], app: str
) -> None:
    # A responder that answers each question bare, without additionals: the
    # browse must ask for SRV and TXT, then for the A record the SRV names.
    node_id = secrets.token_hex(8)
    info = _fake_host_info(f"lazy-{app}", _txt(app, node_id))
    assert info.server is not None

    def reply(query: DNSIncoming) -> list[tuple[bytes, bool]]:
        records: list[DNSRecord] = []
        for question in query.questions:
            name = question.name.lower()
            if question.type == TYPE_PTR and name == SERVICE_TYPE.lower():
                records.append(info.dns_pointer())
            elif question.type == TYPE_SRV and name == info.key:
                records.append(info.dns_service())
            elif question.type == TYPE_TXT and name == info.key:
                records.append(info.dns_text())
            elif question.type == TYPE_A and name == info.server.lower():
                records.extend(info.dns_addresses())
        return [(_response(query.id, records), True)] if records else []

    responder = fake_responder(reply)
    with Discovery(LOOPBACK) as peer:
        found = peer.browse(app, "lobby", timeout=1.0, first=True)

    assert found == [
        HostRecord(
            app=app,
            session="lobby",
            node_id=node_id,
            host_name="Fake",
            endpoints=("tcp://127.0.0.1:40555",),
            epoch=1,
            session_id="fake-sid",
            properties={},
        )
    ]
    asked = {q.type for query in responder.queries() for q in query.questions}
    assert {TYPE_PTR, TYPE_SRV, TYPE_TXT, TYPE_A} <= asked


def test_garbled_legacy_replies_are_ignored(
    make_discovery: Callable[[], Discovery],
    fake_responder: Callable[[Reply], _FakeResponder],
    app: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good_host, peer = make_discovery(), make_discovery()
    good = _advertise(good_host, app)
    # Would be a perfectly good host, if any of the ways it arrives were accepted.
    spoof = _fake_host_info(f"spoof-{app}", _txt(app, "5b00f"))
    bad_txt = _fake_host_info(f"badtxt-{app}", _txt(app, "bad1", epoch="1x"))
    bad_utf8 = _fake_host_info(f"badutf-{app}", _txt(b"\xff\xfe", "bad2"))
    no_port = _fake_host_info(f"noport-{app}", _txt(app, "bad3"), port=0)
    ghost = _fake_host_info(f"ghost-{app}", _txt(app, "bad4"))  # PTR, then nothing
    other_type = ServiceInfo(
        "_other._tcp.local.",
        f"other-{app}._other._tcp.local.",
        port=40666,
        properties=_txt(app, "bad5"),
        server=f"other-{app}.local.",
        parsed_addresses=["127.0.0.1"],
    )

    def garbage(query: DNSIncoming) -> list[tuple[bytes, bool]]:
        qid = query.id
        seen_ids = {q.id for q in responder.queries()}
        other_id = next(i for i in range(1, 0x10000) if i not in seen_ids)
        valid = _response(qid, _all_records(spoof))
        loop_name = struct.pack("!6H", qid, 0x8400, 1, 0, 0, 0) + b"\xc0\x0c\x00\x0c\x00\x01"
        goodbyes: list[DNSRecord] = [
            spoof.dns_pointer(override_ttl=0),
            spoof.dns_service(override_ttl=0),
            spoof.dns_text(override_ttl=0),
            *spoof.dns_addresses(override_ttl=0),
        ]
        return [
            (b"", True),
            (b"\x00", True),
            (secrets.token_bytes(40), True),
            (secrets.token_bytes(9500), True),  # longer than any mDNS message
            (struct.pack("!6H", qid, 0x8400, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF), True),
            (loop_name, True),  # a name compressed into a pointer to itself
            (valid[: len(valid) // 2], True),  # cut short
            (_response(other_id, _all_records(spoof)), True),  # not our id
            (valid, False),  # not from port 5353
            (_response(qid, _all_records(spoof), flags=0), True),  # a query, not an answer
            (_response(qid, goodbyes), True),  # TTL 0: goodbyes
            (_response(qid, _all_records(bad_txt)), True),
            (_response(qid, _all_records(bad_utf8)), True),
            (_response(qid, _all_records(no_port)), True),
            (_response(qid, [ghost.dns_pointer()]), True),
            (_response(qid, _all_records(other_type)), True),
        ]

    responder = fake_responder(garbage)
    caplog.set_level(logging.DEBUG, logger="p2pstate.discovery")

    everything = peer.browse(app, None, timeout=0.5)
    first = peer.browse(app, None, timeout=2.0, first=True)

    assert [r.node_id for r in everything] == [good["node_id"]]
    assert [r.node_id for r in first] == [good["node_id"]]
    assert responder.queries(), "the browse sent no legacy query"
    assert responder.sent >= 16
    # The garbage did reach the legacy socket and was turned away there.
    assert "(not port 5353)" in caplog.text
    assert "invalid or unasked-for" in caplog.text
    assert "bad epoch '1x'" in caplog.text  # decoded, then refused like a multicast one


def test_legacy_parser_survives_mutated_packets() -> None:
    # Bit flips, cuts and splices of a valid answer, straight into the parser.
    info = _fake_host_info("fuzz", _txt("fuzz-app", "f00d"))
    nsec = info.dns_address_nsec()
    assert nsec is not None
    valid = _response(4242, [*_all_records(info), nsec])
    delivered: list[HostRecord] = []
    query = discovery_module._LegacyQuery([], lambda name, record: delivered.append(record))
    try:
        query._ids.add(4242)
        query._handle(valid, ("127.0.0.1", MDNS_PORT))
        assert [r.node_id for r in delivered] == ["f00d"]
        rng = random.Random(6762)
        for _ in range(3000):
            packet = bytearray(valid)
            for _ in range(rng.randint(1, 6)):
                pick = rng.random()
                if pick < 0.6 and packet:
                    packet[rng.randrange(len(packet))] = rng.randrange(256)
                elif pick < 0.8 and packet:
                    del packet[rng.randrange(len(packet)) :]
                else:
                    start = rng.randrange(len(valid))
                    packet[rng.randrange(len(packet) + 1) :] = valid[start:]
            packet[:2] = (4242).to_bytes(2, "big")  # keep our id, or most are dropped early
            query._handle(bytes(packet), ("127.0.0.1", MDNS_PORT))
    finally:
        query.close()
