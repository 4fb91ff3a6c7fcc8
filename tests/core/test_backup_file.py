"""The backup file format: round trip, and a clear BackupError for every kind
of bad file (corrupt, truncated, foreign, another version, another app)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from p2pstate.backup import FORMAT, MAGIC, Backup, dumps, loads, read_backup, write_backup
from p2pstate.codec import encode
from p2pstate.errors import BackupError
from p2pstate.messages import OWNER_ONLY

BACKUP = Backup(
    app="game",
    session="default",
    created=1_790_000_000.5,
    seq=42,
    entries=(
        ("score", 10, "", 0, 0.0),
        ("names", ["a", "b"], "", 0, 0.0),
        ("blob", b"\x00\xff", "", 0, 0.0),
        ("mine", {"x": 1}, "peer1", OWNER_ONLY, 0.0),
        ("motd", "hi", "", 0, 2_000_000_000.0),
    ),
)


def body_file(doc: dict[str, Any]) -> bytes:
    """A file with a valid checksum around *doc*: only the content is wrong."""
    body = encode(doc)
    return MAGIC + body + hashlib.sha256(body).digest()


def good_doc() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "app": "game",
        "session": "default",
        "created": 1.0,
        "seq": 1,
        "entries": [["k", 1, "", 0, 0.0]],
    }


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "b.p2pstate"
    write_backup(path, BACKUP)
    assert read_backup(path, app="game") == BACKUP
    assert loads(dumps(BACKUP)) == BACKUP
    assert [p.name for p in tmp_path.iterdir()] == ["b.p2pstate"]  # no temporary left


def test_restore_op_leaves_out_what_expired() -> None:
    op = BACKUP.restore_op(wall_now=1_999_999_990.0)
    assert op[0] == "restore"
    assert dict((k, (v, left)) for k, v, _, _, left in op[1])["motd"] == ("hi", 10.0)
    later = BACKUP.restore_op(wall_now=2_000_000_001.0)
    assert "motd" not in {k for k, *_ in later[1]}
    assert len(later[1]) == len(BACKUP.entries) - 1


def test_another_app_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b"
    write_backup(path, BACKUP)
    with pytest.raises(BackupError, match="app 'game', not of 'other'"):
        read_backup(path, app="other")


GOOD = dumps(BACKUP)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a p2pstate backup"),
        (b"SQLite format 3\x00" + b"\x00" * 100, "not a p2pstate backup"),
        (json.dumps({"score": 1}).encode(), "not a p2pstate backup"),
        (MAGIC, "truncated"),
        (GOOD[: len(GOOD) // 2], "checksum"),
        (GOOD[:-1], "checksum"),
        (GOOD + b"\x00", "checksum"),
        (GOOD[:40] + bytes([GOOD[40] ^ 0x01]) + GOOD[41:], "checksum"),
        (MAGIC + b"\xc1" + hashlib.sha256(b"\xc1").digest(), "corrupt"),
        (body_file({**good_doc(), "format": 2}), "format 2"),
        (body_file({**good_doc(), "format": "1"}), "format '1'"),
        (body_file({k: v for k, v in good_doc().items() if k != "format"}), "format None"),
        (body_file({**good_doc(), "app": 5}), "app and session"),
        (body_file({**good_doc(), "seq": -1}), "sequence"),
        (body_file({**good_doc(), "created": "today"}), "creation"),
        (body_file({**good_doc(), "entries": {"k": 1}}), "entries must be a list"),
        (body_file({**good_doc(), "entries": [["k", 1]]}), "list of 5"),
        (body_file({**good_doc(), "entries": [["k", 1, "", 1, 0.0]]}), "never ephemeral"),
        (body_file({**good_doc(), "entries": [["k", 1, "", 0, -5.0]]}), "expiry"),
        (body_file({**good_doc(), "entries": [[1, 1, "", 0, 0.0]]}), "expected str"),
        (body_file({**good_doc(), "entries": [["k", 1, "", 0, 0], ["k", 2, "", 0, 0]]}), "twice"),
        (body_file(["not", "a", "map"]), "not a map"),  # type: ignore[arg-type]
    ],
)
def test_bad_files_give_a_clear_error(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "bad"
    path.write_bytes(data)
    with pytest.raises(BackupError, match=message) as info:
        read_backup(path, app="game")
    assert "bad" in str(info.value)  # it names the file


def test_a_missing_file_is_a_backup_error(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="cannot read"):
        read_backup(tmp_path / "nowhere")


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "b"
    write_backup(path, BACKUP)
    before = path.read_bytes()
    bad = Backup(
        app="game", session="s", created=1.0, seq=1, entries=(("k", object(), "", 0, 0.0),)
    )
    with pytest.raises(TypeError):
        write_backup(path, bad)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["b"]
