"""Issue 17 in real processes: each fault of its table (a paused host, a pulled
cable, blips...) in a session of 7 peers in network namespaces, 4 of them
running ``apply_op`` increments on one counter. After the fault heals and the
session settles (one host, equal states), the counter on every survivor must
equal the increments acknowledged to the writers, no call may have raised,
and the writes reported rolled back must be exactly those undone.

Seven peers, as in the issue: the fix reasons about a majority of the
membership, and with seven a cut-off writer or a paused host is plainly a
minority (1 of 7), as are host and successor paused together (2 of 7); with
three, one peer cut off is still a third of the session. The write phases are
short (20 acknowledged increments per writer before the fault, 20 more after
it) to keep the module within about two minutes here.
The scenarios live in ``faultrows.py``; ``benchmarks/faults.py`` runs them
many times.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from faultrows import ROWS, Row, run_row
from netlab import Lan, unavailable_reason

_REASON = unavailable_reason()
if _REASON is not None:
    pytest.skip(_REASON, allow_module_level=True)

pytestmark = pytest.mark.netns


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_fault_keeps_every_acknowledged_increment(
    row: Row, make_lan: Callable[[int], Lan], app_name: str
) -> None:
    outcome = run_row(make_lan(row.peers), row, app_name)
    print(outcome.summary())
    failures = outcome.failures()
    assert not failures, f"{row.what}:\n" + "\n".join(failures) + "\n" + outcome.detail
    assert outcome.acknowledged > 0
