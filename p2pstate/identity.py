"""This installation's identity: a persistent CURVE keypair in the user's config directory.

Peer ids derive from it (``"<identity>.<instance>"``, see ``core/ids.py``):
the identity is 16 hex digits of the SHA-256 of the public key, so the same
player keeps it across restarts, and with a session secret nobody can claim
it without the secret key (the transport checks every sender against the key
its connection proved, see ``transport.py``).

The file is ``identity.json`` in ``$P2PSTATE_HOME`` if set, else
``$XDG_CONFIG_HOME/p2pstate`` or ``~/.config/p2pstate`` (``%APPDATA%\\p2pstate``
on Windows). It is created on first use, readable by its owner only, and
written atomically: two copies of a game started at the same instant end up
with the same identity, never a half-written file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import zmq
from zmq.utils import z85

from .core.ids import FINGERPRINT_CHARS, is_fingerprint
from .errors import IdentityError

__all__ = [
    "ENV_HOME",
    "IDENTITY_FILE",
    "Identity",
    "default_dir",
    "fingerprint",
    "is_fingerprint",
    "load_identity",
]

log = logging.getLogger(__name__)

ENV_HOME = "P2PSTATE_HOME"
IDENTITY_FILE = "identity.json"
_FORMAT = 1
_KEY_BYTES = 32
_Z85_KEY_CHARS = 40


def fingerprint(public_key: bytes) -> str:
    """The identity of a CURVE public key (32 raw bytes, or 40 Z85 characters):
    16 lowercase hex digits of its SHA-256."""
    raw = z85.decode(public_key) if len(public_key) == _Z85_KEY_CHARS else public_key
    if len(raw) != _KEY_BYTES:
        raise ValueError(f"a CURVE public key is {_KEY_BYTES} bytes, got {len(raw)}")
    return hashlib.sha256(raw).hexdigest()[:FINGERPRINT_CHARS]


@dataclass(frozen=True)
class Identity:
    """An installation's keypair (Z85-encoded, as zmq takes them) and where it lives."""

    public_key: bytes
    secret_key: bytes = field(repr=False)
    path: Path

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    def new_peer_id(self) -> str:
        """A peer id for one running copy: this identity, then 8 random hex
        digits, so copies started from one installation are distinct peers."""
        return f"{self.fingerprint}.{secrets.token_hex(4)}"


def default_dir() -> Path:
    """Where the identity lives unless ``identity_dir`` says otherwise."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home)
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "p2pstate"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path.home() / ".config"
    return base / "p2pstate"


def load_identity(directory: str | os.PathLike[str] | None = None) -> Identity:
    """Read the identity in *directory* (default: :func:`default_dir`), making
    one on first use. Raises IdentityError, naming the file, if it is unreadable."""
    path = Path(directory if directory is not None else default_dir()) / IDENTITY_FILE
    if not path.exists():
        _create(path)
    return _read(path)


def _read(path: Path) -> Identity:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        public, secret = data["public_key"].encode("ascii"), data["secret_key"].encode("ascii")
        if len(public) != _Z85_KEY_CHARS or len(secret) != _Z85_KEY_CHARS:
            raise ValueError("keys must be 40 Z85 characters")
        derived = zmq.curve_public(secret)
    except OSError as exc:
        raise IdentityError(f"can't read the identity file {path}: {exc}") from exc
    except (ValueError, KeyError, TypeError, AttributeError, zmq.ZMQError) as exc:
        raise IdentityError(
            f"the identity file {path} is corrupt ({exc}); move it away to make a new "
            "identity (the other players will see you as someone new)"
        ) from exc
    if derived != public:
        raise IdentityError(
            f"the identity file {path} is corrupt: its public key does not match its secret key"
        )
    return Identity(public_key=public, secret_key=secret, path=path)


def _create(path: Path) -> None:
    """Write a new keypair to *path* unless another process got there first."""
    try:
        public, secret = zmq.curve_keypair()
    except zmq.ZMQError as exc:  # a libzmq built without CURVE
        raise IdentityError(f"can't make an identity for {path}: {exc}") from exc
    text = json.dumps(
        {"format": _FORMAT, "public_key": public.decode(), "secret_key": secret.decode()}
    )
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".identity-", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise IdentityError(f"can't create the identity file {path}: {exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:  # mkstemp made it 0600
            out.write(text + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            # A hard link never replaces: of two copies starting at once, the
            # first wins and the second reads the winner's keypair.
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(tmp, path)
        else:
            log.info("made a new identity %s in %s", fingerprint(public), path)
    except OSError as exc:
        raise IdentityError(f"can't create the identity file {path}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
