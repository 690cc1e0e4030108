"""What burst capacity exists, what it is for, and what it has cost: from the records to the
planner's `Fleet`. Pure.

Spend is counted per instance from its launch to its release (or now), at the price the
plan estimated for it, and shared between tenants as its burst's `tenants` shares say;
capacity bought for the forecast belongs to no tenant and counts only against the global
budget. A burst whose provider call has not returned yet counts with the instances it
asked for, so two passes never both fill the same room.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from broker.burst.model import Fleet, OfferKey
from broker.burst.planner import failed_until
from broker.domain.capacity import ActionState, BurstInstance, CapacityAction


def day_start(now: datetime) -> datetime:
    """Midnight UTC of `now`'s day: budgets are per UTC day."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def spend(
    instances: Sequence[BurstInstance],
    *,
    tenants_of: Mapping[str, Mapping[str, float]],
    start: datetime,
    end: datetime,
) -> tuple[float, dict[str, float]]:
    """USD the instances cost during [start, end), in all and per tenant."""
    total = 0.0
    by_tenant: dict[str, float] = {}
    for inst in instances:
        cost = inst.usd_per_hour * inst.hours_alive(start=start, end=end)
        total += cost
        for tenant, share in tenants_of.get(inst.action_id, {}).items():
            by_tenant[tenant] = by_tenant.get(tenant, 0.0) + cost * share
    return total, by_tenant


def fleet_state(
    *,
    now: datetime,
    alive: Sequence[BurstInstance],
    open_actions: Sequence[CapacityAction],
    failures: Sequence[CapacityAction],
    today: Sequence[BurstInstance],
    tenants_of: Mapping[str, Mapping[str, float]],
    gpus_per_instance: Mapping[OfferKey, int],
    failure_memory_s: float,
) -> Fleet:
    """The planner's view of burst capacity at `now`.

    `today` holds the instances that ran at some time today, `tenants_of` the tenant shares
    of their bursts, `gpus_per_instance` what an instance of a target and model has (for
    asked-for instances the provider has not returned yet).
    """
    counts: dict[OfferKey, int] = {}
    gpus: dict[str, float] = {}
    for inst in alive:
        key = (inst.provider_site, inst.gpu_model)
        counts[key] = counts.get(key, 0) + 1
        gpus[inst.gpu_model] = gpus.get(inst.gpu_model, 0.0) + inst.gpus
    covered: set[str] = set()
    for action in open_actions:
        if action.state is not ActionState.REQUESTED:
            continue
        covered.update(action.for_jobs)
        missing = max(0, action.count - len(action.instance_ids))
        if missing:
            key = (action.provider_site, action.gpu_model)
            counts[key] = counts.get(key, 0) + missing
            per = gpus_per_instance.get(key, 0)
            gpus[action.gpu_model] = gpus.get(action.gpu_model, 0.0) + missing * per
    since = now - timedelta(seconds=failure_memory_s)
    memory = failed_until(
        [
            ((a.provider_site, a.gpu_model), a.requested_at)
            for a in failures
            if a.requested_at >= since
        ],
        memory_s=failure_memory_s,
    )
    spent, by_tenant = spend(today, tenants_of=tenants_of, start=day_start(now), end=now)
    return Fleet(
        alive=counts,
        alive_gpus=gpus,
        covered_jobs=frozenset(covered),
        failed_until={k: v for k, v in memory.items() if v > now},
        spent_usd=spent,
        spent_by_tenant=by_tenant,
    )
