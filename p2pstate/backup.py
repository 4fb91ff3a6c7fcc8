"""The backup file: what ``SharedState.backup`` writes and ``restore`` reads.

A backup is self-describing and checked as a whole before anything is used::

    MAGIC (16 bytes)  body (msgpack map)  SHA-256 of the body (32 bytes)

The body is ``{"format": 1, "app", "session", "created" (seconds since the
Unix epoch), "seq" (the replica's sequence number), "entries": [[key, value,
owner, flags, expires_at], ...]}``. ``flags`` is 0 or OWNER_ONLY (ephemeral
keys are never backed up) and ``expires_at`` the wall clock time a key with
a ttl expires, 0 for never. Anything else (another magic, a bad checksum, a
truncated file, a newer format, a malformed entry) is a :class:`BackupError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from .codec import decode, encode
from .core.ops import Restore
from .errors import BackupError, ProtocolError
from .messages import MAX_TTL, restore_entries

__all__ = ["FORMAT", "MAGIC", "Backup", "dumps", "loads", "read_backup", "write_backup"]

#: First bytes of every backup file (binary, so a text-mode copy that mangles
#: line ends is caught, as PNG does).
MAGIC = b"\x89P2PSTATE-BKP\r\n"
#: The format this version writes and reads.
FORMAT = 1
_DIGEST = 32

#: One entry: (key, value, owner, flags, expires_at).
BackupEntry = tuple[str, Any, str, int, float]


@dataclass(frozen=True, kw_only=True)
class Backup:
    app: str
    session: str
    created: float
    seq: int
    entries: tuple[BackupEntry, ...]

    def restore_op(self, wall_now: float) -> Restore:
        """The restore op for this backup at *wall_now*: keys whose
        ttl ran out since are left out, the others keep the time they had left."""
        entries = []
        for key, value, owner, flags, expires_at in self.entries:
            left = 0.0
            if expires_at:
                left = expires_at - wall_now
                if left <= 0:
                    continue
                if left > MAX_TTL:  # a clock far off, or a crafted file
                    raise BackupError(
                        f"key {key!r} of the backup expires {left:.0f} s from now; "
                        f"a ttl is at most {MAX_TTL:.0f} s"
                    )
            entries.append((key, value, owner, flags, left))
        return Restore(tuple(entries))


def dumps(backup: Backup) -> bytes:
    body = encode(
        {
            "format": FORMAT,
            "app": backup.app,
            "session": backup.session,
            "created": backup.created,
            "seq": backup.seq,
            "entries": [list(e) for e in backup.entries],
        }
    )
    return MAGIC + body + hashlib.sha256(body).digest()


def loads(data: bytes, *, source: str = "backup") -> Backup:
    """Parse and check a whole backup; BackupError naming *source* if anything is off."""
    if not data.startswith(MAGIC):
        raise BackupError(f"{source} is not a p2pstate backup (it does not start as one)")
    if len(data) < len(MAGIC) + _DIGEST + 1:
        raise BackupError(f"{source} is truncated")
    body, digest = data[len(MAGIC) : -_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise BackupError(f"{source} is corrupt or truncated (its checksum does not match)")
    try:
        doc = decode(body, max_size=len(body))
    except ValueError as exc:
        raise BackupError(f"{source} is corrupt: {exc}") from None
    if not isinstance(doc, dict):
        raise BackupError(f"{source} is corrupt: its body is not a map")
    version = doc.get("format")
    if version != FORMAT:
        raise BackupError(
            f"{source} is a backup of format {version!r}; this version of p2pstate "
            f"reads format {FORMAT}"
        )
    app, session, created, seq, raw = (
        doc.get(k) for k in ("app", "session", "created", "seq", "entries")
    )
    if not isinstance(app, str) or not isinstance(session, str):
        raise BackupError(f"{source} is corrupt: app and session must be text")
    if isinstance(created, bool) or not isinstance(created, (int, float)):
        raise BackupError(f"{source} is corrupt: bad creation time")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise BackupError(f"{source} is corrupt: bad sequence number")
    if not isinstance(raw, list):
        raise BackupError(f"{source} is corrupt: entries must be a list")
    expiries: list[float] = []
    plain: list[list[Any]] = []
    for item in raw:
        if not isinstance(item, list) or len(item) != 5:
            raise BackupError(f"{source} is corrupt: an entry is not a list of 5")
        expires_at = item[4]
        if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)):
            raise BackupError(f"{source} is corrupt: bad expiry time for {item[0]!r}")
        if not expires_at >= 0:
            raise BackupError(f"{source} is corrupt: bad expiry time for {item[0]!r}")
        expiries.append(float(expires_at))
        plain.append([*item[:4], 0.0])
    try:
        checked = restore_entries(plain)
    except ProtocolError as exc:
        raise BackupError(f"{source} is corrupt: {exc}") from None
    entries = tuple((k, v, o, f, at) for (k, v, o, f, _), at in zip(checked, expiries, strict=True))
    return Backup(app=app, session=session, created=float(created), seq=seq, entries=entries)


def read_backup(path: str | os.PathLike[str], *, app: str | None = None) -> Backup:
    """Read and check the backup at *path*; with *app*, it must be that app's."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise BackupError(f"cannot read the backup {name!r}: {exc.strerror or exc}") from None
    backup = loads(data, source=repr(name))
    if app is not None and backup.app != app:
        raise BackupError(
            f"{name!r} is a backup of the app {backup.app!r}, not of {app!r}: not restored"
        )
    return backup


def write_backup(path: str | os.PathLike[str], backup: Backup) -> None:
    """Write *backup* to *path* whole or not at all (a temporary file, synced,
    then renamed over it)."""
    name = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(name))
    fd, tmp = tempfile.mkstemp(prefix=".p2pstate-backup-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(dumps(backup))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
