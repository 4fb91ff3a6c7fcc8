"""The lan worker's tally of what it was told was undone (``Reports``), fed
the library's events by hand: the fault rows compare it with the count, so
it must net out exactly, a declined write applied after all included."""

from __future__ import annotations

from lanworker import Reports

from p2pstate import RolledBackWrite, WritesRestored, WritesRolledBack

ME, OTHER, KEY = "me.1", "other.1", "counter"


def _w(writer: str, request: int, key: str = KEY) -> RolledBackWrite:
    return RolledBackWrite(writer=writer, request=request, keys=(key,))


def _reported(r: Reports) -> int:
    s = r.summary(KEY)
    return s["mine"] + s["more"] - s["applied"]  # as faultrows.run_row nets it


def test_rolled_back_then_restored_nets_to_nothing() -> None:
    r = Reports()
    mine = (_w(ME, 1), _w(ME, 2))
    r.rolled_back(WritesRolledBack(writes=(*mine, _w(OTHER, 9)), mine=mine, more=3))
    assert r.summary(KEY) == {"all": 3, "mine": 2, "more": 3, "applied": 0}
    r.restored(WritesRestored(writes=(_w(ME, 1),), mine=(_w(ME, 1),), more=1))
    assert _reported(r) == 1 + 2


def test_a_declined_write_applied_after_all_counts_one_increment_more() -> None:
    """apply_op's attempt 5 was declined (a conflict: its answer from the
    other half was lost) and retried as 6; the history that won applied 5:
    the count holds one more increment than the calls that returned."""
    r = Reports()
    r.restored(WritesRestored(writes=(_w(ME, 5),), mine=(_w(ME, 5),)))
    assert r.summary(KEY) == {"all": 0, "mine": 0, "more": 0, "applied": 1}
    assert _reported(r) == -1
    r.restored(WritesRestored(writes=(_w(ME, 7, "elsewhere"),), mine=(_w(ME, 7, "elsewhere"),)))
    assert r.summary(KEY)["applied"] == 1  # another key's write is not the counter's
