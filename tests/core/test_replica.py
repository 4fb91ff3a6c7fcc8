"""Replica: applying changes, snapshots, log matching."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from p2pstate.core.replica import Replica, history_contains
from p2pstate.events import HostChanged, KeyChanged, KeyDeleted, PeerJoined, PeerLeft
from p2pstate.messages import Change, Member, Snapshot, from_frame, to_frame

A = Member(id="a", name="A", endpoints=("sim://a",), joined_seq=1)
B = Member(id="b", name="B", endpoints=("sim://b",), joined_seq=2)
C = Member(id="c", name="C", endpoints=("sim://c",), joined_seq=5)


def change(seq: int, *ops: tuple[Any, ...], epoch: int = 1, origin: str = "a", **kw: Any) -> Change:
    return Change(seq=seq, epoch=epoch, origin=origin, ops=ops, **kw)


def history() -> list[Change]:
    """A session: A hosts at epoch 1, B joins, writes, C joins, A dies, B hosts at epoch 2."""
    return [
        change(1, ("join", A), ("term", 1, "a", None, "created")),
        change(2, ("join", B)),
        change(3, ("set", "x", 1), writer="b", req=1),
        change(4, ("set", "y", [1, 2]), writer="b", req=2, acked_upto=1),
        change(5, ("join", C)),
        change(6, ("del", "x"), writer="c", req=1),
        change(7, ("term", 2, "b", "a", "failover"), ("leave", "a", "failed"), epoch=2, origin="b"),
        change(8, ("set", "z", {"k": "v"}), writer="c", req=2, epoch=2, origin="b"),
        change(
            9,
            writer="c",
            req=3,
            acked_upto=2,
            status="conflict",
            detail={"key": "z"},
            epoch=2,
            origin="b",
        ),
    ]


def replay(changes: list[Change], *, log_keep: int = 4096) -> Replica:
    r = Replica(log_keep=log_keep)
    r.session_id = "s"
    for c in changes:
        assert c.seq == r.seq + 1
        r.apply(c)
    return r


def state(r: Replica) -> dict[str, Any]:
    return {
        "session": r.session_id,
        "seq": (r.seq, r.last_epoch, r.last_origin),
        "host": (r.host_id, r.epoch),
        "data": {k: (e.value, e.version) for k, e in r.data.items()},
        "members": [m.id for m in r.members],
        "dedupe": {w: (d.last_req, d.acked_upto, dict(d.results)) for w, d in r.dedupe.items()},
        "terms": list(r.terms),
    }


def test_apply_builds_the_state() -> None:
    r = replay(history())
    assert {k: e.value for k, e in r.data.items()} == {"y": [1, 2], "z": {"k": "v"}}
    assert r.data["y"].version == 4
    assert [m.id for m in r.members] == ["b", "c"]
    assert (r.host_id, r.epoch) == ("b", 2)
    assert [m.id for m in r.succession()] == ["c"]
    assert r.terms == [(1, 1, "a"), (7, 2, "b")]
    assert (r.seq, r.last_epoch, r.last_origin) == (9, 2, "b")


def test_dedupe_table_keeps_unconfirmed_results() -> None:
    r = replay(history())
    b, c = r.dedupe["b"], r.dedupe["c"]
    assert (b.last_req, b.acked_upto) == (2, 1)
    assert b.results == {2: ("ok", None, 4)}  # req 1 confirmed by acked_upto=1
    assert (c.last_req, c.acked_upto) == (3, 2)
    assert c.results == {3: ("conflict", {"key": "z"}, 9)}


def test_apply_reports_events() -> None:
    r = Replica()
    events: list[Any] = []
    for c in history():
        r.apply(c, events=events)
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("PeerJoined") == 3
    assert KeyChanged(key="x", value=1, version=3) in events
    assert KeyDeleted(key="x", version=6) in events
    left = [e for e in events if isinstance(e, PeerLeft)]
    assert [(e.peer.id, e.reason) for e in left] == [("a", "failed")]
    hosts = [e for e in events if isinstance(e, HostChanged)]
    assert [(h.old.id if h.old else None, h.new.id, h.epoch) for h in hosts] == [
        (None, "a", 1),
        ("a", "b", 2),
    ]


def test_snapshot_load_round_trip() -> None:
    r = replay(history())
    snap = r.snapshot()
    copy = Replica()
    copy.load(snap)
    assert state(copy) == state(r)
    # through the wire too
    wire = from_frame(
        to_frame(_welcome(snap)),
        max_size=1 << 20,
    )
    loaded = Replica()
    assert wire.snapshot is not None  # type: ignore[attr-defined]
    loaded.load(wire.snapshot)  # type: ignore[attr-defined]
    assert state(loaded) == state(r)
    # and the copy goes on applying like the original
    nxt = change(10, ("set", "w", 1), epoch=2, origin="b")
    r.apply(nxt)
    copy.apply(nxt)
    assert state(copy) == state(r)


def _welcome(snap: Snapshot) -> Any:
    from p2pstate.messages import Welcome

    return Welcome(sender="b", epoch=2, session_id="s", host_id="b", snapshot=snap, changes=())


def test_load_reports_the_differences() -> None:
    old = replay(history()[:4])
    new = replay(history())
    events: list[Any] = []
    old.load(new.snapshot(), events=events)
    assert KeyDeleted(key="x", version=9) in events
    assert KeyChanged(key="z", value={"k": "v"}, version=8) in events
    assert not any(isinstance(e, KeyChanged) and e.key == "y" for e in events)  # unchanged
    assert {e.peer.id for e in events if isinstance(e, PeerJoined)} == {"c"}
    assert {e.peer.id for e in events if isinstance(e, PeerLeft)} == {"a"}
    assert any(isinstance(e, HostChanged) and e.new.id == "b" for e in events)


def test_load_clears_the_log() -> None:
    r = Replica()
    r.load(replay(history()).snapshot())
    assert not r.log
    assert r.changes_after(9, 2, "b") == []
    assert r.changes_after(8, 2, "b") is None  # not in the log any more


def test_changes_after_a_point_in_the_history() -> None:
    r = replay(history())
    assert [c.seq for c in r.changes_after(4, 1, "a") or []] == [5, 6, 7, 8, 9]
    assert [c.seq for c in r.changes_after(7, 2, "b") or []] == [8, 9]
    assert r.changes_after(9, 2, "b") == []
    assert [c.seq for c in r.changes_after(0, 0, "") or []] == list(range(1, 10))


def test_changes_after_refuses_another_history() -> None:
    r = replay(history())
    # same seq, another term: a change this replica never had
    assert r.changes_after(7, 1, "a") is None
    assert r.changes_after(8, 3, "c") is None
    assert r.changes_after(9, 1, "a") is None
    # ahead of us
    assert r.changes_after(10, 2, "b") is None


def test_changes_after_beyond_the_log_uses_terms() -> None:
    r = replay(history(), log_keep=3)
    assert [c.seq for c in r.log] == [7, 8, 9]
    assert [c.seq for c in r.changes_after(6, 1, "a") or []] == [7, 8, 9]
    assert r.changes_after(5, 1, "a") is None  # in the history, but no longer logged
    assert r.changes_after(6, 2, "b") is None


def test_history_contains() -> None:
    terms = [(1, 1, "a"), (7, 2, "b"), (12, 4, "c")]
    assert history_contains(terms, 20, 0, 0, "")
    assert history_contains(terms, 20, 1, 1, "a")
    assert history_contains(terms, 20, 6, 1, "a")
    assert not history_contains(terms, 20, 7, 1, "a")
    assert history_contains(terms, 20, 7, 2, "b")
    assert history_contains(terms, 20, 11, 2, "b")
    assert history_contains(terms, 20, 20, 4, "c")
    assert not history_contains(terms, 20, 21, 4, "c")  # beyond the end
    assert not history_contains(terms, 20, 12, 3, "b")  # a term that never was
    assert not history_contains(terms, 20, -1, 0, "")


@given(
    st.lists(st.tuples(st.integers(1, 5), st.sampled_from("abc")), min_size=1, max_size=6),
    st.lists(st.integers(1, 4), min_size=6, max_size=6),
)
def test_history_contains_matches_replay(
    terms_spec: list[tuple[int, str]], lengths: list[int]
) -> None:
    """Build a history from terms; every change in it is contained, no change
    with another term at the same seq is."""
    changes: list[Change] = []
    epoch = 0
    for (step, origin), n in zip(terms_spec, lengths, strict=False):
        epoch += step
        for _ in range(n):
            changes.append(change(len(changes) + 1, epoch=epoch, origin=origin))
    r = replay(changes)
    for c in changes:
        assert history_contains(r.terms, r.seq, c.seq, c.epoch, c.origin)
        assert r.in_history(c.seq, c.epoch, c.origin)
        assert not r.in_history(c.seq, c.epoch + 1000, c.origin)
        got = r.changes_after(c.seq, c.epoch, c.origin)
        assert got is not None and [x.seq for x in got] == list(range(c.seq + 1, r.seq + 1))
