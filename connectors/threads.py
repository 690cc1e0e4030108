"""The bounded thread pool that blocking SDK calls (kubernetes, boto3, google-cloud-compute) run in.

Connectors never call a sync SDK on the event loop: they hand the call to `Blocking.run`,
which runs it on a small shared pool so a slow provider cannot starve the loop or spawn
unbounded threads. The pool size comes from `Settings.sdk_threads`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

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

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


_shared: dict[int, Blocking] = {}


def shared(max_workers: int = DEFAULT_THREADS) -> Blocking:
    """The process-wide pool of this size (one per size, created on first use)."""
    pool = _shared.get(max_workers)
    if pool is None:
        pool = _shared[max_workers] = Blocking(max_workers)
    return pool
