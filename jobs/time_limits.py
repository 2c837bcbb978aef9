"""Hard time limits on pools that cannot enforce them (threads, solo).

Celery's prefork pool kills a child that runs past its hard limit; the thread and solo pools
have no way to and ignore limits. There the runner arms a timer that raises JobTimeLimitExceeded
inside the job's own thread (CPython's PyThreadState_SetAsyncExc). The exception arrives at the
thread's next Python bytecode, so a job blocked in one long C call (a socket read without a
timeout) is interrupted only when that call returns: every catalogue job type keeps its blocking
calls short (demo.sleep sleeps a second at a time, outbound HTTP has timeouts).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class JobTimeLimitExceeded(Exception):
    """The job ran past its hard time limit; it is not retried (as a prefork kill is not)."""


def _raise_in(thread_id: int, exc_type: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type) if exc_type else None
    )


@contextmanager
def time_limit_enforced(seconds: float) -> Iterator[None]:
    """Raise JobTimeLimitExceeded in this thread if the block runs longer than `seconds`."""
    target = threading.get_ident()
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def expire() -> None:
        with lock:
            if not state["done"]:
                state["fired"] = True
                _raise_in(target, JobTimeLimitExceeded)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            state["done"] = True
            if state["fired"]:
                # Fired as the block ended: take back an exception not yet delivered, so that it
                # cannot surface later in Celery's own code.
                _raise_in(target, None)
        timer.cancel()
