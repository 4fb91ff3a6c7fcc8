"""Who may do what in a session: the replicated access state and its rules.

Pure data and pure functions. Every replica holds one :class:`Access`; it
changes only through ordered changes (the ``("access", ...)`` op of the
session's first change, then the admin's ``("acl", action, identity)`` and
``("access_set", settings)`` ops), so every
replica and every future host agrees on it. Rules act on *identities* (see
``ids.py``), so a ban holds when the player restarts the game.

Modes (AppState's)::

    ANY              everyone
    ADMIN_ONLY       only the admin
    AUTHORIZED_ONLY  the admin and the identities it authorized
    UNBANNED_ONLY    everyone but banned identities

A ban always wins and the admin cannot be banned, so ANY and UNBANNED_ONLY
allow the same peers: a banned identity is not a member at all.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..errors import ProtocolError
from .ids import is_fingerprint

__all__ = [
    "ACL_ACTIONS",
    "ADMIN_ONLY",
    "ADMIN_OPS",
    "ALWAYS_ADMIN_OPS",
    "ANY",
    "AUTHORIZED_ONLY",
    "GATED_OPS",
    "MAX_IDENTITY_CHARS",
    "MAX_LIST",
    "MODES",
    "SETTINGS",
    "UNBANNED_ONLY",
    "Access",
    "check_identity",
    "claimed",
    "settings_from_wire",
    "takeover_refusal",
]

ANY = "any"
ADMIN_ONLY = "admin_only"
AUTHORIZED_ONLY = "authorized_only"
UNBANNED_ONLY = "unbanned_only"
MODES = (ANY, ADMIN_ONLY, AUTHORIZED_ONLY, UNBANNED_ONLY)

#: Ops that ``writemode`` gates. A peer's profile is its own bookkeeping, as
#: its name is: any member may change it.
GATED_OPS = frozenset({"set", "del", "msg"})
#: Ops only the admin may make once the session restricts reads or writes (a
#: mode other than ANY): settings, and a restore from a backup, which replaces
#: every lasting key. ACL ops are the admin's in every session.
ADMIN_OPS = frozenset({"acl", "info", "restore"})
#: Ops only the admin may make in every session: the ACL and changes of the
#: modes and limits.
ALWAYS_ADMIN_OPS = frozenset({"acl", "access_set"})
ACL_ACTIONS = ("authorize", "unauthorize", "ban", "unban")
#: The fields an ``("access_set", settings)`` op may change (never the admin
#: nor the lists, which have their own ops).
SETTINGS = ("readmode", "writemode", "max_keys", "max_total_bytes", "write_rate", "write_burst")

#: Identities are 16 hex digits for real peers; this bounds what the wire carries.
MAX_IDENTITY_CHARS = 64
#: Entries of the authorized and banned lists: bounds every snapshot.
MAX_LIST = 10_000


def check_identity(v: Any) -> str:
    """An identity as the wire carries it; raises ProtocolError."""
    if not isinstance(v, str) or not 0 < len(v) <= MAX_IDENTITY_CHARS or "." in v:
        raise ProtocolError(f"bad identity {v!r}")
    if not v.isascii():
        try:  # a lone surrogate: no peer could receive it (the API's rule for text)
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError(f"bad identity {v!r}: not valid Unicode text") from None
    return v


@dataclass(frozen=True, kw_only=True, slots=True)
class Access:
    """The session's access state and limits, as every replica holds it."""

    #: The identity that created the session ("" before a session exists).
    admin: str = ""
    readmode: str = ANY
    writemode: str = ANY
    authorized: frozenset[str] = frozenset()
    banned: frozenset[str] = frozenset()
    #: Limits the host enforces on writes (see the README's Security section).
    max_keys: int = 100_000
    max_total_bytes: int = 256 * 1024 * 1024
    write_rate: float = 5_000.0
    write_burst: int = 20_000

    # ------------------------------------------------------------ rules

    @property
    def restricted(self) -> bool:
        """Whether permissions are set: then settings ops are the admin's too."""
        return self.readmode != ANY or self.writemode != ANY

    def allows(self, mode: str, identity: str) -> bool:
        if identity == self.admin:
            return True
        if identity in self.banned:
            return False
        if mode == ADMIN_ONLY:
            return False
        if mode == AUTHORIZED_ONLY:
            return identity in self.authorized
        return True  # ANY, UNBANNED_ONLY

    def may_read(self, identity: str) -> bool:
        """Whether *identity* may be a member (a member holds the whole state)."""
        return self.allows(self.readmode, identity)

    def refusal(self, identity: str) -> str:
        """Why a member is refused: "banned" or "not_authorized"."""
        return "banned" if identity in self.banned else "not_authorized"

    def check_write(self, identity: str, kinds: set[str]) -> dict[str, Any] | None:
        """None if *identity* may make a write of these op kinds, else the
        detail of a "denied" result."""
        if identity == self.admin:
            return None  # who cannot be banned either
        if identity in self.banned:
            return {"reason": "banned"}
        for kind in sorted(kinds & ALWAYS_ADMIN_OPS):
            return {"reason": "admin", "op": kind}
        if self.restricted:
            for kind in sorted(kinds & ADMIN_OPS):
                return {"reason": "admin", "op": kind}
        mode = self.writemode
        if mode != ANY and kinds & GATED_OPS and not self.allows(mode, identity):
            return {"reason": "writemode", "mode": self.writemode}
        return None

    def check_acl(self, action: str, identity: str) -> dict[str, Any] | None:
        """None if the admin's ACL op may apply, else the detail of an
        "invalid" result."""
        if action == "ban" and identity == self.admin:
            return {"reason": "the admin cannot be banned"}
        if not self.well_formed(action, identity):
            return {"reason": f"{identity!r} is not an identity (16 lower-case hex digits)"}
        grows = (action == "ban" and identity not in self.banned) or (
            action == "authorize" and identity not in self.authorized
        )
        if grows and len(self.banned if action == "ban" else self.authorized) >= MAX_LIST:
            return {"reason": f"the list holds {MAX_LIST} identities already"}
        return None

    def well_formed(self, action: str, identity: str) -> bool:
        """Whether an ACL op may name *identity*: in a session of real
        installations (the admin's identity is a fingerprint) only another
        fingerprint can match a peer. One already listed may be taken off."""
        if is_fingerprint(identity) or not is_fingerprint(self.admin):
            return True  # the simulator's ids ("a", "bob") are their own form
        return (action == "unban" and identity in self.banned) or (
            action == "unauthorize" and identity in self.authorized
        )

    # ------------------------------------------------------------ changes

    def apply_acl(self, action: str, identity: str) -> Access:
        if action == "authorize":
            return replace(self, authorized=self.authorized | {identity})
        if action == "unauthorize":
            return replace(self, authorized=self.authorized - {identity})
        if action == "ban":
            return replace(self, banned=self.banned | {identity})
        return replace(self, banned=self.banned - {identity})  # unban

    def with_settings(self, settings: dict[str, Any]) -> Access:
        """This state with the fields of *settings* (a subset of SETTINGS) changed."""
        changed = dict(settings)
        if "write_rate" in changed:
            changed["write_rate"] = float(changed["write_rate"])
        return replace(self, **changed)

    def settings(self) -> dict[str, Any]:
        """The modes and limits, as ``access_set`` and ``set_access`` name them."""
        return {name: getattr(self, name) for name in SETTINGS}

    # ------------------------------------------------------------ wire

    def to_wire(self) -> dict[str, Any]:
        return {
            "admin": self.admin,
            "readmode": self.readmode,
            "writemode": self.writemode,
            "authorized": sorted(self.authorized),
            "banned": sorted(self.banned),
            "max_keys": self.max_keys,
            "max_total_bytes": self.max_total_bytes,
            "write_rate": self.write_rate,
            "write_burst": self.write_burst,
        }

    @classmethod
    def from_wire(cls, v: Any) -> Access:
        """Validate an access state from the wire; raises ProtocolError."""
        if not isinstance(v, dict) or set(v) != set(_FIELDS):
            raise ProtocolError("bad access state")
        for name, ok in _FIELDS.items():
            if not ok(v[name]):
                raise ProtocolError(f"bad access setting {name!r}: {v[name]!r:.100}")
        return cls(
            admin=v["admin"],
            readmode=v["readmode"],
            writemode=v["writemode"],
            authorized=frozenset(v["authorized"]),
            banned=frozenset(v["banned"]),
            max_keys=v["max_keys"],
            max_total_bytes=v["max_total_bytes"],
            write_rate=float(v["write_rate"]),
            write_burst=v["write_burst"],
        )


def settings_from_wire(v: Any) -> dict[str, Any]:
    """The settings of an ``("access_set", settings)`` op: a map of one or more
    of SETTINGS, each valid as in a whole access state; raises ProtocolError."""
    if not isinstance(v, dict) or not v or not set(v) <= set(SETTINGS):
        raise ProtocolError(f"bad access settings {v!r:.100}")
    for name, value in v.items():
        if not _FIELDS[name](value):
            raise ProtocolError(f"bad access setting {name!r}: {value!r:.100}")
    return dict(v)


def _is_identity(v: Any) -> bool:
    try:
        check_identity(v)
    except ProtocolError:
        return False
    return True


def _is_count(v: Any, top: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= top


def _is_rate(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1e9


def _is_list(v: Any) -> bool:
    return isinstance(v, list) and len(v) <= MAX_LIST and all(_is_identity(x) for x in v)


_FIELDS: dict[str, Any] = {
    "admin": lambda v: v == "" or _is_identity(v),
    "readmode": lambda v: v in MODES,
    "writemode": lambda v: v in MODES,
    "authorized": _is_list,
    "banned": _is_list,
    "max_keys": lambda v: _is_count(v, 10**9),
    "max_total_bytes": lambda v: _is_count(v, 2**50),
    "write_rate": _is_rate,
    "write_burst": lambda v: _is_count(v, 10**9),
}


def claimed(access: Access) -> bool:
    """Whether the admin has used its role: a mode other than ANY, or anyone
    banned or authorized. Until then a copy that hosts alone is what two
    copies started at once are, and may merge into the other's session."""
    return access.restricted or bool(access.banned) or bool(access.authorized)


def takeover_refusal(ours: Access, theirs: Access) -> str | None:
    """Why a replica that holds *ours* may not take on *theirs* (a merge's
    snapshot), or None if it may. A merge never removes or refuses our admin,
    and never hands a claimed session (see :func:`claimed`) to another admin:
    nothing on the wire proves the other side's access state, so the one the
    admin made here wins."""
    if not ours.admin:
        return None  # nothing held yet: a first join takes the session as it is
    if not theirs.may_read(ours.admin):
        return "refuses_our_admin"
    if theirs.admin != ours.admin and claimed(ours):
        return "another_admin"
    return None
