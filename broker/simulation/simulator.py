"""Trace replay in virtual time, through the broker's own engine.

The simulator owns an in-memory fleet (the same `GpuPool` ledger the database keeps), a
queue and a clock that jumps from event to event (arrivals, completions, deferral windows
opening). After each instant with events it runs one pass of `Engine.plan` — the very
function the service's loop calls — and applies the decisions in memory: place (after
preempting victims), defer, wait. The `fifo` policy is the baseline a plain Kubernetes queue
gives: jobs in arrival order, each on the first site in fleet order with room, no carbon,
no preemption, no deferral (later jobs may backfill around a blocked one).

Assumptions, stated in the summary as well: a job's estimated duration is its real one
(perfect estimates); a preempted job restarts from scratch when placed again; starting is
instant; energy is GPU board power × GPUs × run time × utilisation × site PUE (`runs.py`); emissions
integrate that energy against the zone's hourly intensity over each actual run.

Besides the allocation at every change, each instant ends with a `Sample` (jobs waiting,
GPUs allocated by model) for the allocation-while-waiting figures, and the ledger is checked
against the running work at the peak of allocation and at the end (`allocation.py`).
CPU-only trace rows are load the cluster's own scheduler places on GPU nodes, the same
for every policy (`background.py`).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from broker.domain.engine import CarbonOracle, Decision, Defer, Engine, Place, Wait
from broker.domain.enums import Tier
from broker.domain.fleet import MILLI_PER_GPU, Demand, GpuPool, Site
from broker.domain.jobs import Job, JobSpec, Resources
from broker.domain.latency import LatencyMatrix
from broker.domain.placement import Candidate, static_rejection
from broker.domain.policy.fairness import gpu_resource
from broker.domain.rules import unit_price
from broker.domain.runtime import run_factor, scaled_s
from broker.domain.work import RunningWork, placed_work
from broker.simulation.allocation import (
    Sample,
    capacity_by_model,
    check_state,
    sample,
)
from broker.simulation.background import Background
from broker.simulation.burst import CloudBurst
from broker.simulation.runs import Outcome, Run, SimJob, to_job
from broker.simulation.traces import TraceJob

Progress = Callable[[int, int], None]


class Simulation:
    def __init__(
        self,
        *,
        trace: Sequence[TraceJob],
        sites: Sequence[Site],
        pools: Sequence[GpuPool],
        latency: LatencyMatrix,
        carbon: CarbonOracle,
        engine: Engine,
        start: datetime,
        policy: str,
        progress: Progress | None = None,
        burst: CloudBurst | None = None,
        label: str | None = None,
    ) -> None:
        """`burst`: cloud bursting (broker policy only); its sites' pools in `pools` should
        start empty (`broker.simulation.burst.elastic`). `label` names the outcome."""
        if policy not in ("broker", "fifo"):
            raise ValueError(f"unknown policy {policy!r}")
        if burst is not None and policy != "broker":
            raise ValueError("only the broker policy bursts")
        self.policy = policy
        self.label = label or policy
        self.burst = burst
        self.engine = engine
        self.sites = list(sites)
        self.site_by_name = {s.name: s for s in sites}
        self.pools = {p.id: p for p in pools}
        self.pool_order = [p.id for p in pools]
        # what the policy could hold: burst pools count at their limit
        limits = burst.limits.values() if burst is not None else ()
        self.capacity = float(sum(p.total_gpus for p in (*pools, *limits)))
        self.capacity_by_model = capacity_by_model((*pools, *limits))
        self.samples: list[Sample] = []
        self.peak = (-1.0, start, dict(self.pools), dict[str, RunningWork]())  # GPUs, then state
        self.latency = latency
        self.carbon = carbon
        self.start = start
        self.progress = progress
        self.jobs = {
            t.job_id: SimJob(trace=t, job=to_job(t, start=start)) for t in trace if not t.cpu_only
        }
        # CPU-only rows: load the cluster's own scheduler places, the same for every policy
        self.background = Background((t for t in trace if t.cpu_only), start=start)
        self.pending = _Pending()
        self.pending_since: dict[str, datetime] = {}  # when each last became pending
        self.deferred: dict[str, SimJob] = {}
        self.running: dict[str, RunningWork] = {}
        # `usage_from_running(self.running)`, kept up to date at every start and end
        self.usage: dict[str, dict[str, float]] = {}
        self.stuck = _Stuck()
        # start times of preemptible P2/P3 runs, in order (stuck P1 jobs: `_unstick`)
        self.lower_starts: list[datetime] = []
        # Pools that gained room (a run ended) since stuck jobs were last looked at: after a
        # completion only stuck jobs that fit in one of them are ranked again (`_unstick`).
        self.freed: set[str] = set()
        self.recheck = False  # a run completed this instant
        self.ranked = 0  # jobs handed to the engine (tests/simulation/test_simulator_speed.py)
        # FIFO: per job, the pools its static rules allow (fixed: first-fit asks them at the
        # start, carbon-blind); per pool, the sorted free room of its nodes for the pool
        # state it was taken from (pools are replaced on every change)
        self.allowed: dict[str, tuple[str, ...]] = {}
        self.rooms: dict[str, tuple[GpuPool, list[int], list[int]]] = {}
        self.fit_checks = 0  # jobs first-fit looked at (tests/simulation/test_simulator_speed.py)
        self.events: list[tuple[datetime, int, str, str, int]] = []
        self.seq = itertools.count()
        self.allocation: list[tuple[datetime, float]] = [(start, 0.0)]
        self.job_events = 0  # job events in the heap; burst ticks alone end nothing
        self.reviewing = False  # an idle review is scheduled
        for sj in self.jobs.values():
            self._push(sj.job.created_at, "arrive", sj.job.id)
        for at, job_id in self.background.arrivals():
            self._push(at, "cpu-arrive", job_id)
        if burst is not None:
            self._push(start, "plan", "")

    def _push(self, at: datetime, kind: str, job_id: str, token: int = 0) -> None:
        self.job_events += kind in _JOB_EVENTS
        heapq.heappush(self.events, (at, next(self.seq), kind, job_id, token))

    def run(self) -> Outcome:
        done = 0
        total = len(self.jobs)
        now = last = self.start
        while self.events:
            now = self.events[0][0]
            ticks: list[str] = []
            while self.events and self.events[0][0] == now:
                _, _, kind, job_id, token = heapq.heappop(self.events)
                if kind not in _JOB_EVENTS:
                    ticks += self._burst_event(kind, job_id, now)
                    continue
                self.job_events -= 1
                last = now
                if kind == "cpu-arrive":
                    self.background.arrive(job_id, now)
                    continue
                if kind == "cpu-finish":
                    self.freed.add(self.background.finish(job_id, self.pools))
                    self.recheck = True
                    continue
                sj = self.jobs[job_id]
                if kind == "arrive":
                    self.pending[job_id] = sj
                    self.pending_since[job_id] = now
                elif kind == "release" and job_id in self.deferred:
                    self.pending[job_id] = self.deferred.pop(job_id)
                    self.pending_since[job_id] = now
                elif kind == "finish" and token == sj.token and job_id in self.running:
                    self._end_run(sj, now, preempted=False)
                    sj.finish = now
                    done += 1
                    self.recheck = True
                    if self.progress is not None:
                        self.progress(done, total)
            if self.background.waiting:  # before the pass: the cluster binds pods at once
                for end_at, job_id in self.background.place(self.pools, self.pool_order, now):
                    self._push(end_at, "cpu-finish", job_id)
            if self.pending:
                self._pass(now)
            for tick in ticks:  # after the pass: it may have put idle nodes to work
                self._burst_tick(tick, now)
            self._sample(now)
        end = max([last, *(sj.finish for sj in self.jobs.values() if sj.finish)])
        _, peak_at, peak_pools, peak_running = self.peak
        checks = [
            check_state(at=peak_at, label="peak", pools=peak_pools, running=peak_running.values()),
            check_state(
                at=now,
                label="end",
                pools=self.pools,
                running=[*self.running.values(), *self.background.running.values()],
            ),
        ]
        return Outcome(
            policy=self.label,
            jobs=list(self.jobs.values()),
            allocation=self.allocation,
            total_gpus=self.capacity,
            start=self.start,
            end=end,
            samples=self.samples,
            capacity_by_model=self.capacity_by_model,
            checks=checks,
            background=self.background.summary(),
        )

    def _sample(self, now: datetime) -> None:
        """The state the instant leaves; a new peak of allocation keeps a copy to check."""
        s = sample(at=now, waiting=len(self.pending), pools=self.pools.values())
        self.samples.append(s)
        used = sum(s.allocated.values())
        if used > self.peak[0]:
            self.peak = (used, now, dict(self.pools), {**self.running, **self.background.running})

    # ---- bursting -------------------------------------------------------------------------

    def _burst_event(self, kind: str, key: str, now: datetime) -> list[str]:
        """A node joins now; planning and the idle review wait for the instant's pass."""
        assert self.burst is not None
        if kind == "join":
            self.burst.join(key, now=now, pools=self.pools)
            self.stuck.clear()
            return []
        return [kind]

    def _burst_tick(self, kind: str, now: datetime) -> None:
        assert self.burst is not None
        step = self.burst.options
        if kind == "review":
            self.reviewing = False
            self.burst.reclaim(now=now, pools=self.pools, running=self.running)
        else:
            pending = [(sj.job, self.pending_since[i]) for i, sj in self.pending.items()]
            started = self.burst.plan(now=now, pending=pending, pools=list(self.pools.values()))
            for inst in started:
                self._push(inst.ready_at, "join", inst.record.instance_id)
            if self._keep_planning(now):
                self._push(now + timedelta(seconds=step.plan_interval_s), "plan", "")
        if self.burst.alive() and not self.reviewing:
            self.reviewing = True
            self._push(now + timedelta(seconds=step.review_interval_s), "review", "")

    def _keep_planning(self, now: datetime) -> bool:
        """Whether a later pass could start anything: jobs still to arrive or end, capacity
        alive, or a pending job whose tier's wait target is still ahead."""
        if self.job_events or (self.burst is not None and self.burst.alive()):
            return True
        targets = self.burst.options.settings.wait_target_s if self.burst else {}
        return any(
            sj.job.spec.tier in targets
            and (now - self.pending_since[i]).total_seconds() < targets[sj.job.spec.tier]
            for i, sj in self.pending.items()
        )

    # ---- one scheduling pass --------------------------------------------------------------

    def _pass(self, now: datetime) -> None:
        # after a completion every stuck job used to be ranked again; now only those that
        # might fit (`_unstick`), unless that cannot be told
        pruned = self.recheck and self._unstick(now)
        if self.recheck and not pruned:
            self.stuck.clear()
        self.recheck = False
        if self.policy == "fifo":
            self._fifo(now)
            return
        queue = [sj.job for sj in self.pending.values() if sj.job.id not in self.stuck]
        if not queue:
            return
        decisions = self._plan(queue, now)
        if (
            pruned
            and self.stuck
            and any(isinstance(d, Place) and d.victims and d.victims.job_ids for d in decisions)
        ):
            # a preemption may leave room a job left stuck could use later in the same pass:
            # decide the whole queue as a pass after a completion always did
            self.stuck.clear()
            decisions = self._plan(list(sj.job for sj in self.pending.values()), now)
        for d in decisions:
            sj = self.jobs[d.job.id]
            if isinstance(d, Wait):
                self.stuck.add(d.job, now)
            elif isinstance(d, Defer):
                sj.deferred = True
                self.deferred[d.job.id] = self.pending.pop(d.job.id)
                self._push(d.until, "release", d.job.id)
            elif isinstance(d, Place):
                if d.victims is not None:
                    for victim in d.victims.job_ids:
                        self._preempt(self.jobs[victim], now)
                self._start(sj, d.candidate, now, borrowed=d.borrowed)

    def _plan(self, queue: list[Job], now: datetime) -> list[Decision]:
        self.ranked += len(queue)
        return self.engine.plan(
            queue=queue,
            pools=list(self.pools.values()),
            running=list(self.running.values()),
            sites=self.sites,
            latency=self.latency,
            carbon=self.carbon,
            now=now,
            waiting=self.pending.asks,
            usage=self.usage,
        )

    def _unstick(self, now: datetime) -> bool:
        """After a completion, release the stuck jobs that might be placed now; False when
        every stuck job must be looked at again instead.

        A job stuck since its pass found no room keeps finding none until one of its pools
        gains room: runs ending (or preempted) are the only releases, and a pass only takes
        capacity. So a stuck job is ranked again only if some node of a pool released since
        then holds it (any pool: a superset of those its rules allow). A P1 job, which may
        preempt, also when work it could preempt may have appeared since it got stuck:
        preemptible work of a lower tier that started since, or that left its minimum
        runtime's protection since (`min_runtime_s` after its start). If the pass then
        preempts, the caller decides the whole queue. Quotas (an owner reclaiming borrowed
        GPUs preempts too) and bursting (nodes join) keep the plain rule: everything is
        looked at again.
        """
        freed = [self.pools[i] for i in sorted(self.freed)]
        self.freed.clear()
        if self.burst is not None or self.engine.settings.quotas:
            return False
        release: list[str] = []
        for (demand, count), ids in self.stuck.by_ask.items():
            if any(p.fit(demand, count=count) is not None for p in freed):
                release.extend(ids)
        if self.engine.settings.preemption and self.stuck.p1:
            protect = timedelta(seconds=self.engine.settings.min_runtime_s)
            for job_id, since in self.stuck.p1.items():
                # a start in (since - protect, now] is new work or newly unprotected work
                at = bisect.bisect_right(self.lower_starts, since - protect)
                if at < len(self.lower_starts) and self.lower_starts[at] <= now:
                    release.append(job_id)
        self.stuck.release(release)
        return True

    def _fifo(self, now: datetime) -> None:
        # stuck jobs are skipped: leave them out before sorting (the same order). A pass only
        # takes capacity, so a job whose allowed pools and shape already found no room in
        # this pass finds none either: it is left stuck without looking again.
        free = [sj for sj in self.pending.values() if sj.job.id not in self.stuck]
        blocked: set[tuple[tuple[str, ...], Demand, int]] = set()
        for sj in sorted(free, key=lambda s: (s.job.created_at, s.job.id)):
            res = sj.job.spec.resources
            shape = (self._allowed(sj.job), res.demand, res.nodes)
            cand = None if shape in blocked else self._first_fit(sj.job.spec, shape[0])
            if cand is None:
                blocked.add(shape)
                self.stuck.add(sj.job, now)
            else:
                self._start(sj, cand, now, borrowed=False)

    def _allowed(self, job: Job) -> tuple[str, ...]:
        """The pools, in fleet order, that the job's static rules allow (cached per job)."""
        if job.id not in self.allowed:
            spec = job.spec
            conds = self.engine.conditions(
                spec, sites=self.sites, latency=self.latency, carbon=_NoCarbon(), now=self.start
            )
            self.allowed[job.id] = tuple(
                pool_id
                for pool_id in self.pool_order
                if static_rejection(
                    spec,
                    self.pools[pool_id],
                    conds[self.pools[pool_id].site],
                    rules=self.engine.rules,
                )
                is None
            )
        return self.allowed[job.id]

    def _may_fit(self, pool: GpuPool, demand: Demand, count: int) -> bool:
        """Whether `pool.fit` may find `count` nodes for `demand` (necessary, not
        sufficient), without looking at each node for each job: the sorted most whole GPUs
        free and most room on one GPU per node are kept per pool state."""
        kept = self.rooms.get(pool.id)
        if kept is None or kept[0] is not pool:
            use = pool.uses()
            kept = (
                pool,
                sorted(u.free_whole * MILLI_PER_GPU for u in use),
                sorted(u.best_room for u in use),
            )
            self.rooms[pool.id] = kept
        rooms = kept[2] if demand.shared else kept[1]
        return len(rooms) - bisect.bisect_left(rooms, demand.milli) >= count

    def _first_fit(self, spec: JobSpec, allowed: tuple[str, ...]) -> Candidate | None:
        self.fit_checks += 1
        res = spec.resources
        demand = res.demand
        for pool_id in allowed:
            pool = self.pools[pool_id]
            if not self._may_fit(pool, demand, res.nodes):
                continue
            nodes = pool.fit(demand, count=res.nodes)
            if nodes is None:
                continue
            site = self.site_by_name[pool.site]
            price, spot = unit_price(spec, pool)
            return Candidate(
                site=site.name,
                pool_id=pool.id,
                gpu_model=pool.gpu_model,
                gpu_milli=res.total_milli,
                nodes=nodes,
                node_gpus=pool.gpus_on(nodes, demand),
                spot=spot,
                price_per_gpu_hour=price,
                hourly_cost_usd=price * res.gpu_equivalents,
                cost_usd=price * res.gpu_equivalents * self._run_s(spec, pool.gpu_model) / 3600,
                latency_ms=None,
                intensity_gco2_per_kwh=None,
                energy_kwh=0.0,
                gco2=None,
                leftover_milli=pool.leftover_after(nodes, demand),
            )
        return None

    def _run_s(self, spec: JobSpec, model: str, *, actual_s: int | None = None) -> int:
        """Seconds the job runs on `model`: the trace's time (`actual_s`, else the estimate)
        as measured on the job's reference model, scaled by the engine's throughput figures
        when the performance model is on; unchanged when it is off."""
        base = spec.estimated_duration_s if actual_s is None else actual_s
        table = self.engine.throughput
        if table.uniform:
            return base
        factor = run_factor(spec, model, table)
        assert factor is not None  # the engine's rules place a job only where it has a figure
        return scaled_s(base, factor)

    # ---- applying decisions ---------------------------------------------------------------

    def _start(self, sj: SimJob, cand: Candidate, now: datetime, *, borrowed: bool) -> None:
        spec = sj.job.spec
        pool = self.pools[cand.pool_id]
        gpus = cand.node_gpus or pool.gpus_on(cand.nodes, spec.resources.demand)
        self.pools[pool.id] = pool.allocate(cand.nodes, spec.resources.demand, gpus)
        site = self.site_by_name[pool.site]
        self.pending.pop(sj.job.id, None)
        if self.burst is not None:
            self.burst.occupy(pool.id, cand.nodes, now=now, delta=1)
        work = self.running[sj.job.id] = placed_work(
            sj.job,
            pool_id=pool.id,
            gpu_model=pool.gpu_model,
            nodes=cand.nodes,
            gpus=gpus,
            placed_at=now,
            started_at=now,
            borrowed=borrowed,
        )
        self._use(work, 1)
        if work.preemptible and work.tier is not Tier.P1:
            self.lower_starts.append(now)  # in time order: the replay's clock only advances
        sj.runs.append(
            Run(
                site=site.name,
                pool_id=pool.id,
                gpu_model=pool.gpu_model,
                gpus=spec.resources.gpu_equivalents,
                price_per_gpu_hour=cand.price_per_gpu_hour,
                pue=site.pue,
                zone=site.grid_zone,
                start=now,
            )
        )
        if sj.first_start is None:
            sj.first_start = now
        sj.token += 1
        run_s = self._run_s(spec, pool.gpu_model, actual_s=sj.trace.duration_s)
        self._push(now + timedelta(seconds=run_s), "finish", sj.job.id, sj.token)
        self._record(now)

    def _preempt(self, sj: SimJob, now: datetime) -> None:
        self._end_run(sj, now, preempted=True)
        sj.preemptions += 1
        sj.token += 1
        self.pending[sj.job.id] = sj
        self.pending_since[sj.job.id] = now

    def _end_run(self, sj: SimJob, now: datetime, *, preempted: bool) -> None:
        work = self.running.pop(sj.job.id)
        self._use(work, -1)
        pool = self.pools[work.pool_id]
        self.freed.add(pool.id)
        self.pools[pool.id] = pool.release(work.node_indices, work.gpus(), work.demand)
        if self.burst is not None:
            self.burst.occupy(pool.id, work.node_indices, now=now, delta=-1)
        run = sj.runs[-1]
        run.end = now
        run.preempted = preempted
        self._record(now)

    def _use(self, work: RunningWork, sign: int) -> None:
        """`self.usage` with a run started (+1) or ended (-1): as `usage_from_running`."""
        mine = self.usage.setdefault(work.tenant, {})
        name = gpu_resource(work.gpu_model)
        mine[name] = mine.get(name, 0.0) + sign * work.gpu_milli / MILLI_PER_GPU

    def _record(self, now: datetime) -> None:
        used = sum(p.allocated_milli for p in self.pools.values()) / MILLI_PER_GPU
        self.allocation.append((now, used))


class _Stuck:
    """The jobs left waiting until something changes (`Simulation._unstick`), by what they
    ask, and when each P1 job among them got stuck."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.by_ask: dict[tuple[Demand, int], set[str]] = {}
        self.p1: dict[str, datetime] = {}
        self._ask: dict[str, tuple[Demand, int]] = {}

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.ids

    def __bool__(self) -> bool:
        return bool(self.ids)

    def add(self, job: Job, now: datetime) -> None:
        if job.id in self.ids:
            return
        res = job.spec.resources
        ask = (res.demand, res.nodes)
        self.ids.add(job.id)
        self._ask[job.id] = ask
        self.by_ask.setdefault(ask, set()).add(job.id)
        if job.spec.tier is Tier.P1:
            self.p1[job.id] = now

    def release(self, ids: Iterable[str]) -> None:
        for job_id in ids:
            if job_id not in self.ids:
                continue
            self.ids.discard(job_id)
            ask = self._ask.pop(job_id)
            group = self.by_ask[ask]
            group.discard(job_id)
            if not group:
                del self.by_ask[ask]
            self.p1.pop(job_id, None)

    def clear(self) -> None:
        self.ids.clear()
        self.by_ask.clear()
        self.p1.clear()
        self._ask.clear()


class _Pending(dict[str, SimJob]):
    """The jobs waiting, and how many ask for each `Resources` (the packing term's outlook,
    kept up to date here rather than counted again at every pass)."""

    def __init__(self) -> None:
        super().__init__()
        self.asks: Counter[Resources] = Counter()

    def __setitem__(self, job_id: str, sj: SimJob) -> None:
        if job_id not in self:
            self.asks[sj.job.spec.resources] += 1
        super().__setitem__(job_id, sj)

    def pop(self, job_id: str, *default: Any) -> Any:
        if job_id in self:
            res = self[job_id].job.spec.resources
            self.asks[res] -= 1
            if not self.asks[res]:
                del self.asks[res]
        return super().pop(job_id, *default)


_JOB_EVENTS = frozenset({"arrive", "release", "finish", "cpu-arrive", "cpu-finish"})


class _NoCarbon:
    """First-fit is carbon-blind: it asks for no intensity at all."""

    def hourly(self, zone: str, *, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
        return []
