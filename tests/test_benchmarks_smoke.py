"""The benchmark harness runs to the end and reports every row (timings are
not asserted: they belong to BENCHMARKS.md, not to a test)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load_run_module(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.syspath_prepend(str(BENCH))  # run.py imports its neighbour harness.py
    spec = importlib.util.spec_from_file_location("benchmarks_run", BENCH / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look it up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quick_run_reports_every_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    titles = load_run_module(monkeypatch).TITLES  # type: ignore[attr-defined]
    done = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--quick", "--no-write"],
        capture_output=True,
        text=True,
        timeout=200,
        env=dict(os.environ, P2PSTATE_INTERFACES="127.0.0.1"),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout
    for title in titles:
        assert any(line.startswith(title) for line in table.splitlines()), title
    assert "FAILED" not in table
