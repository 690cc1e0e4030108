"""The SDK pool: bounded, owned by whoever builds connectors, refusing work once shut down."""

from __future__ import annotations

import threading

import pytest

from connectors.threads import Blocking


async def test_runs_calls_on_its_own_threads_and_refuses_work_after_the_block() -> None:
    with Blocking(2) as pool:
        assert pool.max_workers == 2 and not pool.closed
        name = await pool.run(lambda: threading.current_thread().name)
        assert name.startswith("sdk") and name != threading.current_thread().name
        assert await pool.run(int, "7", base=8) == 7  # positional and keyword arguments
    assert pool.closed
    with pytest.raises(RuntimeError, match="after shutdown"):
        await pool.run(int, "7")


def test_a_pool_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Blocking(0)
