"""Fixtures for tests against real protocol stacks: a throwaway Mosquitto broker.

Without the ``mosquitto`` binary the tests that need it are skipped, except under
``CI=true``, where a missing broker is a failure: CI must run them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shopfloor.testing.mosquitto import Mosquitto, MosquittoNotFound


def _start(workdir: Path, **kwargs: object) -> Mosquitto:
    try:
        broker = Mosquitto(workdir, **kwargs)  # type: ignore[arg-type]
    except MosquittoNotFound as err:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{err}; CI must run the broker tests")
        pytest.skip(f"{err}")
    broker.start()
    return broker


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
