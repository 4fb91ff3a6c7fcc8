"""Issue 16 item 2, the core's part: the host refuses a session-info write
that no host could advertise, with the check the API makes (core/advert.py)."""

from __future__ import annotations

import pytest
from simsession import done, start_players

from p2pstate.core.advert import info_fault


@pytest.mark.parametrize(
    "metadata",
    [
        {"k": "v" * 300},
        {f"k{i}": "v" * 120 for i in range(12)},
        {"map": "a", "MAP": "b"},
        {"a=b": "c"},
        {"tab\there": "c"},
    ],
    ids=["entry", "total", "case", "equals", "control"],
)
def test_a_members_info_write_that_cannot_be_advertised_changes_nothing(
    metadata: dict[str, str],
) -> None:
    session, (alice, bob) = start_players("a1ice.1", "b0b.1")
    out = done(session, bob, ("info", {"metadata": metadata}))
    assert out.status == "invalid" and out.detail == info_fault({"metadata": metadata}, 900)
    assert session.settle()
    assert all("metadata" not in n.replica.info for n in session.live())
    assert done(session, bob, ("info", {"metadata": {"map": "dust"}})).status == "ok"
    assert session.settle()
    assert all(n.replica.info["metadata"] == {"map": "dust"} for n in session.live())
    assert alice.stats["info_refused"] == 1


def test_the_record_is_checked_whole_not_one_write_at_a_time() -> None:
    session, (_, bob) = start_players("a1ice.1", "b0b.1")
    assert done(session, bob, ("info", {"version": "v" * 100})).status == "ok"
    half = {f"k{i}": "v" * 90 for i in range(9)}  # fits alone, not with the version
    assert info_fault({"metadata": half}, 900) is None
    assert done(session, bob, ("info", {"metadata": half})).status == "invalid"
