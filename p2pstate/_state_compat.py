"""SharedState's compare-and-swap API: AppState's ``update(key, oldhash,
new)``, ``apply_op`` and ``get_if_changed``, and transactions."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, overload

from ._state_base import StateBase, raise_for, read_entry
from .codec import check_key, check_text, fresh_copy, hash_value
from .core.ops import Delete, IfAbsent, IfHash, Set
from .core.status import Status
from .errors import DataUnchangedError, P2PStateError, UpdateFailedError

if TYPE_CHECKING:
    from _typeshed import SupportsKeysAndGetItem

__all__ = ["CompareAndSwapAPI", "Transaction"]


class CompareAndSwapAPI(StateBase):
    """AppState's compare-and-swap calls, and transactions."""

    def get_if_changed(self, key: str, oldhash: str) -> Any:
        """The value of *key*, or DataUnchangedError if it still hashes to *oldhash*."""
        value = self._value(key)
        if not isinstance(oldhash, str):
            raise TypeError("oldhash must be the str that p2pstate.hash_value returned")
        if hash_value(value) == oldhash:
            raise DataUnchangedError(f"{key!r} is unchanged")
        return value

    def transaction(self) -> Transaction:
        """``with s.transaction() as t:`` reads through ``t`` from this
        replica, buffers writes, and commits them as one change when the block
        ends, on the condition that every key it read is unchanged at the host
        (compare-and-swap on all of them). A conflict raises UpdateFailedError
        and writes nothing; an exception in the block writes nothing."""
        return Transaction(self)

    @overload
    def update(self, key: str, oldhash: str, new: Any, /) -> None: ...

    @overload
    def update(self, other: SupportsKeysAndGetItem[str, Any], /, **kwargs: Any) -> None: ...

    @overload
    def update(self, other: Iterable[tuple[str, Any]], /, **kwargs: Any) -> None: ...

    @overload
    def update(self, /, **kwargs: Any) -> None: ...

    def update(self, /, *args: Any, **kwargs: Any) -> None:
        """``update(mapping)`` / ``update(**kw)``: write several keys as one
        atomic change. ``update(key, oldhash, new)``: compare-and-swap: write
        *new* only if the host's value of *key* still hashes to *oldhash*,
        else UpdateFailedError; KeyError if *key* does not exist."""
        if len(args) == 3 and not kwargs:
            key, oldhash, new = args
            key = check_key(key)
            if not isinstance(oldhash, str):
                raise TypeError("oldhash must be the str that p2pstate.hash_value returned")
            oldhash = check_text("oldhash", oldhash)
            self._write((Set(key, self._checked(new)),), (IfHash(key, oldhash),), key=key)
            return
        if len(args) > 1:
            raise TypeError(f"update expected 1 or 3 positional arguments, got {len(args)}")
        items = dict(*args, **kwargs)
        if not items:
            return
        ops = tuple(Set(check_key(k), self._checked(v)) for k, v in items.items())
        self._write(ops, ())

    def apply_op(
        self,
        key: str,
        fn: Callable[[Any], Any],
        create: bool = False,
        defaultvalue: Any = None,
    ) -> Any:
        """Read *key*, compute ``fn(value)``, write it back if nobody wrote in
        between, else retry with the newer value. Returns the value written.

        A missing key raises KeyError, or with ``create=True`` is set to
        *defaultvalue* (``fn`` is not applied then)."""
        key = check_key(key)
        if not callable(fn):
            raise TypeError(f"fn must be a callable taking the value, not {type(fn).__name__}")
        entry = self._entry(key)
        if entry is None:
            if not create:
                raise KeyError(key)
            default = self._checked(defaultvalue)
            outcome = self._send((Set(key, default),), (IfAbsent(key),))
            if outcome.status == Status.OK:
                return fresh_copy(default)
            current = self._current_from(outcome, key)
        else:
            current = entry.value
        while True:
            new = self._checked(fn(fresh_copy(current)))
            outcome = self._send((Set(key, new),), (IfHash(key, hash_value(current)),))
            if outcome.status == Status.OK:
                return fresh_copy(new)
            current = self._current_from(outcome, key)


_ABSENT: Any = object()
_DELETED: Any = object()


class Transaction:
    """Reads from a snapshot, buffered writes, one atomic commit. Make one
    with :meth:`SharedState.transaction`; use it as a context manager."""

    def __init__(self, state: StateBase) -> None:
        self._state = state
        self._read: dict[str, str | None] = {}  # key -> hash read, None: was absent
        self._writes: dict[str, Any] = {}
        self._done = False

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _ABSENT)
        if value is _ABSENT:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        key = check_key(key)
        if key in self._writes:
            written = self._writes[key]
            return default if written is _DELETED else fresh_copy(written)
        entry = self._state._entry(key)
        if key not in self._read:
            self._read[key] = None if entry is None else hash_value(entry.value)
        if entry is None:
            return default
        return read_entry(entry)

    def __contains__(self, key: str) -> bool:
        return self.get(key, _ABSENT) is not _ABSENT

    def __setitem__(self, key: str, value: Any) -> None:
        key = check_key(key)
        self._writes[key] = self._state._checked(value)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._writes[key] = _DELETED

    def commit(self) -> None:
        """Write everything, if nothing read has changed; UpdateFailedError if not."""
        if self._done:
            raise P2PStateError("this transaction is already finished")
        self._done = True
        if not self._writes:
            return
        ops = tuple(Delete(k) if v is _DELETED else Set(k, v) for k, v in self._writes.items())
        conds = tuple(IfAbsent(k) if h is None else IfHash(k, h) for k, h in self._read.items())
        outcome = self._state._send(ops, conds)
        if outcome.status in (Status.CONFLICT, Status.MISSING):
            raise UpdateFailedError("a key this transaction read changed before it committed")
        if outcome.status != Status.OK:
            raise_for(outcome, None)

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self._done = True  # an error in the block: write nothing
