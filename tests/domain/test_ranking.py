"""The engine's array ranking (`FleetIndex`) against the reference code it replaces.

`placement.evaluate` (the explain endpoint) and `deferral.plan_window` are written for
clarity: every pool, every start, one at a time. The scheduler's hot path computes the same
thing with arrays. On random fleets, jobs and carbon series, both must pick the same pool,
the same nodes and the same terms, and defer to the same start with the same saving.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from broker.domain.deferral import SiteOption, plan_window
from broker.domain.engine import Engine, EngineSettings, Hourly
from broker.domain.enums import Ability, Health, JobKind, SiteKind, Tier
from broker.domain.fleet import MILLI_PER_GPU, GpuPool, NodeUse, Site
from broker.domain.jobs import JobSpec, Resources, Workload
from broker.domain.latency import LatencyMatrix
from broker.domain.objective import Weights
from broker.domain.packing import NO_OUTLOOK, Outlook
from broker.domain.placement import Candidate, evaluate

# 17 minutes past the hour: runs and windows cross partial hours
NOW = datetime(2025, 6, 2, 9, 17, 23, tzinfo=UTC)
HOUR = timedelta(hours=1)
MODELS = {"H100": 80.0, "A100": 40.0, "L4": 24.0, "T4": 16.0}
ZONES = ("NO", "DE", "PL", "FR")
LOCATIONS = ("aws:a", "aws:b", "gcp:c", "gcp:d", "gcp:e")
SETTINGS = EngineSettings(
    weights={
        Tier.P1: Weights(cost=0.2, latency=0.6, carbon=0.2),
        Tier.P2: Weights(cost=0.2, latency=0.0, carbon=0.8),
        Tier.P3: Weights(cost=0.5, latency=0.1, carbon=0.4),
    }
)


class Series:
    """Random hourly intensity per zone from two hours before NOW to three days after."""

    def __init__(self, rng: random.Random) -> None:
        start = NOW.replace(minute=0, second=0, microsecond=0) - 2 * HOUR
        self._rows = {
            z: [(start + k * HOUR, rng.uniform(20, 800)) for k in range(75)] for z in ZONES
        }

    def hourly(self, zone: str, *, start: datetime, end: datetime) -> Hourly:
        lo = start.replace(minute=0, second=0, microsecond=0)
        return [(t, v) for t, v in self._rows.get(zone, []) if lo <= t < end]


def fleet(rng: random.Random) -> tuple[list[Site], list[GpuPool], LatencyMatrix]:
    sites = [
        Site(
            name=f"s{i}",
            kind=SiteKind.SIM,
            region=f"r{i % 3}",
            location=LOCATIONS[i % len(LOCATIONS)],
            grid_zone=rng.choice(ZONES),
            private=i % 3 == 0,
            pue=rng.choice((1.1, 1.2, 1.35)),
            health=Health.UNREACHABLE if rng.random() < 0.1 else Health.HEALTHY,
            # some sites' connectors cannot run gang, MIG or fractional jobs, or any job
            lacks=frozenset(
                a
                for a in (Ability.GANG, Ability.MIG, Ability.FRACTIONAL_GPU, Ability.DISPATCH)
                if rng.random() < (0.05 if a is Ability.DISPATCH else 0.2)
            ),
        )
        for i in range(rng.randint(2, 9))
    ]
    pools = []
    for site in sites:
        for model in rng.sample(sorted(MODELS), rng.randint(1, 3)):
            per_node = rng.choice((1, 4, 8))
            nodes = rng.randint(1, 4)
            cap = per_node * MILLI_PER_GPU
            # GPUs in use (whole, half a node, a share of one GPU), and now and then a
            # node whose CPU is all but taken
            used = tuple(
                NodeUse.of_total(
                    per_node,
                    rng.choice((0, 0, cap // 2, cap, 250)),
                    cpu_milli=rng.choice((0, 0, 0, 90_000)),
                )
                for _ in range(nodes)
            )
            on_demand = round(rng.uniform(0.3, 4.0), 2)
            pools.append(
                GpuPool(
                    id=f"{site.name}/{model}",
                    site=site.name,
                    gpu_model=model,
                    gpu_memory_gb=MODELS[model],
                    gpus_per_node=per_node,
                    nodes=nodes,
                    price_on_demand=on_demand,
                    price_spot=None if site.private or rng.random() < 0.3 else on_demand / 3,
                    mig_profiles=("1g.10gb", "3g.40gb") if model in ("H100", "A100") else (),
                    node_use=used,
                )
            )
    rtt = {
        (a, b): rng.uniform(5, 200) for a in LOCATIONS for b in LOCATIONS if a < b
    }  # one pair left unmeasured on purpose
    rtt.pop((LOCATIONS[0], LOCATIONS[-1]), None)
    return sites, pools, LatencyMatrix(rtt)


def job_spec(rng: random.Random) -> JobSpec:
    tier = rng.choice(list(Tier))
    shape = rng.random()
    gpus, fraction, mig, nodes = 1, None, None, 1
    if shape < 0.15:
        fraction = rng.choice((0.25, 0.5))
    elif shape < 0.25:
        mig = rng.choice(("1g.10gb", "3g.40gb"))
    else:
        gpus = rng.choice((1, 2, 4, 8))
        nodes = 2 if rng.random() < 0.2 else 1
    origin = rng.choice(LOCATIONS) if rng.random() < 0.5 else None
    duration = rng.randint(600, 10 * 3600)
    return JobSpec(
        name="j",
        tier=tier,
        kind=JobKind.TRAINING,
        resources=Resources(
            gpus=gpus,
            gpu_fraction=fraction,
            mig_profile=mig,
            nodes=nodes,
            gpu_models=tuple(rng.sample(sorted(MODELS), rng.randint(0, 3))),
            min_gpu_memory_gb=rng.choice((None, None, 30.0)),
            cpu=rng.choice((1.0, 8.0)),
        ),
        workload=Workload(image="x"),
        estimated_duration_s=duration,
        deadline=(
            NOW + timedelta(seconds=duration + rng.randint(0, 40 * 3600))
            if rng.random() < 0.6
            else None
        ),
        origin=origin,
        latency_slo_ms=rng.choice((None, 60.0, 150.0)) if origin else None,
        allowed_regions=rng.choice(((), (), ("r0", "r1"))),
        preemptible=rng.choice((None, True, False)),
        max_hourly_cost=rng.choice((None, None, 6.0)),
        objective=Weights(cost=1, latency=0, carbon=3) if rng.random() < 0.2 else None,
    )


def assert_same(fast: Candidate, slow: Candidate, *, tied: bool) -> None:
    if not tied:
        assert (fast.pool_id, fast.nodes) == (slow.pool_id, slow.nodes)
    for name in ("cost_term", "latency_term", "carbon_term", "packing_term", "score"):
        assert math.isclose(getattr(fast, name), getattr(slow, name), abs_tol=1e-9), name
    if tied:
        return
    for name in ("cost_usd", "energy_kwh", "hourly_cost_usd", "price_per_gpu_hour", "duration_s"):
        assert math.isclose(getattr(fast, name), getattr(slow, name), rel_tol=1e-12), name
    assert (fast.spot, fast.leftover_milli) == (slow.spot, slow.leftover_milli)
    assert (fast.gco2 is None) == (slow.gco2 is None)
    if fast.gco2 is not None and slow.gco2 is not None:
        assert math.isclose(fast.gco2, slow.gco2, rel_tol=1e-9)


# With the performance model on: training speeds of different levels for all but T4 (a
# gap, so the performance rule refuses T4 pools for training); inference from the table.
PERFORMANCE = replace(
    SETTINGS,
    gpu_performance=True,
    gpu_throughput={"H100": {"training": 2.5}, "A100": {"training": 0.8}, "L4": {"training": 0.3}},
)


@pytest.mark.parametrize("on", [False, True], ids=["model-off", "model-on"])
@pytest.mark.parametrize("seed", range(60))
def test_index_picks_what_evaluate_ranks_first(seed: int, on: bool) -> None:
    rng = random.Random(seed)
    sites, pools, latency = fleet(rng)
    carbon = Series(rng)
    engine = Engine(PERFORMANCE if on else SETTINGS)
    # odd seeds: a queue behind the jobs, so the packing term (scarcity, fragments) counts
    outlook = Outlook.of([job_spec(rng) for _ in range(30)], pools) if seed % 2 else NO_OUTLOOK
    index = engine.fleet_index(
        pools=pools,
        sites=sites,
        latency=latency,
        carbon=carbon,
        now=NOW,
        longest_s=36000,
        packing=outlook,
    )
    compared = 0
    for _ in range(40):
        spec = job_spec(rng)
        if on:  # runs differ in length by model, and deadlines may rule slow ones out
            spec = replace(
                spec,
                kind=rng.choice((JobKind.TRAINING, JobKind.INFERENCE)),
                reference_gpu_model=rng.choice((None, "H100", "L4")),
            )
        conds = engine.conditions(spec, sites=sites, latency=latency, carbon=carbon, now=NOW)
        slow = engine.evaluate(
            spec, pools=index.pools, conditions=conds, explain=False, now=NOW, packing=outlook
        )
        ranking = index.rank(
            spec, index.shape(spec), engine.weights_for(spec), SETTINGS.gpu_utilisation
        )
        pick = index.pick(spec, ranking)
        assert (pick is None) == (slow.best is None)
        if pick is None or slow.best is None:
            continue
        fast = index.candidate(spec, ranking, pick, SETTINGS.gpu_utilisation)
        # scores within a rounding step of each other may order either way
        runner_up = slow.candidates[1].score if len(slow.candidates) > 1 else math.inf
        assert_same(fast, slow.best, tied=abs(runner_up - slow.best.score) < 1e-8)
        compared += 1
        # take the capacity, so later jobs see a fuller fleet
        index.allocate(pick.pool, pick.nodes, spec.resources.demand)
    assert compared > 0 or not any(s.health is Health.HEALTHY for s in sites)


def reference_window(
    engine: Engine,
    spec: JobSpec,
    ev_candidates: tuple[Candidate, ...],
    carbon: Series,
    zone_of: dict[str, str],
) -> tuple[bool, datetime, float]:
    """The deferral the engine made before the index: `plan_window` over one option per
    zone (its least-energy pool with room, in ranking order)."""
    s = engine.settings
    assert spec.deadline is not None
    horizon = min(spec.deadline, NOW + timedelta(hours=s.deferral_horizon_h))
    best_in_zone: dict[str, Candidate] = {}
    for c in ev_candidates:
        zone = zone_of[c.site]
        if zone not in best_in_zone or c.energy_kwh < best_in_zone[zone].energy_kwh:
            best_in_zone[zone] = c
    options = [
        SiteOption(
            site=c.site,
            pool_id=c.pool_id,
            energy_kwh=c.energy_kwh,
            hourly=carbon.hourly(zone, start=NOW, end=horizon),
        )
        for zone, c in best_in_zone.items()
    ]
    choice = plan_window(
        now=NOW,
        duration_s=spec.estimated_duration_s,
        deadline=spec.deadline,
        tier=spec.tier,
        options=options,
        min_saving=s.deferral_min_saving,
        margin_s=s.deferral_margin_s,
    )
    return choice.defer, choice.start_at, choice.saving


@pytest.mark.parametrize("seed", range(60))
def test_index_defers_as_plan_window_does(seed: int) -> None:
    rng = random.Random(1000 + seed)
    sites, pools, latency = fleet(rng)
    carbon = Series(rng)
    engine = Engine(SETTINGS)
    index = engine.fleet_index(
        pools=pools, sites=sites, latency=latency, carbon=carbon, now=NOW, longest_s=36000
    )
    zone_of = {s.name: s.grid_zone for s in sites}
    for _ in range(30):
        spec = job_spec(rng)
        if spec.deadline is None or spec.tier is Tier.P1 or spec.resources.nodes > 1:
            continue  # (gang jobs: the index screens room by each pool's largest block)
        ranking = index.rank(
            spec, index.shape(spec), engine.weights_for(spec), SETTINGS.gpu_utilisation
        )
        if index.pick(spec, ranking) is None:
            continue
        conds = engine.conditions(spec, sites=sites, latency=latency, carbon=carbon, now=NOW)
        slow = evaluate(
            spec,
            pools=index.pools,
            conditions=conds,
            weights=engine.weights_for(spec),
            explain=False,
        )
        defer, start_at, saving = reference_window(engine, spec, slow.candidates, carbon, zone_of)
        window = index.window(
            spec,
            ranking,
            utilisation=SETTINGS.gpu_utilisation,
            horizon_h=SETTINGS.deferral_horizon_h,
            min_saving=SETTINGS.deferral_min_saving,
            margin_s=SETTINGS.deferral_margin_s,
        )
        assert (window is not None) == defer
        if window is not None:
            assert window.start_at == start_at
            assert math.isclose(window.saving, saving, rel_tol=1e-9)
            assert (
                window.start_at
                + timedelta(seconds=spec.estimated_duration_s + SETTINGS.deferral_margin_s)
                <= spec.deadline
            )
