"""The storage backends and the persister that keeps one equal to a replica,
driven by the simulator (no sockets, no sleeps)."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from simsession import Session

from p2pstate.codec import decode, encode
from p2pstate.core.access import Access
from p2pstate.core.node import Node
from p2pstate.errors import StorageError
from p2pstate.messages import EPHEMERAL, OWNER_ONLY
from p2pstate.persist import ACCESS, Persister
from p2pstate.storage import (
    Batch,
    MemoryStorage,
    MetaStorage,
    SqliteStorage,
    Storage,
    StoredEntry,
)


def entry(value: Any, version: int = 1, **kw: Any) -> StoredEntry:
    return StoredEntry(encode(value), version, **kw)


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    store: Storage = MemoryStorage() if request.param == "memory" else SqliteStorage(tmp_path / "s")
    request.addfinalizer(store.close)
    return store


def test_apply_load_and_last_seq(storage: Storage) -> None:
    assert storage.load() == {} and storage.last_seq() == 0
    storage.apply(Batch(seq=3, put={"a": entry(1), "b": entry([1, 2], 2, expires_at=5.0)}))
    storage.apply(Batch(seq=4, put={"c": entry("x", 4, owner="p", flags=OWNER_ONLY)}))
    storage.apply(Batch(seq=5, delete=("a", "missing")))
    assert storage.last_seq() == 5
    assert storage.load() == {
        "b": entry([1, 2], 2, expires_at=5.0),
        "c": entry("x", 4, owner="p", flags=OWNER_ONLY),
    }
    storage.apply(Batch(seq=9, put={"z": entry(0, 9)}, replace=True))
    assert storage.load() == {"z": entry(0, 9)} and storage.last_seq() == 9


def test_sqlite_reopens_with_what_was_committed(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStorage(path)
    store.apply(Batch(seq=7, put={"k": entry({"x": 1}, 7)}))
    store.close()
    again = SqliteStorage(path)
    try:
        assert again.load() == {"k": entry({"x": 1}, 7)} and again.last_seq() == 7
        mode = again._db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    finally:
        again.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_a_new_store_and_its_log_are_readable_by_us_only(tmp_path: Path) -> None:
    """Issue 16.12: the store holds every value of a secured session, like
    the backups and the identity, which are 0600; it was 0644 with the usual
    umask, and so were its -wal and -shm files."""
    path = tmp_path / "state.db"
    old = os.umask(0o022)
    try:
        store = SqliteStorage(path)
        store.apply(Batch(seq=1, put={"k": entry("secret value")}))
    finally:
        os.umask(old)
    try:
        # In exclusive locking mode SQLite keeps the WAL index in memory: no -shm.
        files = sorted(p.name for p in tmp_path.iterdir())
        assert files[:2] == ["state.db", "state.db-wal"], files
        for name in files:
            assert _mode(tmp_path / name) == 0o600, (name, oct(_mode(tmp_path / name)))
    finally:
        store.close()


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_an_open_store_others_may_read_is_tightened_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    SqliteStorage(path).close()
    for name in ("state.db", "state.db-wal"):
        (tmp_path / name).touch()
        os.chmod(tmp_path / name, 0o644)
    with caplog.at_level(logging.WARNING, logger="p2pstate.storage"):
        store = SqliteStorage(path)
    try:
        assert _mode(path) == 0o600 and _mode(tmp_path / "state.db-wal") == 0o600
        assert "readable by others" in caplog.text and str(path) in caplog.text
    finally:
        store.close()


def test_sqlite_batch_is_all_or_nothing(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "s.db")
    store.apply(Batch(seq=1, put={"a": entry(1)}))
    bad: Any = object()  # sqlite cannot bind it: the batch fails half way
    with pytest.raises(StorageError, match="cannot write"):
        store.apply(Batch(seq=2, put={"b": entry(2), "c": StoredEntry(bad, 2)}, delete=("a",)))
    assert store.load() == {"a": entry(1)} and store.last_seq() == 1
    store.close()


def test_sqlite_refuses_what_is_not_a_store(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_bytes(b"these are not the tables you are looking for\n" * 100)
    with pytest.raises(StorageError, match="not a usable p2pstate store"):
        SqliteStorage(text)
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE users (name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(StorageError, match="of something else"):
        SqliteStorage(other)
    assert text.read_bytes().startswith(b"these are not")  # left as it was
    newer = tmp_path / "newer.db"
    SqliteStorage(newer).close()
    con = sqlite3.connect(newer)
    con.execute("UPDATE p2pstate_meta SET value=2 WHERE name='format'")
    con.commit()
    con.close()
    with pytest.raises(StorageError, match="format 2"):
        SqliteStorage(newer)


def test_sqlite_synchronous_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteStorage(tmp_path / "x.db", synchronous="OFF")
    store = SqliteStorage(tmp_path / "y.db", synchronous="NORMAL")
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    store.close()
    store = SqliteStorage(tmp_path / "z.db")
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


# ---------------------------------------------------------------- the persister


def stored_values(storage: Storage) -> dict[str, Any]:
    return {k: decode(e.value, max_size=1 << 20) for k, e in storage.load().items()}


def stored_access(storage: Storage) -> Access:
    assert isinstance(storage, MetaStorage)
    return Access.from_wire(decode(storage.load_meta()[ACCESS], max_size=1 << 20))


def lasting(node: Node) -> dict[str, Any]:
    """What a store must hold: every key but ephemeral ones."""
    return {k: e.value for k, e in node.replica.data.items() if not e.flags & EPHEMERAL}


def test_persister_writes_only_what_changed_and_skips_ephemeral_keys(session: Session) -> None:
    _host, peer = session.start(2)
    store = MemoryStorage()
    persister = Persister(store)
    assert persister.persist(peer, 100.0)  # the first write replaces everything
    assert store.load() == {}
    session.put(peer, "a", 1)
    out = session.write(peer, (("set", "me", [1, 2], EPHEMERAL, 0.0), ("set", "t", 5, 0, 30.0)))
    assert session.run_until(lambda: bool(out))
    assert persister.persist(peer, 100.0)
    assert not persister.persist(peer, 100.0)  # nothing new
    assert stored_values(store) == {"a": 1, "t": 5}
    stored = store.load()
    assert stored["a"].version == peer.replica.data["a"].version
    assert 129.0 < stored["t"].expires_at <= 130.0  # wall clock + ttl left
    # A plain key written as ephemeral leaves the store.
    out = session.write(peer, (("set", "a", 2, EPHEMERAL, 0.0),))
    assert session.run_until(lambda: bool(out))
    persister.persist(peer, 100.0)
    assert stored_values(store) == {"t": 5}
    assert store.last_seq() == peer.replica.seq


def test_a_session_created_from_a_store_starts_from_it(session: Session) -> None:
    store = MemoryStorage()
    store.apply(
        Batch(
            seq=40,
            put={
                "score": entry(10, 12),
                "owned": entry("mine", 30, owner="someone", flags=OWNER_ONLY),
                "soon": entry(1, 35, expires_at=1000.5),
                "gone": entry(1, 36, expires_at=999.0),
                "eph": entry(1, 37, owner="x", flags=EPHEMERAL),
            },
        )
    )
    persister = Persister(store)
    initial, seq = persister.initial(wall_now=1000.0)
    assert seq == 40
    assert {k for k, *_ in initial} == {"score", "owned", "soon"}
    net = session.net
    node = net.add_node("n0", initial=initial, initial_seq=seq)
    persister.started(node.replica)
    assert node.replica.seq == 41  # numbering goes on after the store's
    assert node.replica.data["score"].version == 12
    assert node.replica.data["owned"].owner == "someone"
    assert set(store.load()) == {"score", "owned", "soon"}  # expired rows dropped
    assert store.last_seq() == 41
    joiner = net.add_node("n1")
    assert session.settle()
    assert session.values(joiner) == {"score": 10, "owned": "mine", "soon": 1}
    assert session.put(joiner, "score", 11).seq > 41
    # The ttl left (0.5 s) runs from the start: the key expires everywhere.
    assert session.run_until(lambda: "soon" not in joiner.replica.data, 2.0)
    persister.persist(node, 1001.0)
    assert stored_values(store) == {"score": 11, "owned": "mine"}


@settings(max_examples=30, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(
                ["set", "eph", "ttl", "del", "restore", "persist", "join", "crash", "acl"]
            ),
            st.integers(0, 5),
            st.integers(0, 3),
        ),
        min_size=1,
        max_size=25,
    ),
    seed=st.integers(0, 10_000),
)
def test_stores_equal_the_replica_after_any_history(steps: list[Any], seed: int) -> None:
    """load() after every batch the persister wrote equals the replica's lasting
    keys and access state, for both backends, through writes, restores, ACL and
    access changes, joins (snapshots) and a host crash (failover), persisting
    at arbitrary points."""
    session = Session(seed)
    net = session.net
    nodes = session.start(3)
    with tempfile.TemporaryDirectory() as tmp:
        stores: dict[str, list[Storage]] = {
            n.me.id: [MemoryStorage(), SqliteStorage(Path(tmp) / f"{n.me.id}.db")] for n in nodes
        }
        persisters = {nid: [Persister(s) for s in ss] for nid, ss in stores.items()}
        crashed = False
        for kind, key_no, who in steps:
            live = session.live()
            node = live[who % len(live)]
            key = f"k{key_no}"
            ops: tuple[tuple[Any, ...], ...] = ()
            if kind == "set":
                ops = (("set", key, [key_no, who]),)
            elif kind == "eph":
                ops = (("set", key, who, EPHEMERAL, 0.0),)
            elif kind == "ttl":
                ops = (("set", key, who, 0, 50.0),)
            elif kind == "del":
                ops = (("del", key),)
            elif kind == "restore":
                ops = (("restore", tuple((f"k{i}", i, "", 0, 0.0) for i in range(key_no))),)
            elif kind == "acl" and nodes[0] in live:  # the admin bans, or changes a limit
                node = nodes[0]
                if who % 2:
                    ops = (("acl", "ban" if who == 1 else "unban", f"x{key_no}"),)
                else:
                    ops = (("access_set", {"max_keys": 1000 + key_no}),)
            elif kind == "persist":
                for p in persisters[node.me.id]:
                    p.persist(node, 0.0)
            elif kind == "join" and len(nodes) < 5:
                new = net.add_node(f"n{len(nodes)}")
                nodes.append(new)
                stores[new.me.id] = [MemoryStorage()]
                persisters[new.me.id] = [Persister(stores[new.me.id][0])]
            elif kind == "crash" and not crashed:
                crashed = True
                net.crash(session.host().me.id)
            if ops:
                out = session.write(node, ops)
                session.run_until(lambda out=out: bool(out), 3.0)
            else:
                net.run(0.05)
        assert session.settle(), session.tail()
        for node in session.live():
            for persister, store in zip(persisters[node.me.id], stores[node.me.id], strict=True):
                persister.persist(node, 0.0)
                assert stored_values(store) == lasting(node), session.tail()
                assert store.last_seq() == node.replica.seq
                assert stored_access(store) == node.replica.access
                versions = {k: e.version for k, e in store.load().items()}
                assert versions == {
                    k: e.version for k, e in node.replica.data.items() if not e.flags & EPHEMERAL
                }
        for ss in stores.values():
            for s in ss:
                s.close()
