"""Named, owned tasks that restart with backoff when they fail.

Every long-running loop in shopfloor runs under a :class:`Supervisor`: it has a name, an
owner, and a restart policy. A crash is logged once with its traceback and the loop comes
back after a backoff delay; stopping cancels the loops and waits for them, with a timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

from shopfloor.runtime.backoff import Backoff

logger = logging.getLogger(__name__)

TaskFactory = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class TaskState:
    """What the supervisor knows about one named task."""

    name: str
    restarts: int = 0
    last_error: str | None = None
    running: bool = False
    backoff: Backoff = field(default_factory=Backoff)


class Supervisor:
    """Owner of named background loops.

    Use as ``async with Supervisor("edge") as sup: sup.start("poll", loop)``. Leaving the
    block stops every task (see :meth:`stop`).
    """

    def __init__(self, name: str, *, stop_timeout_s: float = 10.0) -> None:
        self.name = name
        self.stop_timeout_s = stop_timeout_s
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.states: dict[str, TaskState] = {}
        self._stopping = False

    def start(
        self,
        name: str,
        factory: TaskFactory,
        *,
        restart: bool = True,
        backoff: Backoff | None = None,
    ) -> None:
        """Run ``factory()`` as the task ``name``; restart it after a crash if ``restart``."""
        if name in self._tasks:
            raise ValueError(f"task {name!r} already runs under {self.name}")
        state = TaskState(name=name, backoff=backoff or Backoff())
        self.states[name] = state
        self._tasks[name] = asyncio.create_task(
            self._run(state, factory, restart=restart), name=f"{self.name}/{name}"
        )

    async def _run(self, state: TaskState, factory: TaskFactory, *, restart: bool) -> None:
        while not self._stopping:
            state.running = True
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the supervisor is the one place that catches all
                state.restarts += 1
                state.last_error = f"{type(err).__name__}: {err}"
                logger.exception("task %s/%s failed", self.name, state.name)
                if not restart:
                    return
                delay = state.backoff.next_delay()
                logger.info("task %s/%s restarts in %.1f s", self.name, state.name, delay)
                state.running = False
                await asyncio.sleep(delay)
                continue
            finally:
                state.running = False
            return

    async def stop(self) -> None:
        """Cancel every task and wait for them (at most ``stop_timeout_s``)."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self.stop_timeout_s)
            for task in pending:
                logger.error(
                    "task %s did not stop within %.0f s", task.get_name(), self.stop_timeout_s
                )
        self._tasks.clear()

    async def wait(self) -> None:
        """Wait until every task has ended on its own."""
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def __aenter__(self) -> Supervisor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
