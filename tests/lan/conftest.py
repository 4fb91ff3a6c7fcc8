"""Fixtures for the namespace tests: a fresh LAN of namespaces per test."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from netlab import Lan


@pytest.fixture(autouse=True)
def one_lan_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Under pytest-xdist, a namespace test waits for the one another worker
    runs: each runs seven peers whose faults last fixed times, and two at once
    on a 2-core machine starve each other's heartbeats. The lock file lives in
    this run's temporary directory, shared by its workers only."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield  # one process: the tests already run one after the other
        return
    import fcntl  # Unix only, as are network namespaces

    lock = tmp_path_factory.getbasetemp().parent / "netns.lock"
    with lock.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        yield


@pytest.fixture
def app_name() -> str:
    """A fresh app name per test, so sessions of other tests never match."""
    return f"lan-{secrets.token_hex(4)}"


@pytest.fixture
def make_lan(tmp_path: Path) -> Iterator[Callable[[int], Lan]]:
    """``make_lan(n)``: *n* peer namespaces on a bridge. At the end of the test
    every worker is stopped by its pid and every namespace deleted, pass or fail."""
    lans: list[Lan] = []

    def make(n: int) -> Lan:
        lan = Lan(n, tmp_path)
        lans.append(lan)
        return lan

    try:
        yield make
    finally:
        errors: list[str] = []
        for lan in lans:
            try:
                lan.close()
            except RuntimeError as exc:
                errors.append(str(exc))
        assert not errors, f"teardown: {errors}"
