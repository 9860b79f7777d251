"""Fixtures for tests against real protocol stacks: a throwaway Mosquitto broker.

Without the ``mosquitto`` binary the tests that need it are skipped, except under
``CI=true``, where a missing broker is a failure: CI must run them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shopfloor.testing.mosquitto import Mosquitto, broker_for_tests


def _start(workdir: Path, **kwargs: Any) -> Mosquitto:
    return broker_for_tests(lambda: Mosquitto(workdir, **kwargs))


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private anonymous broker on a free port of 127.0.0.1, stopped after the test."""
    broker = _start(tmp_path / "mosquitto")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def make_mosquitto(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """A factory of private brokers (TLS, users …), all stopped after the test.

    Call it with :class:`~shopfloor.testing.mosquitto.Mosquitto`'s keyword arguments.
    """
    started: list[Mosquitto] = []

    def make(**kwargs: object) -> Mosquitto:
        broker = _start(tmp_path / f"mosquitto-{len(started)}", **kwargs)
        started.append(broker)
        return broker

    try:
        yield make
    finally:
        for broker in started:
            broker.stop()
