"""Lease owners (alarm and analytics partitions) run on a thread for a test, and a wait
for what they do (moves of partitions take seconds: poll with a deadline, no fixed sleep)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from shopfloor.server.leases import LeaseOwner

__all__ = ["running", "wait_until"]

Owner = TypeVar("Owner", bound=LeaseOwner)


@contextmanager
def running(owner: Owner, name: str) -> Iterator[Owner]:
    """``owner`` running on a thread called ``name`` for the block; stopped and joined
    after it (a thread still alive then fails the test)."""
    stop = threading.Event()
    thread = threading.Thread(target=owner.run, args=(stop,), name=name)
    thread.start()
    try:
        yield owner
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive()


def wait_until(what: str, condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Return once ``condition()`` holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.02)
