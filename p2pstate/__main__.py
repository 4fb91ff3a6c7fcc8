"""``python -m p2pstate``: the same as the ``p2pstate`` command."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
