"""Wire messages that several test folders send by hand (tests/ is on the
import path through its conftest.py, whichever folder runs)."""

from __future__ import annotations

from p2pstate.messages import Hello


def first_hello(
    sender: str, *, epoch: int = 0, name: str = "", endpoints: tuple[str, ...] = ()
) -> Hello:
    """A copy's first Hello: no profile, no session yet, nothing to resume."""
    return Hello(
        sender=sender,
        epoch=epoch,
        name=name,
        endpoints=endpoints,
        profile={},
        session_id=None,
        resume_seq=0,
        resume_epoch=0,
        resume_origin="",
        prev_host=None,
        suspects=(),
    )
