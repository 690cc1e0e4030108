"""Scheduling policies as pure functions: preemption, fair share and quotas.

The scheduling engine gathers the facts (pools, running work, the queue, the clock) and
asks these modules what to do; nothing here does I/O or keeps state between calls.
"""

from __future__ import annotations

from broker.domain.policy.fairness import (
    capacity_from_pools,
    dominant_shares,
    effective_priority,
    gpu_resource,
    order_queue,
    usage_from_running,
)
from broker.domain.policy.preemption import (
    VictimSet,
    best_preemption,
    choose_victims,
    is_eligible,
)
from broker.domain.policy.quotas import (
    QuotaDecision,
    QuotaLedger,
    Quotas,
    check,
    quota_of,
    reclaimable,
)

__all__ = [
    "QuotaDecision",
    "QuotaLedger",
    "Quotas",
    "VictimSet",
    "best_preemption",
    "capacity_from_pools",
    "check",
    "choose_victims",
    "dominant_shares",
    "effective_priority",
    "gpu_resource",
    "is_eligible",
    "order_queue",
    "quota_of",
    "reclaimable",
    "usage_from_running",
]
