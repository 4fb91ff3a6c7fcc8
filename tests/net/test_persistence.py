"""Persistence with real processes on loopback: stores that outlive the
session, a kill -9 of a persisting host, a peer with a store that takes over,
and backup/restore through the API and the command line.

Every file lives in pytest's tmp_path; every process is stopped by its pid."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from netkit import Join, PeerProcess, eventually, run_cli, saw_event

import p2pstate
from p2pstate.backup import Backup, dumps, write_backup
from p2pstate.codec import decode
from p2pstate.storage import Batch, SqliteStorage, StoredEntry


def dump(peer: PeerProcess) -> dict[str, Any]:
    state: dict[str, Any] = peer.cmd("dump")["state"]
    return state


def stored(path: Path) -> dict[str, Any]:
    """The keys in an SQLite store, read with sqlite3 alone, after checking the
    file is intact."""
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = con.execute("SELECT key, value FROM p2pstate_entries").fetchall()
    finally:
        con.close()
    return {key: decode(value, max_size=1 << 20) for key, value in rows}


def test_a_store_outlives_the_session(spawn: Any, tmp_path: Path) -> None:
    db = tmp_path / "scores.db"
    host = spawn(store=str(db))
    assert host.wait_ready()["is_host"]
    peer = spawn()
    peer.wait_ready()
    assert peer.cmd("set", key="highscore", value=[["ann", 120]]) == {"ok": True}
    assert host.cmd("set", key="motd", value="welcome") == {"ok": True}
    assert peer.cmd("set", key="pos", value=[1, 2], ephemeral=True) == {"ok": True}
    assert host.cmd("set", key="round", value=3) == {"ok": True}
    assert peer.cmd("set", key="round", value=4) == {"ok": True}
    host.stop()  # the host hands over to the peer, then the peer leaves too
    peer.stop()
    assert stored(db) == {"highscore": [["ann", 120]], "motd": "welcome", "round": 4}

    again = spawn(store=str(db))
    assert again.wait_ready()["is_host"]  # a new session, started from the store
    assert dump(again) == {"highscore": [["ann", 120]], "motd": "welcome", "round": 4}
    assert again.cmd("set", key="round", value=5) == {"ok": True}
    again.stop()
    assert stored(db)["round"] == 5


def test_kill_9_of_a_persisting_host_keeps_every_acknowledged_write(
    spawn: Any, join: Join, tmp_path: Path
) -> None:
    db = tmp_path / "host.db"
    host = spawn(store=str(db))
    assert host.wait_ready()["is_host"]
    writer = join()
    assert not writer.is_host
    acked: list[int] = []
    stop = threading.Event()

    def stream() -> None:
        i = 0
        while not stop.is_set():
            writer[f"k{i}"] = i  # returns once acknowledged
            acked.append(i)
            i += 1

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    try:
        eventually(lambda: len(acked) >= 300, timeout=30)
        before = len(acked)  # every one of these was acknowledged by the host
        host.kill()
        # The stream goes on through the failover, to the writer as host.
        eventually(lambda: writer.is_host and len(acked) > before + 20, timeout=15)
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive()

    on_disk = stored(db)  # integrity_check is ok
    missing = [i for i in range(before) if on_disk.get(f"k{i}") != i]
    assert missing == [], f"{len(missing)} acknowledged writes missing, first {missing[:5]}"
    writer.close()

    again = spawn(store=str(db))
    assert again.wait_ready()["is_host"]
    state = dump(again)
    assert all(state.get(f"k{i}") == i for i in range(before))


def test_a_peer_with_a_store_keeps_it_current_and_as_host(spawn: Any, tmp_path: Path) -> None:
    db = tmp_path / "peer.db"
    host = spawn()
    assert host.wait_ready()["is_host"]
    peer = spawn(store=str(db))
    assert not peer.wait_ready()["is_host"]
    assert host.cmd("set", key="x", value=1) == {"ok": True}
    assert peer.cmd("wait", key="x", value=1)["value"] == 1
    host.kill()
    eventually(lambda: peer.cmd("info")["is_host"], timeout=10)
    assert peer.cmd("set", key="y", value=2) == {"ok": True}
    peer.kill()  # no clean close: what it applied as a peer and as host is on disk
    assert stored(db) == {"x": 1, "y": 2}
    again = spawn(store=str(db))
    assert again.wait_ready()["is_host"]
    assert dump(again) == {"x": 1, "y": 2}


def test_a_joiner_takes_the_sessions_state_over_its_store(spawn: Any, tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    old = SqliteStorage(db)
    old.apply(Batch(seq=900, put={"stale": StoredEntry(b"\x01", 900)}))
    old.close()
    host = spawn()
    assert host.wait_ready()["is_host"]
    assert host.cmd("set", key="live", value="yes") == {"ok": True}
    peer = spawn(store=str(db))
    assert not peer.wait_ready()["is_host"]
    assert dump(peer) == {"live": "yes"}
    peer.stop()
    assert stored(db) == {"live": "yes"}


def test_two_peers_cannot_share_a_store_file(join: Join, tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    first = join(store=str(db))
    first["k"] = 1
    with pytest.raises(p2pstate.StorageError, match="in use"):
        join(store=str(db))
    assert first.is_host and dict(first) == {"k": 1}
    first.close()
    assert stored(db) == {"k": 1}


# ---------------------------------------------------------------- backup and restore


def test_backup_and_restore_through_the_api(join: Join, tmp_path: Path) -> None:
    a = join()
    b = join()
    a.update({"score": 1, "motd": "hi", "deep": {"x": [1, 2]}})
    a.set("brief", 1, ttl=60)
    b.set("b_pos", [5, 5], ephemeral=True)
    path = tmp_path / "game.p2pstate"
    assert b.backup(path) == 4  # not the ephemeral key
    a.update({"score": 2, "extra": True})
    del a["motd"]
    eventually(lambda: "motd" not in b and b.get("extra") is True)
    b.poll()  # only the restore's events from here on
    assert a.restore(path) == 4
    expected = {"score": 1, "motd": "hi", "deep": {"x": [1, 2]}, "brief": 1, "b_pos": [5, 5]}
    assert dict(a) == expected
    eventually(lambda: dict(b) == expected)
    events = b.poll()
    changed = {e.key for e in events if isinstance(e, p2pstate.KeyChanged)}
    deleted = {e.key for e in events if isinstance(e, p2pstate.KeyDeleted)}
    assert {"score", "motd"} <= changed and "deep" not in changed
    assert deleted == {"extra"}


def test_a_bad_backup_raises_and_changes_nothing(join: Join, tmp_path: Path) -> None:
    s = join(max_value_size=1024, max_frame_size=4096)
    s.update({"a": 1, "b": 2})
    good = tmp_path / "good"
    s.backup(good)
    data = good.read_bytes()
    bad_files = {
        "corrupt": data[:30] + bytes([data[30] ^ 0xFF]) + data[31:],
        "truncated": data[:-10],
        "foreign": b'{"a": 1}',
        "empty": b"",
        "other_app": dumps(
            Backup(app="another", session="default", created=0.0, seq=1, entries=())
        ),
    }
    for name, content in bad_files.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(p2pstate.BackupError):
            s.restore(path)
    too_big = tmp_path / "too_big"
    entries = tuple((f"k{i}", "x" * 1000, "", 0, 0.0) for i in range(10))
    write_backup(too_big, Backup(app=s.app, session="x", created=0.0, seq=1, entries=entries))
    with pytest.raises(p2pstate.ValueTooLargeError, match="max_frame_size"):
        s.restore(too_big)
    assert dict(s) == {"a": 1, "b": 2}
    assert s.stats.get("store_batches") is None  # no store: nothing written


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=60)


def test_backup_and_restore_commands(spawn: Any, app_name: str, tmp_path: Path) -> None:
    host = spawn()
    assert host.wait_ready()["is_host"]
    peer = spawn()
    peer.wait_ready()
    host.cmd("set", key="score", value=1)
    host.cmd("set", key="motd", value="hi")
    path = tmp_path / "b.p2pstate"
    done = _cli("backup", app_name, str(path))
    assert done.returncode == 0, done.stderr
    assert "wrote 2 keys" in done.stdout
    host.cmd("set", key="score", value=2)
    host.cmd("set", key="extra", value=True)

    foreign = tmp_path / "notes.txt"
    foreign.write_text("hello\n")
    corrupt = tmp_path / "corrupt"
    raw = path.read_bytes()
    corrupt.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    for bad in (foreign, corrupt, tmp_path / "missing"):
        failed = _cli("restore", app_name, str(bad))
        assert failed.returncode == 1
        assert failed.stderr.startswith("p2pstate restore: BackupError:"), failed.stderr
    assert dump(host) == {"score": 2, "motd": "hi", "extra": True}

    done = _cli("restore", app_name, str(path))
    assert done.returncode == 0, done.stderr
    assert "restored 2 keys" in done.stdout
    assert dump(host) == {"score": 1, "motd": "hi"}
    assert peer.cmd("wait", key="score", value=1)["value"] == 1
    assert dump(peer) == {"score": 1, "motd": "hi"}
    assert saw_event(peer, "KeyDeleted")


class _FailingStore(p2pstate.MemoryStorage):
    """A store whose disk fills up when it is asked to keep the key "boom"."""

    def apply(self, batch: Batch) -> None:
        if "boom" in batch.put:
            raise OSError("No space left on device")
        super().apply(batch)


def test_a_host_whose_store_fails_acknowledges_nothing_more(join: Join) -> None:
    """Durable before acknowledged: a write the store could not keep is never
    reported done by that host. It stops; a lone host's writer is told so."""
    store = _FailingStore()
    s = join(store=store)
    s["ok"] = 1
    with pytest.raises(p2pstate.SessionClosedError):
        s["boom"] = 1
    assert s.closed
    assert sorted(store.load()) == ["ok"]


def test_when_the_hosts_store_fails_the_next_peer_takes_over_the_write(join: Join) -> None:
    store = _FailingStore()
    host = join(store=store)
    peer = join()
    peer["ok"] = 1
    peer["boom"] = 2  # the host cannot store it and stops; the peer hosts and applies it
    assert peer.is_host and peer["boom"] == 2 and peer["ok"] == 1
    assert host.closed and "boom" not in store.load()
