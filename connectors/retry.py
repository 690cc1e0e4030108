"""Retry with exponential backoff and full jitter, for throttled or flaky provider calls.

Only `TransientError` is retried; `AuthFailed` and every other error surface at once
(retrying a rejected credential only locks the account). Sleep and randomness are
injected so tests run in no wall time.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from connectors.errors import TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    attempts: int = 5
    base_s: float = 0.25
    cap_s: float = 20.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2**attempt)]."""
        return rng.uniform(0.0, min(self.cap_s, self.base_s * 2**attempt))


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff,
    what: str,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> T:
    """Await `call()`, retrying on `TransientError` up to `backoff.attempts` times in all."""
    rng = rng or random.Random()
    for attempt in range(backoff.attempts):
        try:
            return await call()
        except TransientError as exc:
            if attempt + 1 >= backoff.attempts:
                raise
            delay = backoff.delay(attempt, rng)
            log.info("%s: %s; retry %d in %.2fs", what, exc, attempt + 1, delay)
            await sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
