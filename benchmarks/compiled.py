"""A proposal measured, not shipped: the sans-I/O core and the codec
compiled with mypyc, against pure Python, in one sitting.

Copies ``p2pstate/`` and ``benchmarks/`` into a temporary directory, compiles
there every module of ``p2pstate/core`` but ``ops.py`` (its ops subclass
NamedTuples, which mypyc cannot compile) and ``codec.py``, then runs the same
``run.py --only`` rows alternately on this checkout (pure Python) and on the
compiled copy. Nothing is installed and this checkout is not touched: the
default install needs no compiler. Needs mypy (which has mypyc) and a C
compiler.

``messages.py`` is left out too: mypyc refuses its ``TYPE`` class variables,
set again in every subclass of a native class ("attribute 'TYPE' is
read-only").

    python benchmarks/compiled.py [--runs 3] [--only measure_baseline,...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS = "measure_baseline,measure_chain,measure_p2pstate_session"
#: Kept interpreted: see the module's docstring.
NOT_COMPILED = {"ops.py"}


def compiled_modules(tree: Path) -> list[str]:
    core = sorted(p.name for p in (tree / "p2pstate" / "core").glob("*.py"))
    return [f"p2pstate/core/{name}" for name in core if name not in NOT_COMPILED] + [
        "p2pstate/codec.py"
    ]


def build(into: Path) -> None:
    """Copy the package and the benchmarks into *into* and compile them there."""
    skip = shutil.ignore_patterns("__pycache__", "*.so", "build")
    shutil.copytree(ROOT / "p2pstate", into / "p2pstate", ignore=skip)
    shutil.copytree(ROOT / "benchmarks", into / "benchmarks", ignore=skip)
    # No pyproject.toml in the copy: setuptools would read the project's own
    # metadata; mypyc needs only the modules.
    mypyc = shutil.which("mypyc", path=str(Path(sys.executable).parent)) or "mypyc"
    started = time.monotonic()
    subprocess.run(
        [mypyc, *compiled_modules(into)],
        cwd=into,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"compiled in {time.monotonic() - started:.0f} s", flush=True)


def run_rows(tree: Path, only: str) -> None:
    """run.py's rows on *tree*: its workers import p2pstate from there."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    subprocess.run(
        [sys.executable, str(tree / "benchmarks" / "run.py"), "--only", only],
        cwd=tree,
        env=env,
        check=False,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each, alternating")
    parser.add_argument("--only", default=ROWS, help=f"run.py's --only (default {ROWS})")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="p2pstate-mypyc-") as tmp:
        copy = Path(tmp)
        build(copy)
        for i in range(args.runs):
            for label, tree in (("pure Python", ROOT), ("compiled", copy)):
                load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
                print(f"\n=== run {i + 1}: {label} (load {load})", flush=True)
                run_rows(tree, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
