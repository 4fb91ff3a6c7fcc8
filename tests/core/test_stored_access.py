"""The session's access state in a store (``Batch.meta``, ``load_meta``):
both backends, stores that keep none, stores written before it existed, and
a session restarted from a store, under the simulator."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from simsession import Session

from p2pstate.codec import decode, encode
from p2pstate.core.access import ADMIN_ONLY, AUTHORIZED_ONLY, Access
from p2pstate.core.node import Node, Role
from p2pstate.errors import StorageError
from p2pstate.persist import ACCESS, Persister
from p2pstate.storage import Batch, MemoryStorage, MetaStorage, SqliteStorage, StoredEntry


def _done(session: Session, node: Node, *ops: tuple[Any, ...]) -> None:
    out = session.write(node, ops)
    assert session.run_until(lambda: bool(out)), session.tail()
    assert out[0].status == "ok", out[0]


def _join(session: Session, node_id: str) -> Node:
    node = session.net.add_node(node_id, node_id=node_id)
    assert session.run_until(lambda: node.ready or node.refused is not None), session.tail()
    return node


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> MetaStorage:
    made: MetaStorage = (
        MemoryStorage() if request.param == "memory" else SqliteStorage(tmp_path / "s.db")
    )
    request.addfinalizer(made.close)
    return made


def test_meta_records_replace_by_name_and_outlive_a_replace_batch(store: MetaStorage) -> None:
    assert store.load_meta() == {}
    store.apply(Batch(seq=1, meta={"access": b"one", "other": b"x"}))
    store.apply(Batch(seq=2, put={"k": StoredEntry(encode(1), 2)}, meta={"access": b"two"}))
    store.apply(Batch(seq=3, put={}, replace=True))  # the keys only
    assert store.load_meta() == {"access": b"two", "other": b"x"}
    assert store.load() == {} and store.last_seq() == 3


def test_sqlite_keeps_meta_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first = SqliteStorage(path)
    first.apply(Batch(seq=4, meta={"access": b"\x81\xa1a\x01"}))
    first.close()
    again = SqliteStorage(path)
    try:
        assert again.load_meta() == {"access": b"\x81\xa1a\x01"}
    finally:
        again.close()


def test_a_store_file_written_before_access_states_opens_without_one(tmp_path: Path) -> None:
    """The schema of the first format-1 stores: no p2pstate_session table."""
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE p2pstate_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE p2pstate_entries (key TEXT PRIMARY KEY, value BLOB NOT NULL,
            version INTEGER NOT NULL, owner TEXT NOT NULL, flags INTEGER NOT NULL,
            expires_at REAL NOT NULL);
        INSERT INTO p2pstate_meta VALUES ('format', 1), ('last_seq', 9);
        """
    )
    con.execute("INSERT INTO p2pstate_entries VALUES ('score', ?, 9, '', 0, 0)", (encode(5),))
    con.commit()
    con.close()
    store = SqliteStorage(path)
    try:
        persister = Persister(store)
        initial, seq = persister.initial(wall_now=0.0)
        assert [k for k, *_ in initial] == ["score"] and seq == 9
        assert persister.stored_access is None  # the starter's options apply
        session = Session(1, access=Access(writemode=ADMIN_ONLY))
        node = session.net.add_node("a", node_id="a.1", initial=initial, initial_seq=seq)
        persister.started(node.replica)
        assert _stored(store) == node.replica.access
        assert node.replica.access.admin == "a" and node.replica.access.writemode == ADMIN_ONLY
    finally:
        store.close()


class KeysOnly:
    """A custom store of the first protocol: four methods, no ``load_meta``."""

    def __init__(self) -> None:
        self.inner = MemoryStorage()

    def load(self) -> dict[str, StoredEntry]:
        return self.inner.load()

    def apply(self, batch: Batch) -> None:
        self.inner.apply(Batch(seq=batch.seq, put=batch.put, delete=batch.delete))

    def last_seq(self) -> int:
        return self.inner.last_seq()

    def close(self) -> None:
        pass


def test_a_store_without_load_meta_still_keeps_the_keys() -> None:
    store = KeysOnly()
    assert not isinstance(store, MetaStorage)
    session = Session(1)
    host = session.net.add_node("a", node_id="a.1")
    persister = Persister(store)
    _done(session, host, ("set", "k", 1), ("acl", "ban", "eve"))
    assert persister.persist(host, 0.0)
    again = Persister(store)
    initial, _ = again.initial(0.0)
    assert [k for k, *_ in initial] == ["k"] and again.stored_access is None


def test_a_restarted_session_keeps_admin_bans_and_changed_modes(store: MetaStorage) -> None:
    session = Session(1)
    admin = session.net.add_node("admin", node_id="admin.1")
    peer = _join(session, "friend.1")
    persister = Persister(store)  # the friend's store
    assert persister.persist(peer, 0.0)
    _done(session, admin, ("acl", "ban", "eve"), ("acl", "authorize", "friend"))
    _done(session, admin, ("access_set", {"writemode": AUTHORIZED_ONLY, "max_keys": 5}))
    assert session.settle()
    assert persister.persist(peer, 0.0)
    kept = peer.replica.access
    # Everyone leaves; the friend starts the session again from its store,
    # with options of its own that would make it admin of an open session.
    later = Session(2, access=Access())
    again = Persister(store)
    initial, seq = again.initial(0.0)
    assert again.stored_access == kept
    host = later.net.add_node(
        "f", node_id="friend.2", initial=initial, initial_seq=seq, stored_access=kept
    )
    again.started(host.replica)
    assert host.replica.access == kept and kept.admin == "admin"
    assert _join(later, "eve.2").refused == "banned"
    stranger = _join(later, "stranger.1")
    assert stranger.ready
    out = later.write(stranger, (("set", "k", 1),))
    assert later.run_until(lambda: bool(out)) and out[0].status == "denied"
    back = _join(later, "admin.2")
    _done(later, back, ("acl", "unban", "eve"))
    assert later.settle()
    assert again.persist(host, 0.0)
    assert _stored(store).banned == frozenset()
    assert host.role is Role.HOST


def test_a_damaged_access_record_is_a_storage_error() -> None:
    store = MemoryStorage()
    store.apply(Batch(seq=1, meta={ACCESS: encode({"admin": "a"})}))
    with pytest.raises(StorageError, match="bad access state"):
        Persister(store).initial(0.0)


def _stored(store: MetaStorage) -> Access:
    return Access.from_wire(decode(store.load_meta()[ACCESS], max_size=1 << 20))
