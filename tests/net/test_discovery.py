"""Real mDNS tests for p2pstate.discovery, confined to 127.0.0.1.

Every Zeroconf here (and inside Discovery) is bound to ["127.0.0.1"] only.
Each test uses its own random app name so records from other tests (or other
test runs on the machine) never match.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from zeroconf import DNSQuestionType, ServiceInfo, Zeroconf
from zeroconf import Error as ZeroconfError

from p2pstate.discovery import (
    ENV_INTERFACES,
    SERVICE_TYPE,
    Discovery,
    HostRecord,
    resolve_interfaces,
)

LOOPBACK = ["127.0.0.1"]
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
