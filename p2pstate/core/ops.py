"""The operations a change applies and the conditions a write may put on
them: one small immutable type per kind.

Each type is a ``NamedTuple`` whose first field is its kind string, so an op
is the very array the wire carries: msgpack's C packer encodes it with no
Python code per op, and ``op[0]`` still names its kind. Construct one with
its fields only (``Set("score", 3)``); the kind is filled in.

Decoding from the wire, with the checks a stranger's frame needs, is in
``messages.py`` (one decoder per kind; the field checks it shares with every
message live there). :func:`as_op` turns a raw tuple (a caller's or a test's)
into the typed op: ``Node.submit`` types a write's ops before the host's
admission sees them, and the two messages that carry ops, ``Change`` and
``Write``, type raw tuples as they are made.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, TypeAlias

if TYPE_CHECKING:
    from ..messages import Member
    from .access import Access

__all__ = [
    "COND_TYPES",
    "OP_TYPES",
    "Acl",
    "ChangeSettings",
    "Cond",
    "Delete",
    "IfAbsent",
    "IfExists",
    "IfHash",
    "Info",
    "Join",
    "Leave",
    "Msg",
    "Op",
    "Profile",
    "Restore",
    "RestoreEntry",
    "Set",
    "SetAccess",
    "SetOpts",
    "Term",
    "as_cond",
    "as_conds",
    "as_op",
    "as_ops",
]

#: One key of a restore: (key, value, owner, flags, seconds of ttl left or 0).
RestoreEntry: TypeAlias = tuple[str, Any, str, int, float]


# Each op is a NamedTuple of its fields (the "_..." class, kind first) and a
# subclass whose constructor fills the kind in.


class _Set(NamedTuple):
    kind: Literal["set"]
    key: str
    value: Any


class Set(_Set):
    """Store *value* under *key* (a plain key: no flags, no ttl)."""

    __slots__ = ()
    flags: ClassVar[int] = 0
    ttl: ClassVar[float] = 0.0

    def __new__(cls, key: str, value: Any) -> Set:
        return tuple.__new__(cls, ("set", key, value))


class _SetOpts(NamedTuple):
    kind: Literal["set"]
    key: str
    value: Any
    flags: int  # EPHEMERAL | OWNER_ONLY
    ttl: float  # seconds to live, 0 for ever


class SetOpts(_SetOpts):
    """Store *value* under *key* with flags and a ttl. A separate type from
    :class:`Set` because the wire keeps the two shapes (3 and 5 items), so a
    plain write costs no bytes for options it does not use."""

    __slots__ = ()

    def __new__(cls, key: str, value: Any, flags: int, ttl: float) -> SetOpts:
        return tuple.__new__(cls, ("set", key, value, flags, ttl))


class _Delete(NamedTuple):
    kind: Literal["del"]
    key: str


class Delete(_Delete):
    """Delete *key*."""

    __slots__ = ()

    def __new__(cls, key: str) -> Delete:
        return tuple.__new__(cls, ("del", key))


class _Msg(NamedTuple):
    kind: Literal["msg"]
    to: str  # a peer id, "" for every peer
    payload: Any


class Msg(_Msg):
    """A message from the change's writer to one peer or all; not stored."""

    __slots__ = ()

    def __new__(cls, to: str, payload: Any) -> Msg:
        return tuple.__new__(cls, ("msg", to, payload))


class _Info(NamedTuple):
    kind: Literal["info"]
    settings: dict[str, Any]


class Info(_Info):
    """Change some of the session's settings (max_players, joinable, ...)."""

    __slots__ = ()

    def __new__(cls, settings: dict[str, Any]) -> Info:
        return tuple.__new__(cls, ("info", settings))


class _Profile(NamedTuple):
    kind: Literal["profile"]
    profile: dict[str, Any]


class Profile(_Profile):
    """Replace the writer's profile."""

    __slots__ = ()

    def __new__(cls, profile: dict[str, Any]) -> Profile:
        return tuple.__new__(cls, ("profile", profile))


class _Join(NamedTuple):
    kind: Literal["join"]
    member: Member


class Join(_Join):
    """A member joins (or comes back with new details). The host's alone."""

    __slots__ = ()

    def __new__(cls, member: Member) -> Join:
        return tuple.__new__(cls, ("join", member))


class _Leave(NamedTuple):
    kind: Literal["leave"]
    peer: str
    reason: str


class Leave(_Leave):
    """A member leaves, with its ephemeral keys. The host's alone."""

    __slots__ = ()

    def __new__(cls, peer: str, reason: str) -> Leave:
        return tuple.__new__(cls, ("leave", peer, reason))


class _Term(NamedTuple):
    kind: Literal["term"]
    epoch: int
    host: str
    old: str | None  # the host before, if any
    reason: str


class Term(_Term):
    """A host term starts: *host* hosts at *epoch*. The host's alone."""

    __slots__ = ()

    def __new__(cls, epoch: int, host: str, old: str | None, reason: str) -> Term:
        return tuple.__new__(cls, ("term", epoch, host, old, reason))


class _Restore(NamedTuple):
    kind: Literal["restore"]
    entries: tuple[RestoreEntry, ...]


class Restore(_Restore):
    """Replace every lasting key by these (a backup), each key once."""

    __slots__ = ()

    def __new__(cls, entries: tuple[RestoreEntry, ...]) -> Restore:
        return tuple.__new__(cls, ("restore", entries))


class _Acl(NamedTuple):
    kind: Literal["acl"]
    action: str  # "authorize", "unauthorize", "ban" or "unban"
    identity: str


class Acl(_Acl):
    """The admin changes the authorized or banned list."""

    __slots__ = ()

    def __new__(cls, action: str, identity: str) -> Acl:
        return tuple.__new__(cls, ("acl", action, identity))


class _SetAccess(NamedTuple):
    kind: Literal["access"]
    access: Access


class SetAccess(_SetAccess):
    """The whole access state (the session's first change). The host's alone."""

    __slots__ = ()

    def __new__(cls, access: Access) -> SetAccess:
        return tuple.__new__(cls, ("access", access))


class _ChangeSettings(NamedTuple):
    kind: Literal["access_set"]
    settings: dict[str, Any]


class ChangeSettings(_ChangeSettings):
    """The admin changes some of the access modes and limits."""

    __slots__ = ()

    def __new__(cls, settings: dict[str, Any]) -> ChangeSettings:
        return tuple.__new__(cls, ("access_set", settings))


Op: TypeAlias = (
    Set
    | SetOpts
    | Delete
    | Msg
    | Info
    | Profile
    | Join
    | Leave
    | Term
    | Restore
    | Acl
    | SetAccess
    | ChangeSettings
)

# ---------------------------------------------------------------- conditions


class _IfExists(NamedTuple):
    kind: Literal["exists"]
    key: str


class IfExists(_IfExists):
    """The write applies only if *key* exists."""

    __slots__ = ()

    def __new__(cls, key: str) -> IfExists:
        return tuple.__new__(cls, ("exists", key))


class _IfAbsent(NamedTuple):
    kind: Literal["absent"]
    key: str


class IfAbsent(_IfAbsent):
    """The write applies only if *key* does not exist."""

    __slots__ = ()

    def __new__(cls, key: str) -> IfAbsent:
        return tuple.__new__(cls, ("absent", key))


class _IfHash(NamedTuple):
    kind: Literal["hash"]
    key: str
    hash: str  # codec.hash_value of the value the writer read


class IfHash(_IfHash):
    """The write applies only if *key*'s value still hashes to *hash*."""

    __slots__ = ()

    def __new__(cls, key: str, hash: str) -> IfHash:
        return tuple.__new__(cls, ("hash", key, hash))


Cond: TypeAlias = IfExists | IfAbsent | IfHash

# ---------------------------------------------------------------- raw tuples

#: (kind, number of items) -> the type of an op of that shape.
_OP_SHAPES: dict[tuple[str, int], type[Any]] = {
    (kind, len(cls._fields)): cls
    for kind, cls in (
        ("set", Set),
        ("set", SetOpts),
        ("del", Delete),
        ("msg", Msg),
        ("info", Info),
        ("profile", Profile),
        ("join", Join),
        ("leave", Leave),
        ("term", Term),
        ("restore", Restore),
        ("acl", Acl),
        ("access", SetAccess),
        ("access_set", ChangeSettings),
    )
}
_COND_SHAPES: dict[tuple[str, int], type[Any]] = {
    (kind, len(cls._fields)): cls
    for kind, cls in (("exists", IfExists), ("absent", IfAbsent), ("hash", IfHash))
}
#: Every op type, and every condition type.
OP_TYPES: frozenset[type[Any]] = frozenset(_OP_SHAPES.values())
COND_TYPES: frozenset[type[Any]] = frozenset(_COND_SHAPES.values())


def _typed(raw: Any, shapes: dict[tuple[str, int], type[Any]], what: str) -> Any:
    if not isinstance(raw, (tuple, list)):
        raise TypeError(f"an {what} is a tuple (kind, ...), not {type(raw).__name__}")
    cls = shapes.get((raw[0], len(raw))) if raw and isinstance(raw[0], str) else None
    if cls is None:
        raise ValueError(f"no {what} has the shape {raw!r:.100}")
    return cls._make(raw)


def as_op(op: tuple[Any, ...] | list[Any]) -> Op:
    """*op* as its typed op: itself if it is one already, else the type of
    its kind and length (``("set", "k", 1)`` is ``Set("k", 1)``). Only the
    shape is checked: the host checks the rest as it checks any write.
    TypeError or ValueError if no op has that shape."""
    if type(op) in OP_TYPES:
        return op  # type: ignore[return-value]
    typed: Op = _typed(op, _OP_SHAPES, "op")
    return typed


def as_ops(ops: Iterable[tuple[Any, ...] | list[Any]]) -> tuple[Op, ...]:
    """Every op of *ops* typed (see :func:`as_op`); *ops* itself when it is a
    tuple of typed ops already, the usual case, found without copying."""
    if type(ops) is tuple and all(type(op) in OP_TYPES for op in ops):
        return ops
    return tuple([as_op(op) for op in ops])


def as_cond(cond: tuple[Any, ...] | list[Any]) -> Cond:
    """*cond* as its typed condition, as :func:`as_op` does for ops."""
    if type(cond) in COND_TYPES:
        return cond  # type: ignore[return-value]
    typed: Cond = _typed(cond, _COND_SHAPES, "condition")
    return typed


def as_conds(conds: Iterable[tuple[Any, ...] | list[Any]]) -> tuple[Cond, ...]:
    """Every condition of *conds* typed; *conds* itself when already typed."""
    if type(conds) is tuple and all(type(c) in COND_TYPES for c in conds):
        return conds
    return tuple([as_cond(c) for c in conds])
