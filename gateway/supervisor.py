"""Supervision: named tasks in one TaskGroup, each restarted with jittered, capped backoff when it fails.

A task that fails is logged once as a warning; repeats of the same failure go to debug, and the recovery is
logged once.  Configuration errors jump straight to the maximum delay: retrying them fast cannot help
(`gateway.core.reconnect.ReconnectPolicy`, the one policy every retrying loop uses).  Cancelling one attempt
(`kill`) restarts that task; cancelling the supervisor stops them all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.core.errors import ConfigError, GatewayError
from gateway.core.logs import get_logger
from gateway.core.reconnect import ReconnectPolicy
from gateway.core.stats import Metrics

log = get_logger(__name__)


@dataclass
class SupervisedTask:
    name: str
    factory: Callable[[], Awaitable[None]]
    policy: ReconnectPolicy
    restarts: int = 0
    attempt: asyncio.Task[None] | None = None
    last_error: str | None = None
    running_since: float | None = None


class Supervisor:
    """Starts and restarts named tasks inside a caller-owned TaskGroup."""

    def __init__(
        self, group: asyncio.TaskGroup, metrics: Metrics, *, initial_s: float = 0.5, max_s: float = 30.0
    ) -> None:
        self._group = group
        self._metrics = metrics
        self._initial = initial_s
        self._max = max_s
        self.tasks: dict[str, SupervisedTask] = {}
        self._wrappers: dict[str, asyncio.Task[None]] = {}

    def health_reporter(self, name: str) -> Callable[[], None]:
        """The callback a supervised task is given to say it is doing its job (e.g. a driver connected and
        streaming): it resets the task's backoff and logs the recovery once.

        Health is a positive signal, never elapsed time: a device that is out of range fails its connect every
        time, and its backoff must keep growing.
        """

        def healthy() -> None:
            task = self.tasks.get(name)
            if task is not None and task.policy.succeeded():
                log.info("task recovered", task=task.name, restarts=task.restarts)

        return healthy

    def start(self, name: str, factory: Callable[[], Awaitable[None]]) -> SupervisedTask:
        supervised = SupervisedTask(name, factory, ReconnectPolicy(self._initial, self._max))
        self.tasks[name] = supervised
        self._wrappers[name] = self._group.create_task(self._supervise(supervised), name=f"supervise:{name}")
        return supervised

    async def stop(self, exclude: set[str] | frozenset[str] = frozenset()) -> None:
        """Cancel the supervised tasks (all but `exclude`) and wait until each has finished its cleanup."""
        stopping = [w for name, w in self._wrappers.items() if name not in exclude]
        for wrapper in stopping:
            wrapper.cancel()
        await asyncio.gather(*stopping, return_exceptions=True)

    def kill(self, name: str) -> None:
        """Cancel the current attempt of a task; the supervisor restarts it as after a failure."""
        attempt = self.tasks[name].attempt
        if attempt is not None:
            attempt.cancel()

    async def _supervise(self, task: SupervisedTask) -> None:
        me = asyncio.current_task()
        if me is None:  # pragma: no cover - always called from a task
            raise RuntimeError("supervisor must run in a task")
        while True:
            attempt: asyncio.Task[None] = asyncio.get_running_loop().create_task(_await(task.factory), name=task.name)
            task.attempt = attempt
            task.running_since = time.monotonic()
            error: BaseException | None = None
            try:
                await attempt
            except asyncio.CancelledError:
                if me.cancelling():
                    raise
                error = None  # killed on purpose: restart
                task.last_error = "killed"
            except Exception as err:  # noqa: BLE001 - a supervisor's job is to survive any task failure
                error = err
                task.last_error = type(err).__name__
            finally:
                task.running_since = None
            task.restarts += 1
            self._metrics.restarts[task.name] += 1
            delay = task.policy.failed(hopeless=isinstance(error, ConfigError))  # retrying cannot fix a config
            where: dict[str, Any] = {"task": task.name, "delay_s": round(delay, 2)}
            if isinstance(error, GatewayError):
                fields = error.log_fields(**where)
            else:
                fields = {**where, "error": task.last_error or "returned"}
            if task.policy.first_failure:
                log.warning("task failed; restarting", **fields)
            else:
                log.debug("task failed again", attempt=task.policy.failures, **fields)
            await asyncio.sleep(delay)


async def _await(factory: Callable[[], Awaitable[None]]) -> None:
    await factory()
