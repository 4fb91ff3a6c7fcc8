"""The guarantees as properties over seeded fault schedules (see chaos.py for
what a schedule does and which faults each guarantee covers).

Every schedule is reproducible from its seed: a failure prints the seed, the
faults and the tail of the simulator's trace; rerun it alone with::

    PYTHONPATH=. python -c "import sys; sys.path.insert(0, 'tests/core'); \\
        from chaos import run_schedule, Kind; run_schedule(SEED, Kind.SINGLE)"

``P2PSTATE_SCHEDULES=N`` multiplies the number of schedules (default 1), for a
longer hunt; the ``slow`` variants run bigger, longer schedules.
"""

from __future__ import annotations

import os

import pytest
from chaos import Kind, run_schedule

FACTOR = int(os.environ.get("P2PSTATE_SCHEDULES", "1"))

# Default run: 1,100 schedules in all.
SINGLE = 700 * FACTOR
DOUBLE = 150 * FACTOR
PARTITION = 250 * FACTOR


@pytest.mark.parametrize("seed", range(SINGLE))
def test_single_faults_lose_nothing(seed: int) -> None:
    """Guarantees 1-4 under crashes of the host, its successor or a peer,
    graceful leaves, restarts and delays, one fault at a time."""
    run_schedule(seed, Kind.SINGLE)


@pytest.mark.parametrize("seed", range(DOUBLE))
def test_double_crash_keeps_order_and_exactly_once(seed: int) -> None:
    """Host and successor crash together: acknowledged writes may be lost,
    but replicas agree, nothing is applied twice, one host per epoch."""
    run_schedule(100_000 + seed, Kind.DOUBLE)


@pytest.mark.parametrize("seed", range(PARTITION))
def test_partitions_merge_and_report_losses(seed: int) -> None:
    """Guarantee 6: after a split heals there is one host, one session, equal
    replicas, and every acknowledged write the merge undid was reported to
    its writer."""
    run_schedule(200_000 + seed, Kind.PARTITION)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(40 * FACTOR))
def test_single_faults_lose_nothing_long(seed: int) -> None:
    run_schedule(300_000 + seed, Kind.SINGLE, scale=4)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(30 * FACTOR))
def test_partitions_merge_and_report_losses_long(seed: int) -> None:
    run_schedule(400_000 + seed, Kind.PARTITION, scale=3)
