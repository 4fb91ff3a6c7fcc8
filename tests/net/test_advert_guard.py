"""Issue 16 item 2: one member's session-info write used to stop every host.
The host now applies the API's own check to it, and nothing that goes wrong
while advertising after a message ends the I/O thread."""

from __future__ import annotations

from typing import Any

import pytest
from netkit import Join, eventually

from p2pstate.state import SharedState


def _raw_write(s: SharedState, *ops: tuple[Any, ...]) -> Any:
    """Send ops as a hostile member would: past the API's checks."""
    pending = s._rt.submit(ops, (), wait=True)
    assert pending is not None
    return s._rt.wait(pending, 5.0)


@pytest.mark.parametrize(
    "metadata",
    [
        {"k": "v" * 300},  # one TXT entry past 255 bytes
        {f"k{i}": "v" * 120 for i in range(12)},  # the record past its total
        {"map": "a", "MAP": "b"},  # TXT keys are case-insensitive
        {"a=b": "c"},  # no '=' in a TXT key
    ],
    ids=["entry", "total", "case", "equals"],
)
def test_a_members_info_write_that_cannot_be_advertised_is_refused(
    join: Join, metadata: dict[str, str]
) -> None:
    a = join()
    b = join()
    assert a.is_host and not b.is_host
    with pytest.raises(ValueError):
        b.set_session_info(metadata=metadata)  # the API's check
    outcome = _raw_write(b, ("info", {"metadata": metadata}))
    assert outcome.status == "invalid", outcome  # the host's: the same one
    b["after"] = 1
    eventually(lambda: a.get("after") == 1)
    assert a.is_host and not a._rt.stopped.is_set()
    assert "metadata" not in a.session_info or a.session_info["metadata"] != metadata


def test_an_advert_that_fails_is_dropped_and_counted_not_fatal(join: Join) -> None:
    a = join()
    b = join()

    def broken(**_: Any) -> None:
        raise OSError("mDNS is gone")  # what a failing zeroconf raises

    a._rt.discovery.update = broken  # type: ignore[method-assign]
    b.set_session_info(metadata={"map": "dust"})  # valid: the host must advertise it
    eventually(lambda: a._rt.stats["advert_errors"] >= 1)
    b["after"] = 2
    eventually(lambda: a.get("after") == 2)
    assert a.is_host and not a._rt.stopped.is_set()
    b["later"] = 3  # the failing advert is not retried on every pass
    eventually(lambda: a.get("later") == 3)
    assert a._rt.stats["advert_errors"] == 1
