"""A guided tour of p2pstate: three peers share a dict, then the host crashes.

    python demos/tour.py          # paced, for reading along
    python demos/tour.py --fast   # no pauses

The same as ``p2pstate demo``: the tour lives in the package (p2pstate/_demo.py)
so that an installed p2pstate can run it too. It starts three peers, alice, bob
and carol, each in its own process on this machine, shows who hosts, writes and
reads a few values, kills the host with SIGKILL and shows the next peer taking
over with every value intact. Everything stays on 127.0.0.1 unless
P2PSTATE_INTERFACES says otherwise.
"""

from __future__ import annotations

import sys

from p2pstate._demo import main

if __name__ == "__main__":
    sys.exit(main())
