"""Issue 16 item 7: the change log is bounded by bytes as well as by count,
so identical big restores cannot grow every replica without end."""

from __future__ import annotations

from dataclasses import replace

from simsession import CONFIG, Session

from p2pstate.codec import encode
from p2pstate.core.node import Node
from p2pstate.messages import Change


def _wire_bytes(changes: list[Change] | tuple[Change, ...]) -> int:
    return sum(len(encode(c.to_wire())) for c in changes)


Restore = tuple[str, tuple[tuple[str, bytes, str, int, float], ...]]


def _big_restore(keys: int, size: int = 60_000) -> Restore:
    return ("restore", tuple((f"k{i}", bytes([i]) * size, "", 0, 0.0) for i in range(keys)))


def _restore_many(session: Session, node: Node, op: tuple[object, ...], times: int) -> None:
    for _ in range(times):
        out = session.write(node, (op,))
        assert session.run_until(out.__len__, 10.0), session.tail()
        assert out[0].status == "ok", out[0]


def test_identical_big_restores_do_not_grow_the_log_past_its_byte_budget() -> None:
    session = Session()
    _, b = session.start(2)
    _restore_many(session, b, _big_restore(18), 40)  # ~1 MiB each, 40 MiB in all
    assert session.settle()
    budget = 32 * 1024 * 1024  # the default log_bytes
    for node in session.live():
        held = _wire_bytes(list(node.replica.log))
        assert held <= budget, (node.me.id, held, budget)
        assert node.replica.log_bytes <= session.net.config.log_bytes == budget
        assert len(session.values(node)) == 18


def test_a_change_bigger_than_the_budget_is_not_logged_and_peers_resync() -> None:
    session = Session(config=replace(CONFIG, log_bytes=200_000))
    a, b, c = session.start(3)
    session.put(a, "small", 1)
    session.net.partition({c.me.id})
    big = tuple(("set", f"k{i}", bytes(60_000)) for i in range(5))  # more than the budget
    out = session.write(b, big)
    assert session.run_until(lambda: bool(out)) and out[0].status == "ok"
    assert session.put(b, "after", 2).status == "ok"
    assert all(len(ch.ops) < 5 for node in (a, b) for ch in node.replica.log)
    assert a.replica.log_bytes <= 200_000
    before = a.stats["welcome_snapshot"]
    session.net.heal()
    assert session.settle(), session.tail()
    assert a.stats["welcome_snapshot"] == before + 1  # its resume point left the log
    assert len(session.digests()) == 1
    assert session.values(c)["after"] == 2 and len(session.values(c)) == 7


def test_the_log_drops_its_oldest_changes_to_stay_within_bytes() -> None:
    session = Session(config=replace(CONFIG, log_bytes=300_000))
    a, b = session.start(2)
    for i in range(20):
        assert session.put(b, f"v{i}", bytes(50_000)).status == "ok"
    assert session.settle()
    for node in (a, b):
        held = list(node.replica.log)
        assert 4 <= len(held) <= 6  # about 300 KB of 50 KB changes
        assert [c.seq for c in held] == list(range(held[0].seq, node.replica.seq + 1))
        assert node.replica.log_bytes == sum(node.replica.log_sizes)
