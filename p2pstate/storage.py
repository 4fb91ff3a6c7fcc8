"""Durable storage for a session's keys: the :class:`Storage` protocol and two
backends, :class:`MemoryStorage` and :class:`SqliteStorage`.

A store holds the session's lasting keys (not ephemeral ones) as
:class:`StoredEntry` records and the sequence number of the last change it
holds. The runtime drives it from its I/O thread (see ``persist.py``): one
:class:`Batch` per step, written before any acknowledgement of the changes in
it leaves the node. The format is independent of the wire format: a value is
kept as its msgpack encoding, with the version, owner, flags and the wall
clock time it expires (0 for never).

To write a backend of your own, implement the four methods of
:class:`Storage`; ``apply`` must be atomic (all of a batch or nothing) and
durable by the time it returns. A backend that also keeps ``Batch.meta`` and
gives it back from ``load_meta`` (:class:`MetaStorage`) keeps the session's
access state too (admin, modes, lists, limits); one without it keeps only
the keys, and a session restarted from it takes the starting peer's options.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from .errors import StorageError

__all__ = ["Batch", "MemoryStorage", "MetaStorage", "SqliteStorage", "Storage", "StoredEntry"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One key as a store keeps it."""

    #: The value's msgpack encoding (``p2pstate.codec.encode``).
    value: bytes
    #: Sequence number of the change that last wrote the key.
    version: int
    #: The peer that wrote it, for owner-only keys ("" otherwise).
    owner: str = ""
    #: 0, or OWNER_ONLY (2). Ephemeral keys are never stored.
    flags: int = 0
    #: When the key expires, in seconds since the Unix epoch; 0 for never.
    expires_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Batch:
    """The changes of one step, to apply as one transaction.

    With ``replace`` the store's keys become exactly ``put`` (``delete`` is
    then empty). ``seq`` is the sequence number of the last change included.
    ``meta`` holds session records by name, each replacing the one of that
    name (``replace`` leaves them alone): today ``"access"``, the session's
    access state as msgpack. A store without ``load_meta`` may ignore it."""

    seq: int
    put: Mapping[str, StoredEntry] = field(default_factory=dict)
    delete: tuple[str, ...] = ()
    replace: bool = False
    meta: Mapping[str, bytes] = field(default_factory=dict)


@runtime_checkable
class Storage(Protocol):
    """What the runtime needs from a store. Called from one thread at a time."""

    def load(self) -> dict[str, StoredEntry]:
        """Every stored key."""
        ...

    def apply(self, batch: Batch) -> None:
        """Apply *batch* atomically and durably; raise on failure."""
        ...

    def last_seq(self) -> int:
        """The ``seq`` of the last batch applied (0 for an empty store)."""
        ...

    def close(self) -> None:
        """Release the store. ``join`` closes it when the state closes."""
        ...


@runtime_checkable
class MetaStorage(Storage, Protocol):
    """A store that keeps ``Batch.meta`` too: a session restarted from it keeps
    its admin, modes, authorized and banned lists and limits."""

    def load_meta(self) -> dict[str, bytes]:
        """The last record of each name ``Batch.meta`` gave (empty at first)."""
        ...


class MemoryStorage:
    """A store in this process's memory: it outlives the SharedState that used
    it (pass the same object to the next ``join``), not the process."""

    def __init__(self) -> None:
        self._entries: dict[str, StoredEntry] = {}
        self._meta: dict[str, bytes] = {}
        self._seq = 0

    def load(self) -> dict[str, StoredEntry]:
        return dict(self._entries)

    def load_meta(self) -> dict[str, bytes]:
        return dict(self._meta)

    def apply(self, batch: Batch) -> None:
        if batch.replace:
            self._entries = dict(batch.put)
        else:
            self._entries.update(batch.put)
            for key in batch.delete:
                self._entries.pop(key, None)
        self._meta.update(batch.meta)
        self._seq = batch.seq

    def last_seq(self) -> int:
        return self._seq

    def close(self) -> None:
        """Nothing to release: the contents stay for the next user."""


_FORMAT = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS p2pstate_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS p2pstate_entries (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    version INTEGER NOT NULL,
    owner TEXT NOT NULL,
    flags INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS p2pstate_session (name TEXT PRIMARY KEY, value BLOB NOT NULL);
"""
# p2pstate_session (Batch.meta) came later within format 1: a file without it
# gets it on open, and an older version reading a newer file ignores it.


class SqliteStorage:
    """A store in an SQLite file (the standard library's sqlite3).

    The file is in WAL mode and held exclusively while open (another peer or
    program cannot open it meanwhile), so a crash (kill -9, power loss) leaves it
    intact with every committed batch. ``synchronous="FULL"`` (the default)
    syncs the log on every commit, so a batch is on disk when ``apply``
    returns, power loss included: an acknowledged write must be there.
    ``"NORMAL"`` skips that sync, which keeps everything through a crash of
    the program but may lose the last batches to a power cut.

    It holds every value of the session, as a backup does: on POSIX the file
    is created readable by its owner only (0600), SQLite gives its -wal and
    -shm files the same mode, and a store found readable by others is
    tightened (and a warning says so) before anything is read or written.
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError('synchronous must be "FULL" or "NORMAL"')
        self.path = os.fspath(path)
        _make_private(self.path)
        try:
            # One thread at a time uses it (join's, then the I/O thread's).
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=1.0
            )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the store {self.path!r}: {exc}") from None
        try:
            self._open(synchronous)
        except (sqlite3.Error, StorageError) as exc:
            self._db.close()
            if isinstance(exc, StorageError):
                raise
            if "locked" in str(exc):
                raise StorageError(
                    f"the store {self.path!r} is in use by another program "
                    "(every peer needs a store file of its own)"
                ) from None
            raise StorageError(f"{self.path!r} is not a usable p2pstate store: {exc}") from None

    def _open(self, synchronous: str) -> None:
        db = self._db
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "p2pstate_meta" not in tables:
            raise StorageError(
                f"{self.path!r} is an SQLite database of something else "
                f"(tables: {', '.join(sorted(tables))}), not a p2pstate store"
            )
        # Held from the first write until close: two peers writing one file
        # would interleave their histories, so the second is refused at once.
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.executescript(_SCHEMA)
        db.execute("INSERT OR IGNORE INTO p2pstate_meta VALUES ('format', ?)", (_FORMAT,))
        db.execute("INSERT OR IGNORE INTO p2pstate_meta VALUES ('last_seq', 0)")
        db.execute("BEGIN IMMEDIATE")  # take the lock now, not at the first batch
        db.execute("COMMIT")
        for suffix in ("-wal", "-shm"):  # SQLite gave them the store's mode: check
            _tighten(self.path + suffix)
        found = self._meta("format")
        if found != _FORMAT:
            raise StorageError(
                f"{self.path!r} is a p2pstate store of format {found}; "
                f"this version reads format {_FORMAT}"
            )

    def _meta(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM p2pstate_meta WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row is not None else 0

    def load(self) -> dict[str, StoredEntry]:
        try:
            rows = self._db.execute(
                "SELECT key, value, version, owner, flags, expires_at FROM p2pstate_entries"
            ).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the store {self.path!r}: {exc}") from None
        out: dict[str, StoredEntry] = {}
        for key, value, version, owner, flags, expires_at in rows:
            if not (
                isinstance(key, str)
                and isinstance(value, bytes)
                and isinstance(version, int)
                and isinstance(owner, str)
                and isinstance(flags, int)
                and isinstance(expires_at, (int, float))
            ):
                raise StorageError(f"the store {self.path!r} holds a malformed row for {key!r}")
            out[key] = StoredEntry(value, version, owner, flags, float(expires_at))
        return out

    def load_meta(self) -> dict[str, bytes]:
        try:
            rows = self._db.execute("SELECT name, value FROM p2pstate_session").fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the store {self.path!r}: {exc}") from None
        if not all(isinstance(n, str) and isinstance(v, bytes) for n, v in rows):
            raise StorageError(f"the store {self.path!r} holds a malformed session record")
        return dict(rows)

    def apply(self, batch: Batch) -> None:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                if batch.replace:
                    db.execute("DELETE FROM p2pstate_entries")
                elif batch.delete:
                    db.executemany(
                        "DELETE FROM p2pstate_entries WHERE key=?", ((k,) for k in batch.delete)
                    )
                db.executemany(
                    "INSERT OR REPLACE INTO p2pstate_entries VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        (k, e.value, e.version, e.owner, e.flags, e.expires_at)
                        for k, e in batch.put.items()
                    ),
                )
                if batch.meta:
                    db.executemany(
                        "INSERT OR REPLACE INTO p2pstate_session VALUES (?, ?)",
                        batch.meta.items(),
                    )
                db.execute("UPDATE p2pstate_meta SET value=? WHERE name='last_seq'", (batch.seq,))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot write the store {self.path!r}: {exc}") from None

    def last_seq(self) -> int:
        return self._meta("last_seq")

    def close(self) -> None:
        self._db.close()


def _make_private(path: str) -> None:
    """Create the store file at *path* readable by its owner only, or tighten
    the one there and its log files; SQLite then opens it as it is. An error
    here is left for SQLite's open to report."""
    if os.name != "posix":
        return  # Windows: the user's profile directory keeps others out
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        for name in (path, path + "-wal", path + "-shm"):
            _tighten(name)
    except OSError:
        return
    else:
        os.close(fd)  # an empty file is a new SQLite database


def _tighten(path: str) -> None:
    """Take group and others' permissions off the regular file *path*, if any."""
    if os.name != "posix":
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # not there (yet): nothing to tighten
    if not stat.S_ISREG(mode) or not mode & 0o077:
        return
    try:
        os.chmod(path, stat.S_IMODE(mode) & 0o700)
    except OSError as exc:
        log.warning("the store file %r is readable by others and cannot be changed: %s", path, exc)
    else:
        log.warning(
            "the store file %r was readable by others (mode %o); it is now %o",
            path,
            stat.S_IMODE(mode),
            stat.S_IMODE(mode) & 0o700,
        )
