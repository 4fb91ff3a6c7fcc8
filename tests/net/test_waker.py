"""The I/O thread's wake-up: an eventfd on Linux, a zmq inproc pair elsewhere.
Both are tried here, on real zmq pollers and real sessions."""

from __future__ import annotations

import pytest
import zmq
from netkit import Join, eventually

from p2pstate import session


@pytest.fixture(params=[True, False], ids=["eventfd", "inproc"])
def eventfd(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    if request.param and not session._EVENTFD:
        pytest.skip("no eventfd on this platform")
    monkeypatch.setattr(session, "_EVENTFD", request.param)
    return bool(request.param)


def test_a_wake_up_wakes_the_poll_once_and_is_drained(eventfd: bool) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    waker = session._Waker(ctx, "n1")
    assert isinstance(waker.socket, int) == eventfd
    poller = zmq.Poller()
    poller.register(waker.socket, zmq.POLLIN)
    try:
        assert dict(poller.poll(0)) == {}
        for _ in range(3):
            waker.wake_once()  # one in flight is enough: the rest are skipped
        waker.wake()
        assert waker.socket in dict(poller.poll(1000))
        waker.drain_io()
        assert dict(poller.poll(0)) == {}, "drained: the poll must sleep again"
        waker.wake_once()  # drained, so a new command wakes it again
        assert waker.socket in dict(poller.poll(1000))
    finally:
        poller.unregister(waker.socket)
        waker.close()
        waker.close()  # a second close does nothing (an fd is never closed twice)
        waker.wake()  # nor does a wake-up after it
        ctx.term()


def test_writes_travel_with_either_wake_up(eventfd: bool, join: Join) -> None:
    a, b = join(), join()
    for i in range(200):
        b.set(f"k{i}", i, wait=False)
    b["last"] = eventfd
    eventually(lambda: a.get("last") == eventfd and a.get("k199") == 199)
    b.close()
    a.close()
