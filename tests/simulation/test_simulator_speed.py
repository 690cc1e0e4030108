"""The simulator looks again at a stuck job only when a completion could have made room for it."""

from __future__ import annotations

from datetime import timedelta

from broker.domain.latency import LatencyMatrix
from broker.simulation.simulator import Simulation
from broker.simulation.traces import TraceJob
from tests.simulation.test_simulator import FLAT, T0, carbon, engine, job, pool, site


def on_one_node(trace: list[TraceJob], *, policy: str) -> Simulation:
    """A replay of `trace` on one 8-GPU node, flat carbon, no deferral."""
    return Simulation(
        trace=trace,
        sites=[site("s", "Z")],
        pools=[pool("s")],
        latency=LatencyMatrix({}),
        carbon=carbon(Z=[FLAT] * 200),
        engine=engine(deferral=False),
        start=T0,
        policy=policy,
    )


def test_a_completion_too_small_for_the_stuck_jobs_does_not_rank_them_again() -> None:
    # one 8-GPU node: a and b share it, five whole-node jobs wait
    trace = [job("a", gpus=4, duration_s=3600), job("b", gpus=4, duration_s=600)]
    trace += [job(f"w{i}", gpus=8, duration_s=3600) for i in range(5)]
    sim = on_one_node(trace, policy="broker")
    out = sim.run()
    starts = {sj.job.id: sj.first_start for sj in out.jobs}
    assert starts["a"] == starts["b"] == T0
    # b's end frees 4 GPUs, which no waiting job can use; a's end frees the node
    assert [starts[f"w{i}"] for i in range(5)] == [T0 + timedelta(hours=h) for h in range(1, 6)]
    # 7 at the start, none when b ends, then the 5, 4, 3, 2, 1 still waiting at each end
    assert sim.ranked == 7 + 5 + 4 + 3 + 2 + 1


def test_fifo_looks_once_per_pass_at_a_shape_that_found_no_room() -> None:
    # one 8-GPU node: a holds it, five whole-node jobs of one shape wait behind it; a pass
    # only takes capacity, so once w0 finds no room, w1..w4 are left stuck unlooked-at
    trace = [job("a", gpus=8, duration_s=3600)]
    trace += [job(f"w{i}", submit_s=1 + i, gpus=8, duration_s=3600) for i in range(5)]
    sim = on_one_node(trace, policy="fifo")
    out = sim.run()
    starts = {sj.job.id: sj.first_start for sj in out.jobs}
    assert starts["a"] == T0
    assert [starts[f"w{i}"] for i in range(5)] == [T0 + timedelta(hours=h) for h in range(1, 6)]
    # a at T0; each w arrives alone and finds no room (5); at each of the first four ends one
    # starts and the next finds none (2 x 4); the last end starts the last one (1). Looking
    # at every job released after each end would take 1 + 5 + (5 + 4 + 3 + 2 + 1).
    assert sim.fit_checks == 1 + 5 + 2 * 4 + 1
