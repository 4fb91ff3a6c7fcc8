"""What every part of SharedState stands on: the runtime it talks to, the
view it reads, and the one path a write takes (checked, sent, waited for,
its refusal turned into the caller's exception)."""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import msgpack

from .codec import check_key, encode, normalize
from .core.ops import Cond, Op
from .core.replica import Entry
from .core.status import Status
from .core.writer import Outcome
from .errors import (
    BannedError,
    P2PStateError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitedError,
    SessionClosedError,
    UpdateFailedError,
    ValueTooLargeError,
)

if TYPE_CHECKING:
    from ._view import View
    from .session import Runtime


__all__ = ["UNSET", "Listing", "Snapshot", "StateBase", "Unset", "raise_for", "read_entry"]


class Unset(enum.Enum):
    """A setting the caller left as it is."""

    UNSET = 0


UNSET = Unset.UNSET


class StateBase:
    """The state a SharedState's parts share: declared here, set by SharedState."""

    _rt: Runtime
    # Per thread: the keys a keys() listing handed out, still to be looked up
    # (see _entry).
    _listing: threading.local

    def _view(self) -> View:
        self._listing.current = None  # any other read ends a keys() listing
        return self._rt.view

    def _entry(self, key: str) -> Entry | None:
        check_key(key)
        listing: Listing | None = getattr(self._listing, "current", None)
        if listing is not None:
            # dict(s) and {**s} call keys() and then s[k] for each key: those
            # lookups, in that order with no other read between, read the
            # view the keys came from (a key deleted meanwhile would raise).
            entry = listing.next(key)
            if entry is not _NOT_LISTED:
                return entry
        return self._view().entries.get(key)

    def _value(self, key: str) -> Any:
        entry = self._entry(key)
        if entry is None:
            raise KeyError(key)
        return read_entry(entry)

    def _current_from(self, outcome: Outcome, key: str) -> Any:
        """The host's value after a refused compare-and-swap."""
        if outcome.status == Status.MISSING:
            raise KeyError(key)
        if outcome.status != Status.CONFLICT or not isinstance(outcome.detail, dict):
            raise_for(outcome, key)
        self._rt.count("apply_op_retries")  # a user thread: never the I/O thread's Counter
        return outcome.detail.get("value")

    def _checked(self, value: Any) -> Any:
        value = normalize(value)
        size = len(encode(value))
        limit = self._rt.options.max_value_size
        if size > limit:
            raise ValueTooLargeError(f"value is {size} bytes encoded; max_value_size is {limit}")
        return value

    def _fits(self, ops: tuple[Op, ...]) -> None:
        """Refuse a write of several values that one message cannot carry
        (each fits max_value_size, together they may not): the host would
        drop it, and it would wait in line ahead of every later write."""
        if len(ops) < 2:
            return  # one value is at most max_value_size, half a frame
        size, limit = len(encode(ops)), self._rt.options.max_frame_size // 2
        if size > limit:
            raise ValueTooLargeError(
                f"this write is {size} bytes encoded; one write travels as one message "
                f"of at most half of max_frame_size ({limit} bytes): split it"
            )

    def _send(self, ops: tuple[Op, ...], conds: tuple[Cond, ...]) -> Outcome:
        self._fits(ops)
        pending = self._rt.submit(ops, conds, wait=True)
        assert pending is not None
        return self._rt.wait(pending, self._rt.options.write_timeout)

    def _write(
        self,
        ops: tuple[Op, ...],
        conds: tuple[Cond, ...],
        *,
        key: str | None = None,
        wait: bool = True,
    ) -> None:
        if not wait:
            self._fits(ops)
            self._rt.submit(ops, conds, wait=False)
            return
        outcome = self._send(ops, conds)
        if outcome.status != Status.OK:
            raise_for(outcome, key)


_NOT_LISTED: Any = object()


class Snapshot(Mapping[str, Any]):
    """The values of one view's entries, read-only: what items() and
    values() iterate, so each pair comes from the same moment."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[str, Entry]) -> None:
        self._entries = entries

    def __getitem__(self, key: str) -> Any:
        return read_entry(self._entries[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class Listing(Snapshot):
    """The keys of one view, as keys() hands them out, and the lookups of
    those keys in that order that may follow (what dict(s) does)."""

    __slots__ = ("_next", "_order")

    def __init__(self, entries: Mapping[str, Entry]) -> None:
        super().__init__(entries)
        self._order = tuple(entries)
        self._next = 0

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def next(self, key: str) -> Entry | None:
        """The entry of *key* in this view if it is the next key listed,
        else _NOT_LISTED."""
        if self._next >= len(self._order) or self._order[self._next] != key:
            return _NOT_LISTED  # type: ignore[no-any-return]
        self._next += 1
        return self._entries.get(key)


def read_entry(entry: Entry) -> Any:
    if entry.packed is not None:
        return msgpack.unpackb(entry.packed, raw=False)
    return entry.value


def raise_for(outcome: Outcome, key: str | None) -> Any:
    status, detail = outcome.status, outcome.detail
    if status == Status.NO_PEER:
        raise KeyError(f"no peer {key!r} in this session")
    if status == Status.CONFLICT:
        raise UpdateFailedError(f"{key!r} changed since you read it")
    if status == Status.MISSING:
        raise KeyError(detail.get("key", key) if isinstance(detail, dict) else key)
    if status == Status.TOO_LARGE:
        raise ValueTooLargeError(f"the host refused a value for {key!r} as too large: {detail}")
    if status == Status.DENIED:
        _raise_denied(detail, key)
    if status == Status.RATE_LIMITED:
        raise RateLimitedError(
            f"writing faster than the session allows ({detail['rate']:g} writes/s after a "
            f"burst of {detail['burst']}); the host refused the write"
        )
    if status == Status.QUOTA:
        raise QuotaExceededError(
            f"the write would take the session past {detail['limit']} ({detail['max']})"
        )
    if status == Status.CLOSED:
        raise SessionClosedError("the shared state is closed")
    if status == Status.UNSENDABLE:
        raise ValueError(f"this write cannot be encoded, so it was never sent: {detail}")
    raise P2PStateError(f"the host refused the write: {status}: {detail}")


def _raise_denied(detail: Any, key: str | None) -> None:
    reason = detail.get("reason") if isinstance(detail, dict) else None
    if reason == "banned":
        raise BannedError("this peer's identity is banned from the session")
    if reason == "not_authorized":
        raise PermissionDeniedError("this peer is no longer authorized in the session (readmode)")
    if reason == "writemode":
        mode = detail.get("mode")
        raise PermissionDeniedError(
            f"the session's writemode is {mode}: "
            + (
                "only the admin may write"
                if mode == "admin_only"
                else "only the admin and authorized identities may write"
            )
        )
    if reason == "admin":
        op = detail.get("op")
        raise PermissionDeniedError(f"only the session's admin may make a {op!r} change")
    raise PermissionDeniedError(f"the host refused the write to {key!r}: {detail}")
