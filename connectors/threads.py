"""The bounded thread pool that blocking SDK calls (kubernetes, boto3, google-cloud-compute) run in.

Connectors never call a sync SDK on the event loop: they hand the call to `Blocking.run`,
which runs it on a bounded pool so a slow provider cannot starve the loop or spawn
unbounded threads. There is no process-wide pool: whoever builds connectors owns one (the
service opens it in a cleanup context, sized by `Settings.sdk_threads`; `broker check` and
tests use `with Blocking(n) as pool:`), passes it to each connector, and shuts it down once
they are closed. After `shutdown` the pool refuses new work.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import ParamSpec, Self, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_THREADS = 8


class Blocking:
    """Runs blocking callables on a bounded pool and awaits their result."""

    def __init__(self, max_workers: int = DEFAULT_THREADS) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sdk")
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` on the pool; raises RuntimeError once the pool is shut down."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def shutdown(self) -> None:
        """Refuse new work and cancel queued calls; running ones finish on their own threads."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()
