"""Every error p2pstate raises derives from :class:`P2PStateError`.

Local errors (the caller did something wrong) also derive from the matching
builtin, so ``except ValueError`` and ``except KeyError`` keep working for code
written against a plain dict.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BackupError",
    "BannedError",
    "DataUnchangedError",
    "IdentityError",
    "IncompatibleVersionError",
    "P2PStateError",
    "PermissionDeniedError",
    "ProtocolError",
    "QuotaExceededError",
    "RateLimitedError",
    "SessionClosedError",
    "SessionFullError",
    "SessionLostError",
    "StorageError",
    "UpdateFailedError",
    "ValueTooLargeError",
]


class P2PStateError(Exception):
    """Base class of every p2pstate error."""


class ValueTooLargeError(P2PStateError, ValueError):
    """A value, message or request is larger than the session allows."""


class UpdateFailedError(P2PStateError):
    """A compare-and-swap write found a different value than the caller expected."""


class DataUnchangedError(P2PStateError):
    """``get_if_changed``: the value still hashes to the hash the caller holds."""


class PermissionDeniedError(P2PStateError, PermissionError):
    """The host refused a write this peer is not allowed to make."""


class BannedError(PermissionDeniedError):
    """The session's admin banned this peer's identity: it was removed from
    the session and may not join it again."""


class RateLimitedError(P2PStateError):
    """This peer wrote faster than the session's ``write_rate`` allows (after
    a burst of ``write_burst``): the host refused the write. Try again later."""


class QuotaExceededError(P2PStateError):
    """The write would take the session past ``max_keys`` keys,
    ``max_total_bytes`` bytes of values and profiles, or what one snapshot
    (``max_frame_size``) carries: the host refused it."""


class SessionLostError(P2PStateError, ConnectionError):
    """No host could be reached within the call's timeout."""


class SessionFullError(P2PStateError):
    """The session has ``max_players`` players already, or is not joinable."""


class SessionClosedError(P2PStateError):
    """The shared state was closed; make a new one with ``p2pstate.join``."""


class ProtocolError(P2PStateError):
    """A message from the network is malformed or not allowed in this state.

    Raised inside the library only; a peer or host drops such a message, counts
    it and keeps serving. It never reaches user code.
    """


class AuthenticationError(P2PStateError, ConnectionError):
    """The session could not be joined securely: it needs a secret and none
    (or a wrong one) was given, or it has none and a secret was given."""


class IncompatibleVersionError(P2PStateError):
    """The session's host runs a p2pstate whose wire format differs from this
    copy's: they could not understand each other. Run one version everywhere."""


class IdentityError(P2PStateError):
    """This installation's identity file is unreadable or corrupt (the message
    names the file)."""


# Persistence (issue 8)


class BackupError(P2PStateError, ValueError):
    """A backup file is corrupt, truncated, of another format or version, or
    of another app. Raised before anything is changed."""


class StorageError(P2PStateError):
    """The store (``join(store=...)``) cannot be opened, read or written: not
    a p2pstate store, corrupt, or the disk failed."""
