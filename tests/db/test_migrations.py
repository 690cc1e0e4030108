"""The schema is exactly what Alembic's migrations build, on both backends, and upgrades
keep the data of databases built by older revisions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from broker.db.connection import (
    alembic_config,
    create_engine,
    current_revision,
    head_revision,
    upgrade,
)
from broker.db.models import Base

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def start_over_at(engine: AsyncEngine, revision: str) -> None:
    """Drop every table (the test databases are at head) and migrate up to `revision`."""

    def reset(conn: Connection) -> None:
        existing = MetaData()
        existing.reflect(conn)  # every table, whatever later revisions added
        existing.drop_all(conn)

    async with engine.begin() as conn:
        await conn.run_sync(reset)
    await upgrade(engine, revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Bring the schema down to `revision` (as `upgrade`: on SQLite without foreign keys)."""

    def run(sync_conn: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        command.downgrade(cfg, revision)

    if engine.dialect.name != "sqlite":
        async with engine.begin() as conn:
            await conn.run_sync(run)
        return
    migrator = create_engine(engine.url.render_as_string(hide_password=False), foreign_keys=False)
    try:
        async with migrator.begin() as conn:
            await conn.run_sync(run)
    finally:
        await migrator.dispose()


async def ledger_at_head(
    conn: AsyncConnection, pool: str = "s/H100"
) -> tuple[dict[str, list[int]], dict[str, tuple[int, int]], list[tuple[Any, ...]]]:
    """The pool's ledger (milli-GPUs per GPU, and CPU and memory, per node name) and the
    placements' nodes, GPUs, CPU and memory, by job."""
    gpus: dict[str, list[int]] = {}
    for node, milli, foreign in await conn.execute(
        text(
            "SELECT node, allocated_milli, foreign_milli FROM ledger_gpus WHERE pool_id = :p "
            "ORDER BY node, gpu"
        ),
        {"p": pool},
    ):
        assert foreign == 0
        gpus.setdefault(node, []).append(milli)
    nodes: dict[str, tuple[int, int]] = {}
    for node, cpu, mem, fcpu, fmem in await conn.execute(
        text(
            "SELECT node, cpu_milli, memory_mb, foreign_cpu_milli, foreign_memory_mb "
            "FROM ledger_nodes WHERE pool_id = :p ORDER BY node"
        ),
        {"p": pool},
    ):
        assert (fcpu, fmem) == (0, 0)
        nodes[node] = (cpu, mem)
    held = [
        (job, _json(names), _json(on), cpu, mem)
        for job, names, on, cpu, mem in await conn.execute(
            text(
                "SELECT job_id, node_names, node_gpus, cpu_milli, memory_mb FROM placements "
                "WHERE pool_id = :p ORDER BY job_id"
            ),
            {"p": pool},
        )
    ]
    return gpus, nodes, held


async def test_migrations_match_the_models(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        assert await current_revision(engine) == head_revision()

        def diff(conn: Connection) -> list[Any]:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, Base.metadata))

        async with engine.connect() as conn:
            changes = await conn.run_sync(diff)
        assert changes == [], f"models changed without a migration: {changes}"
    finally:
        await engine.dispose()


async def test_upgrade_is_idempotent_and_builds_every_table(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        await upgrade(engine)

        def tables(conn: Connection) -> set[str]:
            return set(inspect(conn).get_table_names())

        async with engine.connect() as conn:
            names = await conn.run_sync(tables)
        assert names >= {
            "jobs",
            "job_events",
            "placements",
            "gpu_pools",
            "sites",
            "alembic_version",
        }
    finally:
        await engine.dispose()


async def test_upgrade_from_0001_moves_allocations_onto_nodes(database_url: str) -> None:
    """A database with running work at revision 0001 keeps its allocation per node."""
    engine = create_engine(database_url)
    try:
        await start_over_at(engine, "0001")
        t0 = T0
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO sites VALUES ('s', 'sim', 'r', 'l', 'Z', true, 1.2, "
                    "'healthy', '', :t)"
                ),
                {"t": t0},
            )
            # pool: 2 nodes x 8 GPUs, 12 of 16 allocated at pool level
            await conn.execute(
                text(
                    "INSERT INTO gpu_pools VALUES ('s/H100', 's', 'H100', 80, 8, 2, '[]', "
                    "2.0, NULL, 96, 1024, 16000, 12000, :t)"
                ),
                {"t": t0},
            )
            for job, milli in (("j1", 8000), ("j2", 4000)):
                await conn.execute(
                    text(
                        "INSERT INTO jobs (id, tenant, name, tier, kind, state, state_reason, "
                        "spec, gpu_milli, estimated_duration_s, preemptible, version, "
                        "created_at, updated_at) VALUES (:j, 't', 'n', 'P2', 'training', "
                        "'running', '', '{}', :m, 60, false, 1, :t, :t)"
                    ),
                    {"j": job, "m": milli, "t": t0},
                )
                await conn.execute(
                    text(
                        "INSERT INTO placements (job_id, site, pool_id, gpu_milli, "
                        "price_per_gpu_hour, spot, estimated_cost_usd, active, created_at) "
                        "VALUES (:j, 's', 's/H100', :m, 2.0, false, 1.0, true, :t)"
                    ),
                    {"j": job, "m": milli, "t": t0},
                )
        await upgrade(engine)
        async with engine.connect() as conn:
            gpus, nodes, held = await ledger_at_head(conn)
        # 0002 spread them over the nodes first-fit; 0009 put each on its node's first GPUs
        assert gpus == {"0": [1000] * 8, "1": [1000] * 4 + [0] * 4}
        # an empty spec asks the defaults: 1 core, 4 GiB
        assert nodes == {"0": (1000, 4096), "1": (1000, 4096)}
        assert held == [
            ("j1", ["0"], [list(range(8))], 1000, 4096),
            ("j2", ["1"], [list(range(4))], 1000, 4096),
        ]
    finally:
        await engine.dispose()


def resources(gpus: int = 1, *, cpu: float = 1.0, memory_gb: float = 4.0, **more: Any) -> str:
    """A job spec as 0008 stored it, with what the upgrade reads: its resources."""
    spec = {"resources": {"gpus": gpus, "cpu": cpu, "memory_gb": memory_gb, **more}}
    return json.dumps(spec)


# (job, spec, GPUs in all, node positions, active) at 0008, in placement order
AT_0008: list[tuple[str, str, int, list[int], bool]] = [
    ("j1", resources(4, cpu=8, memory_gb=64), 4000, [0], True),
    ("j2", resources(2, nodes=2, cpu=2.5, memory_gb=10.5), 4000, [0, 1], True),  # a gang
    ("j3", resources(2), 2000, [0], True),
    ("j4", resources(gpu_fraction=0.5, cpu=0.5, memory_gb=2), 500, [1], True),
    ("j5", resources(gpu_fraction=0.3, cpu=4.03, memory_gb=0.1), 300, [1], True),
    ("j6", resources(8), 8000, [1], False),  # finished: holds nothing
    ("j7", resources(2, nodes=2), 4000, [1, 2], True),  # node 2 left the pool
]


async def test_0009_lays_active_placements_out_on_gpus_and_downgrades_back(
    database_url: str,
) -> None:
    """A database with running work at 0008 books each placement's GPUs, CPU and memory
    on its nodes (named by their positions), and goes back to per-node totals."""
    engine = create_engine(database_url)
    try:
        await start_over_at(engine, "0008")
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO sites VALUES ('s', 'sim', 'r', 'l', 'Z', true, 1.2, "
                    "'healthy', '', :t)"
                ),
                {"t": T0},
            )
            for pool, per_node, count in (("s/H100", 8, 2), ("s/T4", 4, 1)):
                await conn.execute(
                    text(
                        "INSERT INTO gpu_pools (id, site, gpu_model, gpu_memory_gb, "
                        "gpus_per_node, nodes, mig_profiles, price_on_demand, price_spot, "
                        "cpu_per_node, memory_gb_per_node, updated_at) VALUES "
                        "(:p, 's', 'H100', 80, :g, :n, '[]', 2.0, NULL, 96, 1024, :t)"
                    ),
                    {"p": pool, "g": per_node, "n": count, "t": T0},
                )
            for job, spec, milli, positions, active in AT_0008:
                await conn.execute(
                    text(
                        "INSERT INTO jobs (id, tenant, name, tier, kind, state, state_reason, "
                        "spec, gpu_milli, estimated_duration_s, preemptible, version, "
                        "created_at, updated_at) VALUES (:j, 't', 'n', 'P2', 'training', "
                        ":s, '', :spec, :m, 60, false, 1, :t, :t)"
                    ),
                    {
                        "j": job,
                        "s": "running" if active else "succeeded",
                        "spec": spec,
                        "m": milli,
                        "t": T0,
                    },
                )
                await conn.execute(
                    text(
                        "INSERT INTO placements (job_id, site, pool_id, gpu_milli, "
                        "price_per_gpu_hour, spot, estimated_cost_usd, active, created_at, "
                        "node_indices, borrowed) VALUES (:j, 's', 's/H100', :m, 2.0, false, "
                        "1.0, :a, :t, :n, false)"
                    ),
                    {"j": job, "m": milli, "a": active, "t": T0, "n": json.dumps(positions)},
                )
            # the old ledger's totals per node (the upgrade lays placements out afresh)
            await conn.execute(
                text(
                    "INSERT INTO pool_nodes (pool_id, idx, allocated_milli) VALUES "
                    "('s/H100', 0, 8000), ('s/H100', 1, 4800), ('s/T4', 0, 0)"
                )
            )

        await upgrade(engine)

        async with engine.connect() as conn:
            gpus, nodes, held = await ledger_at_head(conn)
            t4_gpus, t4_nodes, _ = await ledger_at_head(conn, "s/T4")
            names = dict(
                (pool, _json(n))
                for pool, n in await conn.execute(text("SELECT id, node_names FROM gpu_pools"))
            )
        assert names == {"s/H100": ["0", "1"], "s/T4": ["0"]}
        # node 0: j1 on GPUs 0-3, then the gang's 2 and j3's 2 on the lowest free ones;
        # node 1: the gang on 0-1, both shares on GPU 2 (best fit: 500 + 300), then j7's
        # half of its gang on the lowest free GPUs (its other half is on no node)
        assert gpus == {"0": [1000] * 8, "1": [1000, 1000, 800, 1000, 1000, 0, 0, 0]}
        assert nodes == {
            "0": (8000 + 2500 + 1000, 65536 + 10752 + 4096),
            # 4.03 cores are 4030m, as `Resources.demand` has it
            "1": (2500 + 500 + 4030 + 1000, 10752 + 2048 + 103 + 4096),
        }
        assert held == [
            ("j1", ["0"], [[0, 1, 2, 3]], 8000, 65536),
            ("j2", ["0", "1"], [[4, 5], [0, 1]], 2500, 10752),
            ("j3", ["0"], [[6, 7]], 1000, 4096),
            ("j4", ["1"], [[2]], 500, 2048),
            ("j5", ["1"], [[2]], 4030, 103),
            ("j6", ["1"], [], 1000, 4096),  # history keeps its node, books nothing
            ("j7", ["1", "2"], [[3, 4], []], 1000, 4096),
        ]
        assert (t4_gpus, t4_nodes) == ({"0": [0] * 4}, {"0": (0, 0)})

        await downgrade(engine, "0008")

        async with engine.connect() as conn:
            totals = (
                await conn.execute(
                    text(
                        "SELECT pool_id, idx, allocated_milli FROM pool_nodes ORDER BY pool_id, idx"
                    )
                )
            ).all()
            indices = [
                (job, _json(n))
                for job, n in await conn.execute(
                    text("SELECT job_id, node_indices FROM placements ORDER BY job_id")
                )
            ]
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert [tuple(t) for t in totals] == [
            ("s/H100", 0, 8000),
            ("s/H100", 1, 4800),
            ("s/T4", 0, 0),
        ]
        assert indices == [(job, positions) for job, _, _, positions, _ in AT_0008]
        assert not tables & {"ledger_nodes", "ledger_gpus"}

        await upgrade(engine)  # and up again: the same ledger
        async with engine.connect() as conn:
            assert await ledger_at_head(conn) == (gpus, nodes, held)
    finally:
        await engine.dispose()


async def test_0012_adds_job_conditions_and_downgrades_back(database_url: str) -> None:
    """Jobs from before 0012 have no condition; a downgrade drops the columns, keeping jobs."""
    engine = create_engine(database_url)

    def job_columns(conn: Connection) -> set[str]:
        return {c["name"] for c in inspect(conn).get_columns("jobs")}

    try:
        await start_over_at(engine, "0011")
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO jobs (id, tenant, name, tier, kind, state, state_reason, "
                    "spec, gpu_milli, estimated_duration_s, preemptible, version, "
                    "created_at, updated_at) VALUES ('job-old', 't', 'n', 'P1', 'inference', "
                    "'pending', 'submitted', '{}', 1000, 60, false, 1, :t, :t)"
                ),
                {"t": T0},
            )
        await upgrade(engine)
        async with engine.begin() as conn:
            assert {
                "condition_type",
                "condition_reason",
                "condition_message",
                "condition_since",
            } <= await conn.run_sync(job_columns)
            row = (
                await conn.execute(text("SELECT state, condition_type, condition_since FROM jobs"))
            ).one()
            assert tuple(row) == ("pending", None, None)
            await conn.execute(
                text(
                    "UPDATE jobs SET condition_type = 'Waiting', condition_reason = 'NoCapacity',"
                    " condition_message = 'm', condition_since = :t"
                ),
                {"t": T0},
            )

        await downgrade(engine, "0011")
        async with engine.begin() as conn:
            assert not {c for c in await conn.run_sync(job_columns) if c.startswith("condition")}
            assert (await conn.execute(text("SELECT id FROM jobs"))).scalar_one() == "job-old"
        await upgrade(engine)
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()
