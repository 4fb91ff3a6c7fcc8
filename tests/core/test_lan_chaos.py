"""Issue 17's proof in the simulator: 1,000 seeded schedules of LAN faults
(pauses and link cuts of the host, its successor, a writer and pairs, around
``host_timeout`` and well past it, slow CPUs and restarts of an identity,
mixed with crashes, leaves and new peers).
See lanchaos.py for what each kind checks. Reproduce one failure with::

    PYTHONPATH=. python -c "import sys; sys.path.insert(0, 'tests/core'); \\
        from lanchaos import run_lan_schedule, LanKind; \\
        run_lan_schedule(SEED, LanKind.SHORT, extra=True)"

``P2PSTATE_SCHEDULES=N`` multiplies the number of schedules.
"""

from __future__ import annotations

import os

import pytest
from lanchaos import LanKind, run_lan_schedule

FACTOR = int(os.environ.get("P2PSTATE_SCHEDULES", "1"))

SHORT = 600 * FACTOR
LONG = 400 * FACTOR


@pytest.mark.parametrize("seed", range(SHORT))
def test_short_lan_faults_undo_nothing(seed: int) -> None:
    """Pauses and cuts shorter than isolation_timeout, one at a time: no
    acknowledged write undone, counters exact, no rollback reported."""
    run_lan_schedule(400_000 + seed, LanKind.SHORT, extra=True)


@pytest.mark.parametrize("seed", range(LONG))
def test_long_lan_faults_report_exactly(seed: int) -> None:
    """Also faults up to ten host_timeouts and pairs: what a merge undoes is
    exactly what is reported undone."""
    run_lan_schedule(500_000 + seed, LanKind.LONG, extra=True)
