"""Copies of a game started at the same moment make one session and lose no
write: real sessions on loopback, several in this process, with faults put
into what one copy sees of another (a missed mDNS record, a copy that starts
late, gives up, or never answers)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from netkit import eventually

import p2pstate
from p2pstate import SharedState
from p2pstate._startup_io import StartupAdapter
from p2pstate.discovery import HostRecord
from p2pstate.session import Runtime


@pytest.fixture
def runtimes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Runtime]]:
    """Every Runtime created during the test, in creation order."""
    made: list[Runtime] = []
    init = Runtime.__init__

    def tracked(self: Runtime, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Runtime, "__init__", tracked)
    yield made


def all_made_first(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Hold each new Runtime until *count* exist, so that a fault aimed at
    "the lowest node id" knows every id before any copy starts looking."""
    barrier = threading.Barrier(count)
    init = Runtime.__init__

    def held(self: Runtime, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        barrier.wait()

    monkeypatch.setattr(Runtime, "__init__", held)


def hide_records(
    monkeypatch: pytest.MonkeyPatch, hidden: Callable[[StartupAdapter, HostRecord], bool]
) -> None:
    """Make a copy miss the mDNS records for which *hidden* is true."""
    remember, observe = StartupAdapter.remember, StartupAdapter.observe_io
    monkeypatch.setattr(
        StartupAdapter, "remember", lambda rt, r: None if hidden(rt, r) else remember(rt, r)
    )
    monkeypatch.setattr(
        StartupAdapter, "observe_io", lambda rt, r: None if hidden(rt, r) else observe(rt, r)
    )


def start_copies(
    app: str, count: int, **options: Any
) -> tuple[dict[int, SharedState], dict[int, Exception]]:
    """Start *count* copies at once; each writes ``w<i>`` once it is in."""
    states: dict[int, SharedState] = {}
    errors: dict[int, Exception] = {}

    def start(i: int) -> None:
        try:
            s = p2pstate.join(app, interfaces=["127.0.0.1"], **options)
        except p2pstate.P2PStateError as exc:
            errors[i] = exc
            return
        s[f"w{i}"] = i  # acknowledged: must survive
        states[i] = s

    threads = [threading.Thread(target=start, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return states, errors


def assert_one_session_lost_nothing(states: dict[int, SharedState]) -> None:
    assert sum(s.is_host for s in states.values()) == 1
    keys = sorted(f"w{i}" for i in states)
    for s in states.values():
        eventually(lambda s=s: sorted(s) == keys)
        assert s.stats.get("stepped_down", 0) == 0
        assert not [e for e in s.poll() if isinstance(e, p2pstate.WritesRolledBack)]


def test_copies_started_together_make_one_session_and_lose_nothing() -> None:
    """Regression: two copies started at once both hosted, and the merge that
    followed rolled back a write that had already returned. Candidates now
    see each other while they look, and only the lowest node id hosts."""
    for _ in range(3):
        states, errors = start_copies(f"together-{secrets.token_hex(4)}", 3, discovery_window=0.3)
        try:
            assert not errors
            assert_one_session_lost_nothing(states)
        finally:
            for s in states.values():
                s.close()


@pytest.mark.parametrize("copies", [2, 3])
def test_copies_that_miss_a_lower_candidate_still_make_one_session(
    copies: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (a CI failure): under load one copy missed another's
    candidate record for its whole discovery window; each then believed it
    was the lowest and both hosted, and the merge rolled back an acknowledged
    write. Here every copy is blind to the candidate records of lower node
    ids, the worst case: the lowest must wait for the copies it sees."""
    hide_records(monkeypatch, lambda rt, r: r.epoch == 0 and r.node_id < rt.node_id)
    states, errors = start_copies(f"blind-{secrets.token_hex(4)}", copies, discovery_window=0.3)
    try:
        assert not errors and len(states) == copies
        assert_one_session_lost_nothing(states)
    finally:
        for s in states.values():
            s.close()


def test_a_late_lowest_copy_leaves_no_one_waiting(
    runtimes: list[Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (review): a copy that gave up on a slow lowest candidate,
    then was welcomed by it, kept its waiting deadline, and its I/O thread
    polled without sleeping for the rest of the session."""
    begin = StartupAdapter.begin_io
    delayed: list[threading.Timer] = []

    def slow_lowest(self: StartupAdapter, now: float) -> None:
        lowest = self.node_id == min(r.node_id for r in runtimes)
        if lowest and not delayed:  # its machine is busy: it decides 2.5 s late
            timer = threading.Timer(2.5, lambda: self.call(lambda: begin(self, time.monotonic())))
            delayed.append(timer)
            timer.start()
            return
        begin(self, now)

    all_made_first(monkeypatch, 3)
    monkeypatch.setattr(StartupAdapter, "begin_io", slow_lowest)
    states, errors = start_copies(
        f"late-{secrets.token_hex(4)}", 3, discovery_window=0.3, timeout=10
    )
    try:
        delayed[0].join()
        assert not errors
        assert_one_session_lost_nothing(states)
        for runtime in runtimes:
            # Once in, no copy waits for other starters any more: a deadline
            # left behind makes its I/O loop poll with a zero timeout.
            wait = runtime.run_on_io(lambda rt=runtime: rt.startup.election.next_deadline(), 2)
            assert wait is None
    finally:
        for s in states.values():
            s.close()


def test_a_copy_that_gave_up_is_not_made_a_member(
    runtimes: list[Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (review): the lowest copy, waiting for a copy that missed
    it, kept the Hello of a copy that then gave up, and replayed it when it
    hosted: a player who never was joined, became the successor that writes
    wait for, and left only at its timeout."""
    count = 4

    def ids() -> list[str]:
        return sorted(r.node_id for r in runtimes)

    # The highest copy misses the lowest's record: the lowest waits for it.
    hide_records(
        monkeypatch,
        lambda rt, r: (
            len(runtimes) == count
            and r.epoch == 0
            and rt.node_id == ids()[-1]
            and r.node_id == ids()[0]
        ),
    )
    start = Runtime.start
    gave_up: list[str] = []

    def impatient(self: Runtime, timeout: float) -> None:
        # The second lowest chooses the lowest, then gives up before it hosts.
        if self.node_id == ids()[1]:
            gave_up.append(self.node_id)
            timeout = 0.6
        start(self, timeout)

    all_made_first(monkeypatch, count)
    monkeypatch.setattr(Runtime, "start", impatient)
    states, errors = start_copies(f"gaveup-{secrets.token_hex(4)}", count, discovery_window=0.3)
    try:
        assert gave_up and list(errors) and len(states) == count - 1
        assert all(isinstance(e, p2pstate.SessionLostError) for e in errors.values())
        host = next(s for s in states.values() if s.is_host)
        host["after"] = 1
        time.sleep(0.5)
        joined = [e.peer.id for e in host.poll() if isinstance(e, p2pstate.PeerJoined)]
        assert gave_up[0] not in joined
        assert gave_up[0] not in {p.id for p in host.peers}
    finally:
        for s in states.values():
            s.close()


def test_a_silent_candidate_does_not_make_join_time_out(
    runtimes: list[Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (review): a copy that chose a lower candidate which never
    answered (killed while starting; its record lives on) waited so long
    for it that join() timed out with a long discovery window."""
    begin = StartupAdapter.begin_io

    def silent_lowest(self: StartupAdapter, now: float) -> None:
        if self.node_id != min(r.node_id for r in runtimes):
            begin(self, now)

    all_made_first(monkeypatch, 2)
    monkeypatch.setattr(StartupAdapter, "begin_io", silent_lowest)
    states, errors = start_copies(
        f"silent-{secrets.token_hex(4)}", 2, discovery_window=1.5, timeout=5.0
    )
    try:
        # The silent copy itself never gets in; the other hosts in time.
        assert len(errors) == 1, errors  # the silent copy
        assert len(states) == 1, errors
        ((i, s),) = states.items()
        assert s.is_host and sorted(s) == [f"w{i}"]
    finally:
        for s in states.values():
            s.close()


def test_a_copy_blind_to_the_lowest_whose_rivals_chose_it_joins_it(
    runtimes: list[Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the simulator (tests/core/test_startup.py): the second lowest
    copy misses the lowest's record and waits for the two highest, which
    chose the lowest; the lowest waits for it. Both waits ran out together,
    both hosted, and the merge rolled back a write."""
    count = 4

    def ids() -> list[str]:
        return sorted(r.node_id for r in runtimes)

    hide_records(
        monkeypatch,
        lambda rt, r: (
            len(runtimes) == count
            and r.epoch == 0
            and rt.node_id == ids()[1]
            and r.node_id == ids()[0]
        ),
    )
    all_made_first(monkeypatch, count)
    states, errors = start_copies(f"asked-{secrets.token_hex(4)}", count, discovery_window=0.3)
    try:
        assert not errors and len(states) == count
        assert_one_session_lost_nothing(states)
    finally:
        for s in states.values():
            s.close()
