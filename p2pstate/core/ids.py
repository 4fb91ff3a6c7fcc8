"""Peer ids and the identities they belong to.

A peer id is ``"<identity>.<instance>"``: the identity names the installation
(a persistent keypair; 16 hex digits of a hash of its public key) and the
instance tells apart copies started from one installation, as several windows
of one game on one machine. Bans, authorisation and the admin role act on the
identity, so they hold when that player restarts the game.

Ids without a dot (the simulator's ``"a"``, ``"b"``) are their own identity.
"""

from __future__ import annotations

__all__ = ["FINGERPRINT_CHARS", "identity_of", "is_fingerprint"]

#: An installation's identity: this many lower-case hex digits.
FINGERPRINT_CHARS = 16
_HEX = frozenset("0123456789abcdef")


def identity_of(node_id: str) -> str:
    """The identity part of a peer id: ``identity_of("3f9a….1c2d") == "3f9a…"``."""
    return node_id.split(".", 1)[0]


def is_fingerprint(text: str) -> bool:
    """Whether *text* has the form of an installation's identity (see
    ``p2pstate.identity.fingerprint``): 16 lower-case hex digits."""
    return len(text) == FINGERPRINT_CHARS and _HEX.issuperset(text)
