"""The I/O thread's loop: a session with nothing to do wakes only for its
timers and the frames it receives (its CPU then is near zero), counted in
``stats["io_passes"]``."""

from __future__ import annotations

import time

from netkit import Join, eventually

from p2pstate import Options


def test_an_idle_session_wakes_only_for_its_timers_and_frames(join: Join) -> None:
    host = join()
    peer = join()
    eventually(lambda: len(host.peers) == 2 and len(peer.peers) == 2)
    cfg = Options().core_config()
    # The core's timers are due every half heartbeat (or hello retry) at most.
    timer_wakes_per_s = 2 / min(cfg.heartbeat_interval, cfg.hello_retry)
    for s in (host, peer):
        before = s.stats
        start = time.monotonic()
        time.sleep(1.0)
        after = s.stats
        seconds = time.monotonic() - start
        passes = after["io_passes"] - before["io_passes"]
        frames = after.get("frames", 0) - before.get("frames", 0)
        assert frames > 0, "heartbeats flow while idle"
        # Each pass is a due timer or a frame that arrived (a few more for
        # the reads of stats and mDNS); a wait rounded down to 0 ms would
        # spin hundreds of passes a second.
        assert passes <= timer_wakes_per_s * seconds + frames + 10, (passes, frames)
