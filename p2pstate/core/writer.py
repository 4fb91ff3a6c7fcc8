"""The writer's side of exactly-once: numbered requests, kept until the host's
result arrives, resent in order to whichever host comes next."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .ops import Cond, Op
from .status import Status

__all__ = ["Outcome", "Request", "Writer"]


@dataclass(frozen=True, slots=True)
class Request:
    req: int
    ops: tuple[Op, ...]
    conds: tuple[Cond, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """The host's answer to one request. ``status`` is a :class:`.status.Status`
    (a str: "ok", "conflict", "missing", ...); ``detail`` says more for the
    ones that are not ok."""

    req: int
    status: Status
    detail: Any
    seq: int


class Writer:
    def __init__(self) -> None:
        self.next_req = 1
        self.pending: dict[int, Request] = {}
        # Results that arrived before the change they refer to was applied here:
        # held back so a write returns only once its effect is readable locally.
        self.held: dict[int, Outcome] = {}
        self.done_reqs: set[int] = set()
        self.acked_upto = 0

    def new(self, ops: tuple[Op, ...], conds: tuple[Cond, ...]) -> Request:
        request = Request(self.next_req, ops, conds)
        self.next_req += 1
        self.pending[request.req] = request
        return request

    def unacked(self) -> list[Request]:
        return [self.pending[r] for r in sorted(self.pending)]

    def result(self, outcome: Outcome, applied_seq: int) -> list[Outcome]:
        """Record the host's result; return the outcomes now complete."""
        if outcome.req not in self.pending:
            return []  # a duplicate answer (resent request)
        self.held[outcome.req] = outcome
        return self.release(applied_seq)

    def release(self, applied_seq: int) -> list[Outcome]:
        ready = [o for o in self.held.values() if o.seq <= applied_seq]
        for o in ready:
            del self.held[o.req]
            del self.pending[o.req]
            self.done_reqs.add(o.req)
        while self.acked_upto + 1 in self.done_reqs:
            self.acked_upto += 1
            self.done_reqs.discard(self.acked_upto)
        return sorted(ready, key=lambda o: o.req)
