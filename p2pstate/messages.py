"""Wire messages: frozen dataclasses, and the one pair of functions that turn
them into msgpack frames and back.

Every message travels as a msgpack array ``[type, sender, epoch, *fields]``.
Decoding validates the type of every field, so a handler never sees a
malformed message: it gets a ProtocolError instead, and the caller drops the
frame and counts it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from .codec import MAX_KEY_BYTES, decode, decode_all, encode, normalize, normalize_detail
from .core.access import ACL_ACTIONS, Access, check_identity, settings_from_wire
from .core.ops import (
    COND_TYPES,
    OP_TYPES,
    Acl,
    ChangeSettings,
    Cond,
    Delete,
    IfAbsent,
    IfExists,
    IfHash,
    Info,
    Join,
    Msg,
    Op,
    Profile,
    Restore,
    Set,
    SetAccess,
    SetOpts,
    Term,
    as_conds,
    as_ops,
)
from .core.ops import Leave as LeaveOp
from .core.status import Status
from .errors import ProtocolError

__all__ = [
    "MAX_BATCH",
    "MAX_COUNTER",
    "MAX_ENDPOINTS",
    "MAX_ENDPOINT_CHARS",
    "MAX_ID_CHARS",
    "MAX_NAME_BYTES",
    "MAX_PROFILE_BYTES",
    "MAX_SUSPECTS",
    "MAX_TTL",
    "WIRE_VERSION",
    "Ack",
    "Change",
    "ChangeMsg",
    "Gone",
    "Handoff",
    "Heartbeat",
    "Hello",
    "Leave",
    "Member",
    "Message",
    "Redirect",
    "Refused",
    "Result",
    "Snapshot",
    "Welcome",
    "WireMember",
    "Write",
    "check_profile",
    "from_batch",
    "from_frame",
    "restore_entries",
    "to_frame",
]

#: The wire format. Raise it with any change to how a message is encoded:
#: hosts advertise it, and a copy that speaks another refuses to join them
#: (IncompatibleVersionError) instead of sending frames neither side can read.
#: 1 was every version before the number was advertised.
WIRE_VERSION = 5  # 3: Redirect carries the standing (majority, seq, terms); 4: and backed;
#                  5: ChangeMsg and Heartbeat carry the host's backed change too

#: Most messages one frame may carry (a sender batches what it has for one
#: peer; see transport.py). More is refused, so a frame cannot expand into
#: millions of tiny messages.
MAX_BATCH = 1024

#: Limits on what a peer says about itself (Hello, and a member as the state
#: holds it), so no one joins with a name or profile that bloats every replica
#: and snapshot. The API holds a player's own name and profile to the same.
MAX_NAME_BYTES = 100  # in UTF-8; a host's name goes in its mDNS record too
MAX_PROFILE_BYTES = 8 * 1024  # encoded; profiles also count in max_total_bytes
MAX_ID_CHARS = 128  # node ids ("<identity>.<instance>", 33 today) and session ids
MAX_ENDPOINTS = 16  # addresses one peer may give (one per interface)
MAX_ENDPOINT_CHARS = 100  # "tcp://[IPv6]:port" fits
MAX_SUSPECTS = 1024  # candidates a peer saw fail in one failover

# ---------------------------------------------------------------- field checks


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ProtocolError(f"expected str, got {type(v).__name__}")
    return v


def _opt_str(v: Any) -> str | None:
    return None if v is None else _str(v)


def _id(v: Any) -> str:
    """A node id or session id ("" where there is none yet)."""
    if type(v) is str and len(v) <= MAX_ID_CHARS:
        return v  # the usual case, in one step: every message names its sender
    s = _str(v)
    if len(s) > MAX_ID_CHARS:
        raise ProtocolError(f"an id is at most {MAX_ID_CHARS} characters")
    return s


def _opt_id(v: Any) -> str | None:
    return None if v is None else _id(v)


def _name(v: Any) -> str:
    s = _str(v)
    if len(s.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise ProtocolError(f"a name is at most {MAX_NAME_BYTES} bytes")
    return s


def _endpoint(v: Any) -> str:
    s = _str(v)
    if len(s) > MAX_ENDPOINT_CHARS:
        raise ProtocolError(f"an endpoint is at most {MAX_ENDPOINT_CHARS} characters")
    return s


def _int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ProtocolError(f"expected int, got {type(v).__name__}")
    return v


#: Counters on the wire (epochs, sequence and request numbers) stay below
#: this, so that one more (an epoch + 1) still encodes: a peer sending 2**64 - 1
#: must not make its receiver fail to encode its next message.
MAX_COUNTER = 2**62


def _nat(v: Any) -> int:
    if type(v) is int and 0 <= v < MAX_COUNTER:
        return v  # the usual case, in one step: every message has an epoch
    n = _int(v)
    if not 0 <= n < MAX_COUNTER:
        raise ProtocolError(f"expected an int from 0 to 2**62, got {n}")
    return n


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        raise ProtocolError(f"expected a number, got {v!r}")
    return float(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ProtocolError(f"expected bool, got {type(v).__name__}")
    return v


def _value(v: Any) -> Any:
    """A value as the state may hold it: what msgpack decodes but the codec
    cannot store (ext types, timestamps, maps with bytes keys) is refused
    here, so no handler ever meets it (hashing it would raise)."""
    try:
        return normalize(v)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"bad value: {exc}") from None


def _detail(v: Any) -> Any:
    """A write's outcome detail: a conflict's carries the current value one
    level down, so a value nested to the limit still fits (see codec)."""
    try:
        return normalize_detail(v)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"bad detail: {exc}") from None


def _dict(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ProtocolError(f"expected map, got {type(v).__name__}")
    out: dict[str, Any] = _value(v)
    return out


def _key(v: Any) -> str:
    if type(v) is str and len(v) <= MAX_KEY_BYTES:
        return v  # the usual case, in one step: every set and del has a key
    s = _str(v)
    if len(s) > MAX_KEY_BYTES:  # chars >= bytes/4; exact byte check is done on write
        raise ProtocolError("key too long")
    return s


def _list(item: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    def check(v: Any) -> tuple[Any, ...]:
        if not isinstance(v, list):
            raise ProtocolError(f"expected array, got {type(v).__name__}")
        return tuple([item(x) for x in v])  # a list first: faster than a generator

    return check


def _most(n: int, item: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    """An array of at most *n* items, each checked by *item*."""
    check_all = _list(item)

    def check(v: Any) -> tuple[Any, ...]:
        if isinstance(v, list) and len(v) > n:
            raise ProtocolError(f"expected at most {n} items, got {len(v)}")
        return check_all(v)

    return check


_endpoints = _most(MAX_ENDPOINTS, _endpoint)


def _tuple(*items: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    def check(v: Any) -> tuple[Any, ...]:
        if not isinstance(v, list) or len(v) != len(items):
            raise ProtocolError(f"expected array of {len(items)}")
        return tuple(f(x) for f, x in zip(items, v, strict=True))

    return check


# ---------------------------------------------------------------- data shapes


@dataclass(frozen=True, kw_only=True, slots=True)
class Member:
    """A member of the session as the replicated membership list holds it."""

    id: str
    name: str
    endpoints: tuple[str, ...]
    joined_seq: int = 0
    profile: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    #: When it joined, in seconds since the Unix epoch, by its own clock.
    joined_at: float = 0.0

    def to_wire(self) -> list[Any]:
        return [
            self.id,
            self.name,
            list(self.endpoints),
            self.joined_seq,
            self.profile,
            self.joined_at,
        ]

    @classmethod
    def from_wire(cls, v: Any) -> Member:
        t = _tuple(_id, _name, _endpoints, _nat, _profile, _float)(v)
        return cls(
            id=t[0], name=t[1], endpoints=t[2], joined_seq=t[3], profile=t[4], joined_at=t[5]
        )


WireMember = Member


#: Flags of a "set": the key goes with its owner (ephemeral), only its owner
#: may change it (owner_only).
EPHEMERAL, OWNER_ONLY = 1, 2
#: The longest ttl a key may have, in seconds (about 115 days).
MAX_TTL = 10_000_000.0


def _ttl(v: Any) -> float:
    ttl = _float(v)
    if not 0 <= ttl <= MAX_TTL:
        raise ProtocolError("ttl out of range")
    return ttl


def _profile(v: Any) -> dict[str, Any]:
    profile = _dict(v)
    size = len(encode(profile))
    if size > MAX_PROFILE_BYTES:
        raise ProtocolError(f"profile is {size} bytes encoded; at most {MAX_PROFILE_BYTES}")
    return profile


def check_profile(v: Any) -> dict[str, Any]:
    """A player's profile as the wire takes it: a dict of storable values of
    at most MAX_PROFILE_BYTES encoded. Raises ProtocolError."""
    return _profile(v)


def session_info(v: Any) -> dict[str, Any]:
    """The session's settings as a write or a snapshot carries them: only the
    known keys, each of its type. Raises ProtocolError (a ValueError)."""
    info = _dict(v)  # normalised: its str are valid text (no lone surrogate)
    for key, value in info.items():
        ok = {
            "max_players": lambda x: x is None or (_plain_int(x) and 1 <= int(x) <= 10_000),
            "joinable": lambda x: isinstance(x, bool),
            "version": lambda x: x is None or (isinstance(x, str) and len(x) <= 100),
            "metadata": lambda x: (
                isinstance(x, dict)
                and all(isinstance(k, str) and isinstance(w, str) for k, w in x.items())
            ),
        }.get(key)
        if ok is None or not ok(value):
            raise ProtocolError(f"bad session setting {key!r}: {value!r}")
    return info


def _plain_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _restore_entry(v: Any) -> tuple[str, Any, str, int, float]:
    key, value, owner, flags, ttl = _tuple(_key, _value, _str, _nat, _ttl)(v)
    if flags not in (0, OWNER_ONLY):
        raise ProtocolError("a restored key is plain or owner-only, never ephemeral")
    return (key, value, owner, flags, ttl)


def restore_entries(v: Any) -> tuple[tuple[str, Any, str, int, float], ...]:
    """The keys of a ``("restore", entries)`` op, each (key, value, owner,
    flags, seconds of ttl left or 0), every key once. Raises ProtocolError."""
    entries = _list(_restore_entry)(v)
    if len({e[0] for e in entries}) != len(entries):
        raise ProtocolError("a restore names a key twice")
    return entries


# ---------------------------------------------------------------- ops

_new = tuple.__new__  # a typed op from its items, kind first, with no Python call


def _set_op(v: list[Any]) -> Set | SetOpts:
    """("set", key, value) or ("set", key, value, flags, ttl)."""
    if len(v) == 3:
        return _new(Set, ("set", _key(v[1]), _value(v[2])))
    if len(v) == 5:
        flags = _nat(v[3])
        if flags > EPHEMERAL | OWNER_ONLY:
            raise ProtocolError("unknown set flags")
        return _new(SetOpts, ("set", _key(v[1]), _value(v[2]), flags, _ttl(v[4])))
    raise ProtocolError(f"'set' takes 2 or 4 fields, got {len(v) - 1}")


def _del_op(v: list[Any]) -> Delete:
    if len(v) != 2:
        raise ProtocolError(f"'del' takes 1 field, got {len(v) - 1}")
    return _new(Delete, ("del", _key(v[1])))


def _msg_op(v: list[Any]) -> Msg:
    """("msg", to_peer_id or "", payload)."""
    if len(v) != 3:
        raise ProtocolError(f"'msg' takes 2 fields, got {len(v) - 1}")
    return _new(Msg, ("msg", _str(v[1]), _value(v[2])))


def _acl_action(v: Any) -> str:
    if v not in ACL_ACTIONS:
        raise ProtocolError(f"unknown ACL action {v!r:.40}")
    out: str = v
    return out


def _shaped(cls: type[Any], kind: str, *items: Callable[[Any], Any]) -> Callable[[list[Any]], Any]:
    """The decoder of the ops of *kind* that are rare on the wire: their
    fields, each checked by its item of *items*, in a *cls*."""

    def decode(v: list[Any]) -> Any:
        if len(v) != len(items) + 1:
            raise ProtocolError(f"{kind!r} takes {len(items)} fields, got {len(v) - 1}")
        return _new(cls, (kind, *[f(x) for f, x in zip(items, v[1:], strict=True)]))

    return decode


#: kind -> the decoder of an op of that kind, which checks every field.
#: "join", "leave", "term" and "access" are the host's alone (node.py refuses
#: them in a write); the rest are what writers send.
_OP_DECODERS: dict[str, Callable[[list[Any]], Op]] = {
    "set": _set_op,
    "del": _del_op,
    "msg": _msg_op,
    "profile": _shaped(Profile, "profile", _profile),
    "info": _shaped(Info, "info", session_info),
    "join": _shaped(Join, "join", Member.from_wire),
    "leave": _shaped(LeaveOp, "leave", _str, _str),
    "term": _shaped(Term, "term", _nat, _str, _opt_str, _str),
    "restore": _shaped(Restore, "restore", restore_entries),
    "acl": _shaped(Acl, "acl", _acl_action, check_identity),
    "access": _shaped(SetAccess, "access", Access.from_wire),
    "access_set": _shaped(ChangeSettings, "access_set", settings_from_wire),
}


def _op(v: Any) -> Op:
    """One operation of a change, by the decoder of its kind (core/ops.py
    describes each)."""
    if type(v) is not list or not v:
        raise ProtocolError("op must be a non-empty array")
    try:
        decoder = _OP_DECODERS[v[0]]
    except (KeyError, TypeError):  # TypeError: a kind that is not even hashable
        raise ProtocolError(f"unknown op {v[0]!r:.40}") from None
    return decoder(v)


#: Ops holding an object msgpack cannot pack (a Member, an Access).
_OBJECT_OPS: frozenset[type[Any]] = frozenset({Join, SetAccess})


def _op_to_wire(op: tuple[Any, ...]) -> Any:
    """What the wire carries of *op*: the op itself (a tuple, packed as an
    array), but for the ops that hold an object."""
    if type(op) is Join:
        return ("join", op.member.to_wire())
    if type(op) is SetAccess:
        return ("access", op.access.to_wire())
    return op


def _if_hash(v: list[Any]) -> IfHash:
    if len(v) != 3:
        raise ProtocolError(f"'hash' takes 2 fields, got {len(v) - 1}")
    return _new(IfHash, ("hash", _key(v[1]), _str(v[2])))


def _if_exists(v: list[Any]) -> IfExists:
    if len(v) != 2:
        raise ProtocolError(f"'exists' takes 1 field, got {len(v) - 1}")
    return _new(IfExists, ("exists", _key(v[1])))


def _if_absent(v: list[Any]) -> IfAbsent:
    if len(v) != 2:
        raise ProtocolError(f"'absent' takes 1 field, got {len(v) - 1}")
    return _new(IfAbsent, ("absent", _key(v[1])))


#: kind -> the decoder of a write's precondition of that kind (each on the
#: path of every compare-and-swap, so written out, as "set" is).
_COND_DECODERS: dict[str, Callable[[list[Any]], Cond]] = {
    "hash": _if_hash,
    "exists": _if_exists,
    "absent": _if_absent,
}


def _cond(v: Any) -> Cond:
    """A write's precondition (core/ops.py): ("hash", key, hash) ("exists", key) ("absent", key)."""
    if type(v) is not list or not v:
        raise ProtocolError("condition must be a non-empty array")
    try:
        decoder = _COND_DECODERS[v[0]]
    except (KeyError, TypeError):  # TypeError: a kind that is not even hashable
        raise ProtocolError(f"unknown condition {v[0]!r:.40}") from None
    return decoder(v)


_STATUSES: dict[str, Status] = {s.value: s for s in Status}


def _status(v: Any) -> Status:
    """A write's status, as the host gives it (core/status.py)."""
    status = _STATUSES.get(v) if type(v) is str else None
    if status is None:
        raise ProtocolError(f"unknown status {v!r:.40}")
    return status


@dataclass(frozen=True, kw_only=True, slots=True)
class Change:
    """One numbered change of the replicated state, ordered by the host alone.

    ``epoch``/``origin`` name the host term that made it, so two changes with
    one sequence number from two halves of a split session are told apart.
    A refused write is a change with no ops: its result must survive a
    failover too, for exactly-once.
    """

    seq: int
    epoch: int
    origin: str
    writer: str = ""
    req: int = 0
    acked_upto: int = 0
    status: Status = Status.OK
    detail: Any = None
    # Typed ops (core/ops.py); a test's raw tuples are taken and typed here.
    ops: tuple[Op, ...] = ()

    def __post_init__(self) -> None:
        # Where raw tuples become typed ops (core/ops.py) in a change made
        # from tuples (a test's; the core makes typed ones). Decoded changes
        # hold typed ops already and pass in one cheap loop.
        for op in self.ops:
            if op.__class__ not in OP_TYPES:
                object.__setattr__(self, "ops", as_ops(self.ops))
                return

    def to_wire(self) -> list[Any]:
        ops = self.ops
        return [
            self.seq,
            self.epoch,
            self.origin,
            self.writer,
            self.req,
            self.acked_upto,
            self.status,
            self.detail,
            [op if type(op) not in _OBJECT_OPS else _op_to_wire(op) for op in ops],
        ]

    @classmethod
    def from_wire(cls, v: Any) -> Change:
        # Every peer decodes every change: the usual shape is checked inline,
        # and anything else goes through the checks below, which name the fault.
        if type(v) is list and len(v) == 9:
            seq, epoch, origin, writer, req, acked, status, detail, ops = v
            if (
                type(seq) is int
                and type(epoch) is int
                and type(req) is int
                and type(acked) is int
                and 0 <= seq < MAX_COUNTER  # chained: a third of min() and max()'s cost
                and 0 <= epoch < MAX_COUNTER
                and 0 <= req < MAX_COUNTER
                and 0 <= acked < MAX_COUNTER
                and type(origin) is str
                and type(writer) is str
                and type(status) is str
                and status in _STATUSES
                and type(ops) is list
            ):
                c, set_ = _blank(Change), _CHANGE_SLOTS  # checked and typed: see _blank
                set_[0](c, seq), set_[1](c, epoch), set_[2](c, origin), set_[3](c, writer)
                set_[4](c, req), set_[5](c, acked), set_[6](c, _STATUSES[status])
                set_[7](c, None if detail is None else _detail(detail))
                set_[8](c, tuple([_op(op) for op in ops]))
                return c  # type: ignore[no-any-return]
        t = _tuple(_nat, _nat, _str, _str, _nat, _nat, _status, _detail, _list(_op))(v)
        return cls(
            seq=t[0],
            epoch=t[1],
            origin=t[2],
            writer=t[3],
            req=t[4],
            acked_upto=t[5],
            status=t[6],
            detail=t[7],
            ops=t[8],
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Snapshot:
    """The whole replicated state at one sequence number."""

    session_id: str
    seq: int
    last_epoch: int
    last_origin: str
    host_id: str
    epoch: int
    # (key, value, version, owner, flags, seconds of ttl left or 0)
    data: tuple[tuple[str, Any, int, str, int, float], ...]
    members: tuple[Member, ...]
    # writer -> (last request applied, acked_upto, ((req, status, detail), ...))
    dedupe: tuple[tuple[str, int, int, tuple[tuple[int, Status, Any, int], ...]], ...]
    # (first seq, epoch, origin) of every host term in this state's history
    terms: tuple[tuple[int, int, str], ...] = ()
    # The session's own settings: max_players, joinable, version, metadata.
    info: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # Who may read and write, and the host's limits (core/access.py).
    access: Access = field(default_factory=Access)

    def to_wire(self) -> list[Any]:
        return [
            self.session_id,
            self.seq,
            self.last_epoch,
            self.last_origin,
            self.host_id,
            self.epoch,
            [list(d) for d in self.data],
            [m.to_wire() for m in self.members],
            [
                [w, last, acked, [list(r) for r in results]]
                for w, last, acked, results in self.dedupe
            ],
            [list(t) for t in self.terms],
            self.info,
            self.access.to_wire(),
        ]

    @classmethod
    def from_wire(cls, v: Any) -> Snapshot:
        result = _tuple(_nat, _status, _detail, _nat)
        t = _tuple(
            _str,
            _nat,
            _nat,
            _str,
            _str,
            _nat,
            _list(_tuple(_key, _value, _nat, _str, _nat, _ttl)),
            _list(Member.from_wire),
            _list(_tuple(_str, _nat, _nat, _list(result))),
            _list(_tuple(_nat, _nat, _str)),
            session_info,
            Access.from_wire,
        )(v)
        return cls(
            session_id=t[0],
            seq=t[1],
            last_epoch=t[2],
            last_origin=t[3],
            host_id=t[4],
            epoch=t[5],
            data=t[6],
            members=t[7],
            dedupe=t[8],
            terms=t[9],
            info=t[10],
            access=t[11],
        )


# ---------------------------------------------------------------- messages


@dataclass(frozen=True, kw_only=True, slots=True)
class Message:
    """Base of every wire message: who sent it, and in which host epoch."""

    TYPE: ClassVar[int] = 0
    SPEC: ClassVar[tuple[Callable[[Any], Any], ...]] = ()
    sender: str
    epoch: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Hello(Message):
    """A peer asks the receiver, which it takes for the host, to let it in.

    ``resume_*`` name the last change it holds, so a host that still has the
    changes after it can send just those. ``prev_host``/``suspects`` say which
    host it lost and which candidates did not answer: the receiver uses them to
    decide whether it must take over.
    """

    TYPE: ClassVar[int] = 1
    name: str
    endpoints: tuple[str, ...]
    profile: dict[str, Any]
    session_id: str | None
    resume_seq: int
    resume_epoch: int
    resume_origin: str
    prev_host: str | None
    suspects: tuple[str, ...]
    joined_at: float = 0.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Welcome(Message):
    """The host lets a peer in: a snapshot, or the changes after its resume point."""

    TYPE: ClassVar[int] = 2
    session_id: str
    host_id: str
    snapshot: Snapshot | None
    changes: tuple[Change, ...]
    # The resume point of the Hello this answers: ``changes`` follow it. A
    # joiner whose state is no longer there (an old Hello, held by TCP during
    # a split, answered late) must not take them.
    resume_seq: int = 0
    resume_epoch: int = 0
    resume_origin: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Redirect(Message):
    """I am not (or no longer) the host: go to this one.

    A host that names itself (``host_id == sender``) is announcing that it
    hosts: after a takeover, or to another host it met. ``players`` is then the
    number of live players it serves (itself too).
    """

    TYPE: ClassVar[int] = 3
    host_id: str
    endpoints: tuple[str, ...]
    reason: str
    players: int = 0
    # The rest of an announcing host's standing (core/rank.py): whether its
    # live players are a majority of its last agreed membership, and its
    # history (last seq, terms), so the other side can tell which extends
    # which.
    majority: bool = False
    seq: int = 0
    terms: tuple[tuple[int, int, str], ...] = ()
    # (seq, epoch, origin) of its history's last change made with a majority
    backed: tuple[int, int, str] = (0, 0, "")


@dataclass(frozen=True, kw_only=True, slots=True)
class Write(Message):
    TYPE: ClassVar[int] = 4
    req: int
    acked_upto: int
    # Typed ops and conditions (core/ops.py); raw tuples are typed here, as in Change.
    ops: tuple[Op, ...]
    conds: tuple[Cond, ...]

    def __post_init__(self) -> None:
        # A write made from raw tuples (a test's, a forged one) holds typed
        # ops too, so it encodes as any other; decoded ones pass in one loop.
        for op in self.ops:
            if op.__class__ not in OP_TYPES:
                object.__setattr__(self, "ops", as_ops(self.ops))
                break
        for cond in self.conds:
            if cond.__class__ not in COND_TYPES:
                object.__setattr__(self, "conds", as_conds(self.conds))
                break


@dataclass(frozen=True, kw_only=True, slots=True)
class Result(Message):
    TYPE: ClassVar[int] = 5
    req: int
    status: Status
    detail: Any
    seq: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ChangeMsg(Message):
    """A change for the receiver to apply; ``ack`` asks the successor to confirm;
    ``backed``: the host made it (or has since held it) with a majority."""

    TYPE: ClassVar[int] = 6
    change: Change
    ack: bool
    backed: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Ack(Message):
    """The successor holds every change up to ``seq``."""

    TYPE: ClassVar[int] = 7
    seq: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Heartbeat(Message):
    TYPE: ClassVar[int] = 8
    seq: int
    # the host's backed change (core/rank.py rule 3); a peer's heartbeat: unused
    backed: tuple[int, int, str] = (0, 0, "")


@dataclass(frozen=True, kw_only=True, slots=True)
class Leave(Message):
    """A peer leaves on purpose."""

    TYPE: ClassVar[int] = 9


@dataclass(frozen=True, kw_only=True, slots=True)
class Handoff(Message):
    """The host leaves on purpose and hands hosting to the receiver at ``epoch``."""

    TYPE: ClassVar[int] = 10


@dataclass(frozen=True, kw_only=True, slots=True)
class Refused(Message):
    """The host will not let a peer in: ``reason`` is "full" or "closed" (for
    a newcomer), "banned" or "not_authorized" (the session's readmode)."""

    TYPE: ClassVar[int] = 13
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Gone(Message):
    """You are not a member (any more): say hello again."""

    TYPE: ClassVar[int] = 11


_SPECS: dict[type[Message], tuple[Callable[[Any], Any], ...]] = {
    Hello: (
        _name,
        _endpoints,
        _profile,
        _opt_id,
        _nat,
        _nat,
        _id,
        _opt_id,
        _most(MAX_SUSPECTS, _id),
        _float,
    ),
    Welcome: (
        _str,
        _str,
        lambda v: None if v is None else Snapshot.from_wire(v),
        _list(Change.from_wire),
        _nat,
        _nat,
        _str,
    ),
    Redirect: (
        _str,
        _list(_str),
        _str,
        _nat,
        _bool,
        _nat,
        _list(_tuple(_nat, _nat, _str)),
        _tuple(_nat, _nat, _str),
    ),
    Write: (_nat, _nat, _list(_op), _list(_cond)),
    Result: (_nat, _status, _detail, _nat),
    ChangeMsg: (Change.from_wire, _bool, _bool),
    Ack: (_nat,),
    Heartbeat: (_nat, _tuple(_nat, _nat, _str)),
    Leave: (),
    Handoff: (),
    Gone: (),
    Refused: (_str,),
}
_BY_TYPE: dict[int, type[Message]] = {cls.TYPE: cls for cls in _SPECS}
_FIELD_NAMES: dict[type[Message], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls) if f.name not in ("sender", "epoch")) for cls in _SPECS
}


def _field_to_wire(v: Any) -> Any:
    if isinstance(v, (Change, Snapshot)):
        return v.to_wire()
    if isinstance(v, tuple):
        return [_field_to_wire(x) for x in v]
    return v


def _op_or_field(cls: type[Message], name: str, v: Any) -> Any:
    if name == "ops":
        return [_op_to_wire(op) for op in v]
    return _field_to_wire(v)


def to_frame(msg: Message) -> bytes:
    """Encode a message as one frame."""
    cls = type(msg)
    fast = _FAST_ENCODERS.get(cls)
    if fast is not None:
        return encode(fast(msg))
    body: list[Any] = [cls.TYPE, msg.sender, msg.epoch]
    body.extend(_op_or_field(cls, name, getattr(msg, name)) for name in _FIELD_NAMES[cls])
    return encode(body)


def from_frame(frame: bytes, *, max_size: int) -> Message:
    """Decode and validate one frame; raise ProtocolError on anything wrong."""
    try:
        body = decode(frame, max_size=max_size)
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None
    return _from_body(body)


def from_batch(frame: bytes, *, max_size: int) -> list[Message]:
    """Decode and validate a frame of one or more messages laid end to end.

    All or nothing: one bad message makes the whole frame a ProtocolError."""
    try:
        bodies = decode_all(frame, max_size=max_size, max_objects=MAX_BATCH)
        msgs = [_from_body(body) for body in bodies]
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None
    if not msgs:
        raise ProtocolError("empty frame")
    return msgs


def _from_body(body: Any) -> Message:
    if not isinstance(body, list) or len(body) < 3:
        raise ProtocolError("a message is an array [type, sender, epoch, ...]")
    kind = body[0]
    cls = _BY_TYPE.get(kind) if isinstance(kind, int) and not isinstance(kind, bool) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {kind!r}")
    fast = _FAST_DECODERS.get(cls)
    if fast is not None:
        msg = fast(body)
        if msg is not None:
            return msg
    spec = _SPECS[cls]
    if len(body) != 3 + len(spec):
        raise ProtocolError(f"{cls.__name__} takes {len(spec)} fields, got {len(body) - 3}")
    kwargs = {
        name: check(v) for name, check, v in zip(_FIELD_NAMES[cls], spec, body[3:], strict=True)
    }
    return cls(sender=_id(body[1]), epoch=_nat(body[2]), **kwargs)


# ---------------------------------------------------------------- hot paths
#
# The messages of every write (Write, ChangeMsg, Result, Ack, Heartbeat), each
# with an encoder and a decoder of its own: one list for msgpack to pack, and
# inline checks of the usual shape, in place of a check function per field
# and a dict of fields per message. The frames are byte for byte the generic
# path's; a body of any other shape goes through the generic checks, which
# name the fault.


# A frozen dataclass's __init__ sets each field through object.__setattr__:
# about 2 µs for a Result, twice what filling its slots directly costs
# (measured), for two or three objects per message of every write. The hot
# decoders fill the slots of values they have checked and typed already, so
# none of them needs the __post_init__ this skips (ops made from raw tuples).

#: A dataclass instance with its slots empty, for the code below to fill.
_blank: Callable[[type[Any]], Any] = object.__new__


def _slot_setters(cls: type[Any], *names: str) -> tuple[Callable[[Any, Any], None], ...]:
    """The slot setters of *cls* for all its fields, in the order *names* gives."""
    if sorted(names) != sorted(f.name for f in fields(cls)):
        raise TypeError(f"{cls.__name__}: every field once, got {names}")
    return tuple(getattr(cls, name).__set__ for name in names)


_CHANGE_SLOTS = _slot_setters(
    Change, "seq", "epoch", "origin", "writer", "req", "acked_upto", "status", "detail", "ops"
)
_WRITE_SLOTS = _slot_setters(Write, "sender", "epoch", "req", "acked_upto", "ops", "conds")
_RESULT_SLOTS = _slot_setters(Result, "sender", "epoch", "req", "status", "detail", "seq")
_CHANGE_MSG_SLOTS = _slot_setters(ChangeMsg, "sender", "epoch", "change", "ack", "backed")
_ACK_SLOTS = _slot_setters(Ack, "sender", "epoch", "seq")
_HEARTBEAT_SLOTS = _slot_setters(Heartbeat, "sender", "epoch", "seq", "backed")


def _new_write(  # noqa: PLR0917 (the fields, in wire order)
    sender: str, epoch: int, req: int, acked: int, ops: tuple[Op, ...], conds: tuple[Cond, ...]
) -> Write:
    m, s = _blank(Write), _WRITE_SLOTS
    s[0](m, sender), s[1](m, epoch), s[2](m, req), s[3](m, acked), s[4](m, ops), s[5](m, conds)
    return m  # type: ignore[no-any-return]


def _new_result(  # noqa: PLR0917 (the fields, in wire order)
    sender: str, epoch: int, req: int, status: Status, detail: Any, seq: int
) -> Result:
    m, s = _blank(Result), _RESULT_SLOTS
    s[0](m, sender), s[1](m, epoch), s[2](m, req), s[3](m, status), s[4](m, detail), s[5](m, seq)
    return m  # type: ignore[no-any-return]


def _new_change_msg(sender: str, epoch: int, change: Change, ack: bool, backed: bool) -> ChangeMsg:
    m, s = _blank(ChangeMsg), _CHANGE_MSG_SLOTS
    s[0](m, sender), s[1](m, epoch), s[2](m, change), s[3](m, ack), s[4](m, backed)
    return m  # type: ignore[no-any-return]


def _wire_ops(ops: tuple[Op, ...]) -> list[Any]:
    return [op if type(op) not in _OBJECT_OPS else _op_to_wire(op) for op in ops]


def _write_body(m: Any) -> list[Any]:
    return [Write.TYPE, m.sender, m.epoch, m.req, m.acked_upto, _wire_ops(m.ops), list(m.conds)]


def _result_body(m: Any) -> list[Any]:
    return [Result.TYPE, m.sender, m.epoch, m.req, m.status, m.detail, m.seq]


def _change_body(m: Any) -> list[Any]:
    return [ChangeMsg.TYPE, m.sender, m.epoch, m.change.to_wire(), m.ack, m.backed]


def _seq_body(m: Any) -> list[Any]:
    return [m.TYPE, m.sender, m.epoch, m.seq]


def _heartbeat_body(m: Any) -> list[Any]:
    return [Heartbeat.TYPE, m.sender, m.epoch, m.seq, m.backed]


_FAST_ENCODERS: dict[type[Message], Callable[[Any], list[Any]]] = {
    Write: _write_body,
    Result: _result_body,
    ChangeMsg: _change_body,
    Ack: _seq_body,
    Heartbeat: _heartbeat_body,
}


def _plain(sender: Any, epoch: Any) -> bool:
    """A sender id and an epoch as every message has them."""
    return (
        type(sender) is str
        and len(sender) <= MAX_ID_CHARS
        and type(epoch) is int
        and 0 <= epoch < MAX_COUNTER
    )


def _nats(a: Any, b: Any) -> bool:
    return type(a) is int and type(b) is int and 0 <= a < MAX_COUNTER and 0 <= b < MAX_COUNTER


def _write_fast(body: list[Any]) -> Write | None:
    if len(body) != 7:
        return None
    _, sender, epoch, req, acked, ops, conds = body
    if not (_plain(sender, epoch) and _nats(req, acked)):
        return None
    if type(ops) is not list or type(conds) is not list:
        return None
    ops = tuple([_op(op) for op in ops])
    return _new_write(sender, epoch, req, acked, ops, tuple([_cond(c) for c in conds]))


def _result_fast(body: list[Any]) -> Result | None:
    if len(body) != 7:
        return None
    _, sender, epoch, req, status, detail, seq = body
    if not (_plain(sender, epoch) and _nats(req, seq)):
        return None
    known = _STATUSES.get(status) if type(status) is str else None
    if known is None:
        return None
    return _new_result(sender, epoch, req, known, None if detail is None else _detail(detail), seq)


def _change_fast(body: list[Any]) -> ChangeMsg | None:
    if len(body) != 6:
        return None
    _, sender, epoch, change, ack, backed = body
    if not _plain(sender, epoch) or type(ack) is not bool or type(backed) is not bool:
        return None
    return _new_change_msg(sender, epoch, Change.from_wire(change), ack, backed)


def _ack_fast(body: list[Any]) -> Ack | None:
    if len(body) != 4:
        return None
    _, sender, epoch, seq = body
    if not (_plain(sender, epoch) and type(seq) is int and 0 <= seq < MAX_COUNTER):
        return None
    m, slots = _blank(Ack), _ACK_SLOTS
    slots[0](m, sender), slots[1](m, epoch), slots[2](m, seq)
    return m  # type: ignore[no-any-return]


def _heartbeat_fast(body: list[Any]) -> Heartbeat | None:
    if len(body) != 5:
        return None
    _, sender, epoch, seq, backed = body
    if not (_plain(sender, epoch) and type(seq) is int and 0 <= seq < MAX_COUNTER):
        return None
    if type(backed) is not list or len(backed) != 3:
        return None
    b_seq, b_epoch, b_origin = backed
    if not (_plain(b_origin, b_epoch) and type(b_seq) is int and 0 <= b_seq < MAX_COUNTER):
        return None
    m, slots = _blank(Heartbeat), _HEARTBEAT_SLOTS
    (
        slots[0](m, sender),
        slots[1](m, epoch),
        slots[2](m, seq),
        slots[3](m, (b_seq, b_epoch, b_origin)),
    )
    return m  # type: ignore[no-any-return]


_FAST_DECODERS: dict[type[Message], Callable[[list[Any]], Message | None]] = {
    Write: _write_fast,
    Result: _result_fast,
    ChangeMsg: _change_fast,
    Ack: _ack_fast,
    Heartbeat: _heartbeat_fast,
}
