"""Test-wide settings: every socket and every mDNS packet stays on loopback,
a test that leaves a thread running fails, and the suite's long pieces start
first on the two pytest-xdist workers (pyproject.toml ``addopts``)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import settings

# No property test is timed: hypothesis's 200 ms deadline per example failed
# one on a loaded CI machine, and speed is measured in benchmarks/, never here.
settings.register_profile("p2pstate", deadline=None)
settings.load_profile("p2pstate")

# Set before anything imports p2pstate: join() with no interfaces reads it.
os.environ["P2PSTATE_INTERFACES"] = "127.0.0.1"
LOOPBACK = ["127.0.0.1"]
# Every identity a test makes, in this process or in the processes it starts
# (they inherit the environment, also where a module copied it at import),
# lives here: a test run never writes to the real config directory.
IDENTITY_HOME = tempfile.mkdtemp(prefix="p2pstate-test-home-")
os.environ["P2PSTATE_HOME"] = IDENTITY_HOME

# A shell ignores SIGINT for a command it starts in the background
# (`bash .ci/run &`), and an ignored signal stays ignored in every process
# started after: the copies the tests stop with Ctrl-C would never see it.
# A handler is reset to the default in a child, so install Python's own.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

#: Short timings for tests that join real sessions.
FAST = {"discovery_window": 0.3}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked slow first, then the namespace tests. xdist hands out work
    in collection order: a minute-long test collected last would leave the
    other worker idle while it runs. Up front, all of them land in the first
    worker's first share (tests/lan/conftest.py runs the namespace tests one
    at a time in any case), and are done before the other worker reaches the
    tests marked alone (tests/net), which would wait for them."""

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("slow"):
            return 0
        return 1 if item.get_closest_marker("netns") else 2

    items.sort(key=rank)  # stable: within a rank, pytest's own order


@pytest.fixture(autouse=True)
def alone_if_marked(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Under pytest-xdist, a test marked ``alone`` (it asserts a wall-clock bound
    on real processes) or ``netns`` runs while the other worker waits between two tests.
    Every other test holds a shared lock; ``alone`` takes it exclusively. The
    turnstile stops a stream of shared takers from starving an exclusive one."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield  # one process: every test runs alone
        return
    import fcntl  # Unix only; xdist runs here on Linux CI

    run_dir = tmp_path_factory.getbasetemp().parent  # shared by this run's workers only
    # A namespace test times real faults against host_timeout: with the other
    # worker busy beside it, a 1.5 s cut row undid writes in one run of two.
    node = request.node
    alone = (
        node.get_closest_marker("alone") is not None or node.get_closest_marker("netns") is not None
    )
    with (run_dir / "turnstile.lock").open("a") as gate, (run_dir / "alone.lock").open("a") as f:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(f, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield  # both locks go when the files close


@pytest.fixture(scope="session", autouse=True)
def identity_home() -> Iterator[None]:
    """Remove the test run's identity directory (see IDENTITY_HOME) at the end."""
    yield
    shutil.rmtree(IDENTITY_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    """Fail a test that leaves a thread of its own running, as zeroconf's tests do."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 3.0
    while True:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not extra, f"threads left running: {[t.name for t in extra]}"
