"""The answer to a write: every status a host gives, and the two a writer
gives itself.

A str enum, so ``Status.OK == "ok"``: the wire carries the plain string
and every status reads as before in logs and error messages. (It is what
``enum.StrEnum`` is, written out because the package still supports Python
3.10, which has no StrEnum.)
"""

from __future__ import annotations

import enum

__all__ = ["Status"]


class Status(str, enum.Enum):
    OK = "ok"
    #: Not a write the host may apply (no op, a forged op, a bad restore or
    #: ACL change, a key too long, a request already applied without result).
    INVALID = "invalid"
    #: Not allowed for this writer: the modes, the admin's ops, an owner-only key.
    DENIED = "denied"
    #: Faster than the session's write_rate after write_burst.
    RATE_LIMITED = "rate_limited"
    #: A value, message or profile larger than the session's limit.
    TOO_LARGE = "too_large"
    #: The session would pass max_keys, max_total_bytes or one snapshot.
    QUOTA = "quota"
    #: A condition named a key that does not exist.
    MISSING = "missing"
    #: A condition found a different value (or a key that should be absent).
    CONFLICT = "conflict"
    #: A message to a peer that is not in the session.
    NO_PEER = "no_peer"
    #: The writer's own: the state closed before the write was answered.
    CLOSED = "closed"
    #: The writer's own: the write could not be encoded, so it was never sent.
    UNSENDABLE = "unsendable"

    def __str__(self) -> str:
        return self.value  # "ok", as StrEnum gives, not "Status.OK"

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)  # f"{status}" too, on every Python
