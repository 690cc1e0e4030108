"""Two replicas on one PostgreSQL, and the one that dispatched dies (issue 13, item 1).

Replica A starts first, so it follows every site (it holds the sites' follow leases) and,
with a short scheduler interval, places and dispatches the work; replica B's scheduler only
wakes for what is submitted to it. Then A is killed with SIGKILL: nothing releases its
leases. Before the follow leases, every job A had dispatched stayed `running` for good,
holding its GPUs, because only A followed the runs it had started. Now B takes each site
over once A's lease lapses and adopts the orphans; every job reaches its final state and
every GPU returns to the ledger within lease + renew interval of when it would have anyway.

The second test preempts across replicas: A dispatched the P3 jobs, B places a P1 job that
preempts one of them, and the run A follows must stop (the cancel reaches the simulator's
shared run book, not only B's memory); then A dies and B finishes everything, the victim
exactly once, with no stale update applied and no error in B's log.

Both run real `broker serve` processes on the demo fleet over HTTP.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.conftest import job_body
from tests.scheduling.replicas import (
    LEASE_S,
    RENEW_S,
    SLACK_S,
    SPEED,
    all_gpus_free,
    errors,
    follows_every_site,
    job,
    kill,
    ready,
    replicas,
    states,
    submit,
    until,
)


async def test_a_dead_replicas_jobs_finish_and_free_their_gpus(
    pg_url: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    with replicas(tmp_path, pg_url) as start:
        a = start("a", interval_s=0.5)
        await ready(http, a)
        await follows_every_site(pg_url, a)
        b = start("b", interval_s=3600)  # places only what is submitted to it
        await ready(http, b)

        run_s = 1200 / SPEED
        jobs = [
            await submit(
                http,
                a,
                job_body(
                    name=f"train-{i}",
                    resources={"gpus": 1 + i % 4},
                    estimated_duration_s=1200,
                ),
            )
            for i in range(12)
        ]
        await until(http, a, jobs, {"running"}, within_s=15)
        await follows_every_site(pg_url, a)  # a dispatched everything and follows it
        kill(a)

        took = await until(http, b, jobs, {"succeeded"}, within_s=60)
        # each job ended by its run's end, or by the takeover if that came later
        assert took <= max(run_s, LEASE_S + RENEW_S) + SLACK_S, took
        await follows_every_site(pg_url, b)
        await all_gpus_free(http, b)
        for job_id in jobs:
            got = await job(http, b, job_id)
            assert states(got).count("running") == 1 and states(got)[-1] == "succeeded"
        assert errors(b) == []


async def test_a_preemption_stops_the_run_another_replica_follows(
    pg_url: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    with replicas(tmp_path, pg_url) as start:
        # both run passes: B must decide the preemption while A follows the victim's run
        a = start("a", interval_s=0.5, scheduler={"exclusive": False})
        await ready(http, a)
        await follows_every_site(pg_url, a)
        b = start("b", interval_s=3600, scheduler={"exclusive": False})
        await ready(http, b)

        # Every whole H100 node taken by a P3 experiment that A dispatched and follows.
        p3 = [
            await submit(
                http,
                a,
                job_body(
                    name=f"exp-{i}",
                    priority="P3",
                    kind="experiment",
                    resources={"gpus": 8, "gpu_models": ["H100"]},
                    estimated_duration_s=1500,
                ),
            )
            for i in range(5)  # the demo fleet's five H100 nodes
        ]
        await until(http, a, p3, {"running"}, within_s=15)
        p1 = await submit(
            http,
            b,
            job_body(
                name="serve-now",
                priority="P1",
                kind="inference",
                resources={"gpus": 8, "gpu_models": ["H100"]},
                estimated_duration_s=300,
            ),
        )
        await until(http, b, [p1], {"running"}, within_s=10)
        victims = [j for j in p3 if "preempted" in states(await job(http, b, j))]
        assert len(victims) == 1, victims
        await asyncio.sleep(2 * 0.5)  # A's follower has seen the run leave the book
        kill(a)

        await until(http, b, [p1, *p3], {"succeeded"}, within_s=60)
        await all_gpus_free(http, b)
        victim = await job(http, b, victims[0])
        assert states(victim)[-5:] == ["preempted", "pending", "scheduled", "running", "succeeded"]
        # the old run never reported again: one RUNNING per placement, no failure
        assert states(victim).count("running") == 2 and "failed" not in states(victim)
        assert errors(a) == [] and errors(b) == []
