"""The session's CURVE server keypair, derived from its secret.

Every member knows the secret, so every member can compute the same keypair
and any of them can host: each node's ROUTER is a CURVE server with it, and
each node's DEALERs expect it (``curve_serverkey``). CurveZMQ never sends the
server's public key, so a handshake only completes between two parties that
both know the secret: a peer without it can neither join nor read, and a host
without it cannot pass itself off to peers that have it.

The derivation is slow on purpose (scrypt, about 50-100 ms, once per join):
someone who records a session's traffic and tries guessed secrets offline pays
that for every guess. The app and session names are the salt, so one secret
used by two sessions gives two unrelated keypairs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import zmq
from zmq.utils import z85

__all__ = ["SessionKey", "derive_session_key"]

# scrypt cost: n=2**14, r=8 takes ~60 ms and 16 MiB on a 2020s laptop core.
_SCRYPT_N = 1 << 14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
_DOMAIN = b"p2pstate session server key v1"


@dataclass(frozen=True)
class SessionKey:
    """The session server's keypair, Z85-encoded as zmq takes it."""

    public_key: bytes
    secret_key: bytes = field(repr=False)


def derive_session_key(secret: str, app: str, session: str) -> SessionKey:
    """The keypair every member of *session* of *app* derives from *secret*."""
    if not isinstance(secret, str) or not secret:
        raise ValueError("secret must be a non-empty str")
    # Length-prefixed, so ("a", "bc") and ("ab", "c") never share a salt.
    salt = b"".join(
        len(part).to_bytes(4, "big") + part for part in (_DOMAIN, app.encode(), session.encode())
    )
    raw = hashlib.scrypt(
        secret.encode(),
        salt=salt,
        n=_SCRYPT_N,
        r=_SCRYPT_R,
        p=_SCRYPT_P,
        maxmem=_SCRYPT_MAXMEM,
        dklen=32,
    )
    secret_key = z85.encode(raw)
    return SessionKey(public_key=zmq.curve_public(secret_key), secret_key=secret_key)
