"""A client-side token bucket, so the broker stays under a provider's published request rate.

Providers answer bursts with 429s (WattTime allows 3,000 requests per 5 minutes per user;
Electricity Maps plans have per-minute quotas), and a 429 costs a retry and a backoff. Spacing
the requests ourselves is cheaper and keeps the retries for real outages.

The bucket works by *reservation*: a caller that finds no token takes one anyway (the level
goes negative) and sleeps until the refill would have produced it. Concurrent callers therefore
queue up at even spacing without a lock, and the code never loops waiting on the clock, which
lets tests drive it with a virtual clock and a sleep that only records the delay.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

__all__ = ["TokenBucket", "rate_from"]

Sleep = Callable[[float], Awaitable[None]]


def rate_from(*, per_second: float | None, per_minute: float | None) -> float | None:
    """The tighter of the two limits in requests per second, or None when neither is set."""
    rates = [r for r in (per_second, None if per_minute is None else per_minute / 60.0) if r]
    return min(rates) if rates else None


class TokenBucket:
    """At most `burst` requests at once, refilled at `rate` requests per second."""

    def __init__(
        self,
        *,
        rate: float | None,
        burst: int,
        clock: Callable[[], float],
        sleep: Sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._stamp: float | None = None

    @property
    def rate(self) -> float | None:
        """Requests per second, or None for no limit."""
        return self._rate

    async def acquire(self) -> float:
        """Take one token, sleeping until it is due; returns the seconds waited."""
        if self._rate is None:
            return 0.0
        now = self._clock()
        if self._stamp is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        self._tokens -= 1.0
        if self._tokens >= 0.0:
            return 0.0
        wait = -self._tokens / self._rate
        await self._sleep(wait)
        return wait
