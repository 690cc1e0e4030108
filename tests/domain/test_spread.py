"""The spread rule and the carbon-aware choice of sites for added and removed replicas."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from broker.domain.spread import (
    ReplicaView,
    SiteOption,
    choose_additions,
    choose_removals,
    max_per_site,
    site_cap,
)

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)


def site(name: str, intensity: float | None, *, score: float = 0.5, slots: int = 100) -> SiteOption:
    return SiteOption(
        site=name, intensity_gco2_per_kwh=intensity, score=score, feasible_slots=slots
    )


def replica(
    rid: str, where: str, intensity: float | None, *, ready: bool = True, age_s: int = 600
) -> ReplicaView:
    return ReplicaView(
        id=rid,
        site=where,
        intensity_gco2_per_kwh=intensity,
        ready=ready,
        started_at=T0 - timedelta(seconds=age_s),
    )


# --- the rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "share", "cap"),
    [
        (0, 0.5, 0),
        (1, 0.5, 1),  # one replica has to live somewhere
        (2, 0.5, 1),
        (3, 0.5, 1),  # 1.5 → 2 must survive
        (4, 0.5, 2),
        (10, 0.7, 3),  # 0.7 × 10 is 7.000000000000001: still 7 to keep
        (10, 0.0, 10),  # no rule
        (5, 1.0, 1),  # all must survive: impossible, so the fullest spread
    ],
)
def test_max_per_site(total: int, share: float, cap: int) -> None:
    assert max_per_site(total, critical_share=share) == cap


def test_property_losing_the_fullest_site_keeps_the_share_whenever_possible() -> None:
    for total, share in itertools.product(range(1, 60), (0.0, 0.25, 0.5, 0.66, 0.75, 0.9)):
        cap = max_per_site(total, critical_share=share)
        assert 1 <= cap <= total
        if cap > 1:
            assert total - cap >= share * total - 1e-9
            # and it is the most: one more would break the rule
            assert total - (cap + 1) < share * total - 1e-9


def test_the_rule_relaxes_to_the_even_spread_when_sites_are_too_few() -> None:
    assert site_cap(3, sites=2, critical_share=0.5) == 2  # wants 1 a site: 3 sites
    assert site_cap(4, sites=4, critical_share=0.5) == 2  # enough sites: the rule stands
    assert site_cap(6, sites=1, critical_share=0.9) == 6
    with pytest.raises(ValueError, match="critical_share"):
        max_per_site(3, critical_share=1.5)


# --- additions --------------------------------------------------------------------------


def test_additions_go_to_the_cleaner_site_and_name_the_intensities() -> None:
    picks = choose_additions(
        count=1, candidates=[site("a", 310), site("b", 42)], existing={}, critical_share=0.0
    )
    assert picks == [("b", "cleaner: 42 vs 310 gCO2/kWh at a")]


def test_additions_fill_the_cleanest_site_up_to_the_spread_limit() -> None:
    picks = choose_additions(
        count=4,
        candidates=[site("a", 310), site("b", 42), site("c", 120)],
        existing={},
        critical_share=0.5,
    )
    assert [s for s, _ in picks] == ["b", "b", "c", "c"]  # 2 a site keeps half on a loss
    assert "b at the spread limit of 2 a site" in picks[2][1]


def test_existing_replicas_count_towards_the_limit() -> None:
    picks = choose_additions(
        count=2,
        candidates=[site("clean", 10), site("dirty", 500)],
        existing={"clean": 2},
        critical_share=0.5,
    )
    assert [s for s, _ in picks] == ["dirty", "dirty"]


def test_ties_in_intensity_go_to_the_better_engine_score() -> None:
    picks = choose_additions(
        count=1,
        candidates=[site("a", 42, score=0.6), site("b", 42, score=0.2)],
        existing={},
        critical_share=0.0,
    )
    assert picks[0][0] == "b"
    assert "as clean as a (42 gCO2/kWh); better engine score 0.2 vs 0.6" in picks[0][1]
    same = choose_additions(
        count=1, candidates=[site("z", 42), site("y", 42)], existing={}, critical_share=0.0
    )
    assert same[0][0] == "y" and "by name" in same[0][1]


def test_unknown_intensity_goes_after_every_known_one() -> None:
    picks = choose_additions(
        count=3,
        candidates=[site("unknown", None, score=0.0), site("dirty", 700, score=0.9, slots=2)],
        existing={},
        critical_share=0.0,
    )
    assert [s for s, _ in picks] == ["dirty", "dirty", "unknown"]
    assert picks[0][1] == "cleaner: 700 vs unknown gCO2/kWh at unknown"
    assert "intensity unknown" in picks[2][1] or "only site" in picks[2][1]


def test_slots_bound_each_site_and_over_the_limit_is_said() -> None:
    picks = choose_additions(
        count=6,
        candidates=[site("a", 300, slots=10), site("b", 40, slots=1)],
        existing={},
        critical_share=0.5,
    )
    # the rule asks 3 a site at most; b has room for one, so a takes the rest
    assert Counter(s for s, _ in picks) == {"a": 5, "b": 1}
    assert picks[0][0] == "b"
    assert "over the spread limit of 3" in picks[-1][1]
    assert "over the spread limit" not in picks[1][1]


def test_additions_stop_when_no_site_has_room() -> None:
    picks = choose_additions(
        count=5,
        candidates=[site("a", 1, slots=1), site("b", 2, slots=0)],
        existing={},
        critical_share=0.0,
    )
    assert picks == [("a", "a: 1 gCO2/kWh, the only site that can take it")]


def test_one_allowed_site_takes_everything() -> None:
    picks = choose_additions(
        count=3, candidates=[site("only", 90)], existing={"only": 1}, critical_share=0.5
    )
    assert [s for s, _ in picks] == ["only"] * 3


def test_property_additions_keep_the_spread_and_go_cleanest_first() -> None:
    rng = random.Random(3)

    def cleanliness(c: SiteOption) -> tuple[bool, float, float, str]:
        i = c.intensity_gco2_per_kwh
        return (i is None, i or 0.0, c.score, c.site)

    for _ in range(300):
        names = [f"s{k}" for k in range(rng.randint(1, 5))]
        candidates = [
            site(n, rng.choice([None, float(rng.randint(10, 600))]), score=rng.random())
            for n in names
        ]
        existing = {n: rng.randint(0, 2) for n in names}
        count, share = rng.randint(0, 12), rng.choice([0.0, 0.5, 0.66])
        picks = choose_additions(
            count=count, candidates=candidates, existing=existing, critical_share=share
        )
        assert len(picks) == count  # slots are ample
        total = sum(existing.values()) + count
        cap = site_cap(total, sites=len(names), critical_share=share)
        counts = Counter(existing)
        by_name = {c.site: c for c in candidates}
        for name, _ in picks:
            cleaner = [c for c in candidates if cleanliness(c) < cleanliness(by_name[name])]
            assert all(counts[c.site] >= cap for c in cleaner), "a cleaner site had room"
            counts[name] += 1
        assert all(counts[n] <= max(cap, existing[n]) for n in names)


# --- removals ---------------------------------------------------------------------------


def test_removals_take_not_ready_replicas_first() -> None:
    picks = choose_removals(
        count=2,
        replicas=[
            replica("clean-starting", "clean", 20, ready=False, age_s=5),
            replica("dirty-1", "dirty", 500),
            replica("clean-1", "clean", 20),
        ],
        critical_share=0.0,
    )
    assert [r for r, _ in picks] == ["clean-starting", "dirty-1"]
    assert picks[0][1].startswith("not ready")
    assert picks[1][1].startswith("dirtiest: 500 vs 20 gCO2/kWh at clean")


def test_removals_take_the_newest_first_within_a_site() -> None:
    picks = choose_removals(
        count=1,
        replicas=[replica("old", "a", 100, age_s=3600), replica("new", "a", 100, age_s=60)],
        critical_share=0.0,
    )
    assert picks[0][0] == "new"


def test_unknown_intensity_is_removed_before_known_dirty() -> None:
    picks = choose_removals(
        count=1,
        replicas=[replica("d", "dirty", 900), replica("u", "unknown", None)],
        critical_share=0.0,
    )
    assert picks[0][0] == "u" and "intensity unknown" in picks[0][1]


def test_removals_keep_the_spread_rather_than_empty_the_dirty_site() -> None:
    replicas = [replica(f"dirty-{k}", "dirty", 400, age_s=k) for k in range(3)]
    replicas += [replica(f"clean-{k}", "clean", 30, age_s=k) for k in range(3)]
    spread = choose_removals(count=2, replicas=replicas, critical_share=0.5)
    # 4 left at a share of 0.5: 2 a site, so one each, the dirty one first
    assert [r for r, _ in spread] == ["dirty-0", "clean-0"]
    assert "clean is over the spread limit of 2 a site" in spread[1][1]
    free = choose_removals(count=2, replicas=replicas, critical_share=0.0)
    assert [r for r, _ in free] == ["dirty-0", "dirty-1"]


def test_removing_more_than_exist_removes_all() -> None:
    picks = choose_removals(
        count=5, replicas=[replica("a", "x", 1), replica("b", "y", 2)], critical_share=0.5
    )
    assert sorted(r for r, _ in picks) == ["a", "b"]


def test_property_removals_leave_a_spread_within_the_rule() -> None:
    rng = random.Random(5)
    for _ in range(400):
        intensity = {f"s{k}": rng.choice([None, rng.uniform(10, 600)]) for k in range(4)}
        names = list(intensity)[: rng.randint(1, 4)]
        replicas = [
            replica(f"r{k}", s, intensity[s], ready=rng.random() < 0.8, age_s=rng.randint(1, 9999))
            for k, s in enumerate(rng.choices(names, k=rng.randint(1, 16)))
        ]
        count, share = rng.randint(0, len(replicas)), rng.choice([0.0, 0.5, 0.75])
        picks = choose_removals(count=count, replicas=replicas, critical_share=share)
        gone = {r for r, _ in picks}
        assert len(gone) == len(picks) == count
        before = Counter(r.site for r in replicas)
        left = Counter(r.site for r in replicas if r.id not in gone)
        cap = site_cap(len(replicas) - count, sites=len(before), critical_share=share)
        if sum(min(n, cap) for n in before.values()) >= len(replicas) - count:  # reachable
            assert max(left.values(), default=0) <= cap
        if share == 0.0:  # nothing forced: not-ready replicas always go first
            ready_gone = any(r.ready for r in replicas if r.id in gone)
            unready_kept = any(not r.ready for r in replicas if r.id not in gone)
            assert not (ready_gone and unready_kept)
