"""The thread that runs the user's ``on_change`` callbacks.

The I/O thread owns the sockets and the heartbeats, so it runs no user code:
it queues each event here and goes on. One dispatcher thread per session,
started with the first callback, calls them in order; a callback may call any
API (a blocking write, ``flush()``, ``close()``), since the I/O thread is free
to serve it, and a slow one delays only the callbacks after it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable

from .events import Event

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)

Callback = Callable[[Event], None]


class Dispatcher:
    def __init__(self, name: str, limit: int) -> None:
        self._name = name
        self._limit = limit
        self._callbacks: list[Callback] = []
        self._queue: deque[Event] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        #: Counted under the lock (callback_errors on this thread,
        #: callback_events_dropped on the I/O thread); read with ``counts()``.
        self._stats: Counter[str] = Counter()

    @property
    def wanted(self) -> bool:
        """Whether any callback is registered (read by the I/O thread)."""
        return bool(self._callbacks)

    def on_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def add(self, callback: Callback) -> Callable[[], None]:
        with self._cond:
            self._callbacks.append(callback)
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

        def remove() -> None:
            with self._cond:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return remove

    def put(self, event: Event) -> None:
        """Queue *event* for the callbacks; never blocks (the I/O thread calls it)."""
        with self._cond:
            if self._stopping or not self._callbacks:
                return
            if len(self._queue) >= self._limit:
                self._queue.popleft()
                self._stats["callback_events_dropped"] += 1
                if self._stats["callback_events_dropped"] == 1:
                    log.warning("on_change callbacks are not keeping up; dropping the oldest")
            self._queue.append(event)
            self._cond.notify()

    def counts(self) -> dict[str, int]:
        with self._cond:
            return dict(self._stats)

    def stop(self, timeout: float) -> None:
        """Stop after the callback running now; events not yet delivered are
        dropped. From a callback, it does not wait for itself."""
        with self._cond:
            self._stopping = True
            self._queue.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                event = self._queue.popleft()
                callbacks = list(self._callbacks)
            for callback in callbacks:
                self._call(callback, event)

    def _call(self, callback: Callback, event: Event) -> None:
        try:
            callback(event)
        except Exception:
            with self._cond:
                self._stats["callback_errors"] += 1
                first = self._stats["callback_errors"] == 1
            log.log(
                logging.ERROR if first else logging.DEBUG,
                "an on_change callback raised; the session goes on",
                exc_info=True,
            )
