"""Tables. Every schema change here needs an Alembic revision in `migrations/versions/`:
`tests/db/test_migrations.py` fails when autogenerate finds a difference.

Times are stored timezone-aware (`TIMESTAMP WITH TIME ZONE` on PostgreSQL); on SQLite,
which has no such type, `UtcDateTime` stores ISO text and gives back aware UTC values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    Unicode,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Refuses naive datetimes on the way in and returns aware UTC ones on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only auto-increments an INTEGER PRIMARY KEY, not a BIGINT one.
BigIntPk = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON()}


class SiteRow(Base):
    __tablename__ = "sites"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    region: Mapped[str] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(String(128))
    grid_zone: Mapped[str] = mapped_column(String(64))
    private: Mapped[bool] = mapped_column(Boolean)
    pue: Mapped[float] = mapped_column(Float)
    health: Mapped[str] = mapped_column(String(16))
    health_reason: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime]


class PoolRow(Base):
    __tablename__ = "gpu_pools"

    id: Mapped[str] = mapped_column(String(160), primary_key=True)
    site: Mapped[str] = mapped_column(ForeignKey("sites.name", ondelete="CASCADE"), index=True)
    gpu_model: Mapped[str] = mapped_column(String(64))
    gpu_memory_gb: Mapped[float] = mapped_column(Float)
    gpus_per_node: Mapped[int] = mapped_column(Integer)
    nodes: Mapped[int] = mapped_column(Integer)
    mig_profiles: Mapped[list[str]] = mapped_column(JSON)
    price_on_demand: Mapped[float] = mapped_column(Float)
    price_spot: Mapped[float | None] = mapped_column(Float)
    cpu_per_node: Mapped[float] = mapped_column(Float)
    memory_gb_per_node: Mapped[float] = mapped_column(Float)
    # the nodes it offers now, in order (positions in the engine's view)
    node_names: Mapped[list[str]] = mapped_column(JSON, default=list)
    # the site-declared node pool its nodes are in (`codec.node_pool_to_json`); None: none
    node_pool: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime]


class NodeRow(Base):
    """The allocation ledger of one node of a pool, by node name: the broker's bookings of
    CPU and memory, and what others' pods hold (`foreign_*`, refreshed from inventory).

    Bookings change only by conditional UPDATEs (see the repository), so two broker
    replicas can never hand out the same capacity twice. A node that leaves its pool keeps
    its row while placements still hold it."""

    __tablename__ = "ledger_nodes"

    pool_id: Mapped[str] = mapped_column(
        ForeignKey("gpu_pools.id", ondelete="CASCADE"), primary_key=True
    )
    node: Mapped[str] = mapped_column(String(253), primary_key=True)
    cpu_milli: Mapped[int] = mapped_column(BigInteger, default=0)
    memory_mb: Mapped[int] = mapped_column(BigInteger, default=0)
    foreign_cpu_milli: Mapped[int] = mapped_column(BigInteger, default=0)
    foreign_memory_mb: Mapped[int] = mapped_column(BigInteger, default=0)


class GpuRow(Base):
    """The allocation ledger of one GPU of a node: milli-GPUs booked by the broker, and
    held by others' pods (`foreign_milli`, refreshed from inventory)."""

    __tablename__ = "ledger_gpus"

    pool_id: Mapped[str] = mapped_column(
        ForeignKey("gpu_pools.id", ondelete="CASCADE"), primary_key=True
    )
    node: Mapped[str] = mapped_column(String(253), primary_key=True)
    gpu: Mapped[int] = mapped_column(Integer, primary_key=True)
    allocated_milli: Mapped[int] = mapped_column(BigInteger, default=0)
    foreign_milli: Mapped[int] = mapped_column(BigInteger, default=0)


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
        Index("ix_jobs_state_tier_seq", "state", "tier", "seq"),
        Index("ix_jobs_tenant_seq", "tenant", "seq"),
    )

    seq: Mapped[int] = mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    tenant: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    tier: Mapped[str] = mapped_column(String(4))
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    state_reason: Mapped[str] = mapped_column(Text, default="")
    spec: Mapped[dict[str, Any]]
    gpu_milli: Mapped[int] = mapped_column(BigInteger)
    estimated_duration_s: Mapped[int] = mapped_column(BigInteger)
    deadline: Mapped[datetime | None]
    not_before: Mapped[datetime | None]  # a deferred job waits for this time
    preemptible: Mapped[bool] = mapped_column(Boolean)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # the service this job is a replica of (`broker.domain.services`), else None
    service_id: Mapped[str | None] = mapped_column(String(40), index=True)
    # its current condition (`broker.domain.conditions`), None when it has none
    condition_type: Mapped[str | None] = mapped_column(String(16))
    condition_reason: Mapped[str | None] = mapped_column(String(40))
    condition_message: Mapped[str | None] = mapped_column(Text)
    condition_since: Mapped[datetime | None]


class PlacementRow(Base):
    __tablename__ = "placements"
    # "the active placement of job X": without it SQLite (no statistics) walks the `active`
    # index, every active placement, for each lookup by job
    __table_args__ = (Index("ix_placements_job_id_active", "job_id", "active"),)

    id: Mapped[int] = mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    site: Mapped[str] = mapped_column(ForeignKey("sites.name"))
    pool_id: Mapped[str] = mapped_column(ForeignKey("gpu_pools.id"))
    gpu_milli: Mapped[int] = mapped_column(BigInteger)
    price_per_gpu_hour: Mapped[float] = mapped_column(Float)
    spot: Mapped[bool] = mapped_column(Boolean)
    estimated_cost_usd: Mapped[float] = mapped_column(Float)
    estimated_gco2: Mapped[float | None] = mapped_column(Float)
    external_id: Mapped[str | None] = mapped_column(String(255))
    node_names: Mapped[list[str]] = mapped_column(JSON, default=list)  # one per job node
    node_gpus: Mapped[list[list[int]]] = mapped_column(JSON, default=list)  # GPUs on each
    cpu_milli: Mapped[int] = mapped_column(BigInteger, default=0)  # per node
    memory_mb: Mapped[int] = mapped_column(BigInteger, default=0)  # per node
    borrowed: Mapped[bool] = mapped_column(Boolean, default=False)  # on another tenant's quota
    run: Mapped[str | None] = mapped_column(String(64))  # the run updates name; None before 0010
    active: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]


class JobEventRow(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime]
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")


class FootprintRow(Base):
    """One run's energy and emissions, recorded when it ends (carbon/accounting.py).

    A job that ran more than once (preempted, then run again) has one row per run.
    """

    __tablename__ = "footprints"

    id: Mapped[int] = mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    tenant: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(4))
    site: Mapped[str] = mapped_column(String(64))
    grid_zone: Mapped[str] = mapped_column(String(64))
    gpu_model: Mapped[str] = mapped_column(String(64))
    gpus: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(16))  # succeeded, failed, cancelled, preempted
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    energy_kwh: Mapped[float] = mapped_column(Float)
    gpu_energy_kwh: Mapped[float] = mapped_column(Float)
    intensity_gco2_per_kwh: Mapped[float | None] = mapped_column(Float)
    intensity_sources: Mapped[str] = mapped_column(String(255), default="")
    intensity_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    intensity_forecast: Mapped[bool] = mapped_column(Boolean, default=False)
    gco2: Mapped[float | None] = mapped_column(Float)
    baseline_site: Mapped[str | None] = mapped_column(String(64))
    baseline_gco2: Mapped[float | None] = mapped_column(Float)
    avoided_gco2: Mapped[float] = mapped_column(Float, default=0.0)
    added_gco2: Mapped[float] = mapped_column(Float, default=0.0)
    cost_usd: Mapped[float] = mapped_column(Float)
    gpu_hours: Mapped[float] = mapped_column(Float)
    recorded_at: Mapped[datetime]
    service_id: Mapped[str | None] = mapped_column(String(40), index=True)  # a replica's


class LeaseRow(Base):
    """A named lease: the replica in `holder` may act for the group until `expires_at`.

    broker/db/leases.py takes and renews it in one conditional upsert.
    """

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime]
    acquired_at: Mapped[datetime]  # when the current holder took it over
    renewed_at: Mapped[datetime]


# APScheduler 3's SQLAlchemyJobStore table, declared here only so that the migrations own it
# and `tests/db/test_migrations.py` sees it; the job store reads and writes it itself. The
# columns copy apscheduler/jobstores/sqlalchemy.py exactly.
apscheduler_jobs = Table(
    "apscheduler_jobs",
    Base.metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)


class CapacityActionRow(Base):
    """A burst or reclaim of cloud capacity, with why, what it costs and emits (broker/burst)."""

    __tablename__ = "capacity_actions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # burst, reclaim
    provider_site: Mapped[str] = mapped_column(String(64))
    joins_site: Mapped[str] = mapped_column(String(64))
    gpu_model: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(Integer)
    spot: Mapped[bool] = mapped_column(Boolean)
    instance_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    reason: Mapped[str] = mapped_column(Text)
    for_jobs: Mapped[list[str]] = mapped_column(JSON, default=list)
    tenants: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # tenant → cost share
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    ready_at: Mapped[datetime | None]
    released_at: Mapped[datetime | None]
    usd_per_hour: Mapped[float] = mapped_column(Float)
    gco2e_per_hour: Mapped[float | None] = mapped_column(Float)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    gco2e: Mapped[float | None] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(12), index=True)
    detail: Mapped[str] = mapped_column(Text, default="")


class BurstInstanceRow(Base):
    """One instance a burst started: joined when its node showed up, idle since when, and
    when and why it was released. Cost and carbon are counted from these rows."""

    __tablename__ = "burst_instances"

    provider_site: Mapped[str] = mapped_column(String(64), primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    action_id: Mapped[str] = mapped_column(
        ForeignKey("capacity_actions.id", ondelete="CASCADE"), index=True
    )
    gpu_model: Mapped[str] = mapped_column(String(64))
    gpus: Mapped[int] = mapped_column(Integer)
    zone: Mapped[str] = mapped_column(String(64))
    spot: Mapped[bool] = mapped_column(Boolean)
    usd_per_hour: Mapped[float] = mapped_column(Float)
    gco2e_per_hour: Mapped[float | None] = mapped_column(Float)
    launched_at: Mapped[datetime]
    provider_id: Mapped[str] = mapped_column(String(255), default="")
    node: Mapped[str | None] = mapped_column(String(255))
    joined_at: Mapped[datetime | None]
    idle_since: Mapped[datetime | None]
    released_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), index=True)
    release_reason: Mapped[str] = mapped_column(Text, default="")
    reclaim_id: Mapped[str | None] = mapped_column(String(64))


class CarbonReadingRow(Base):
    """One observed (not forecast) hourly grid intensity, kept so the broker's own carbon
    forecaster can learn a zone's pattern where no provider forecasts (carbon.recorded)."""

    __tablename__ = "carbon_readings"

    zone: Mapped[str] = mapped_column(String(64), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    gco2_per_kwh: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(64))


class SimRunRow(Base):
    """A simulated site's run, visible to every replica (`broker.domain.runs`)."""

    __tablename__ = "sim_runs"

    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    run: Mapped[str] = mapped_column(String(64))
    dispatched_at: Mapped[datetime]
    start_delay_s: Mapped[float] = mapped_column(Float)
    run_s: Mapped[float] = mapped_column(Float)
    exit_code: Mapped[int] = mapped_column(Integer)


class ServiceRow(Base):
    """An inference service: its spec (the API body's shape), state and generation."""

    __tablename__ = "services"
    __table_args__ = (
        UniqueConstraint("tenant", "idempotency_key", name="uq_services_tenant_idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(128))
    spec: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16))
    generation: Mapped[int] = mapped_column(Integer)
    desired: Mapped[int] = mapped_column(Integer, default=0)
    load: Mapped[float | None] = mapped_column(Float)  # the last observed, at `load_at`
    load_at: Mapped[datetime | None]
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ServiceDecisionRow(Base):
    """One autoscaler decision with its reason (the newest few per service are kept)."""

    __tablename__ = "service_decisions"

    id: Mapped[int] = mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(
        ForeignKey("services.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime]
    desired: Mapped[int] = mapped_column(Integer)
    ready: Mapped[int] = mapped_column(Integer)
    load: Mapped[float | None] = mapped_column(Float)
    mode: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)


class ServiceLoadRow(Base):
    """A service's observed load (requests/s or in flight) at one time: its history, which
    the autoscaler's windows and the load forecaster read."""

    __tablename__ = "service_load"

    service_id: Mapped[str] = mapped_column(
        ForeignKey("services.id", ondelete="CASCADE"), primary_key=True
    )
    at: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class ServiceSignalRow(Base):
    """An external trigger that raises a service's floor for a period."""

    __tablename__ = "service_signals"

    id: Mapped[int] = mapped_column(BigIntPk, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(
        ForeignKey("services.id", ondelete="CASCADE"), index=True
    )
    start: Mapped[datetime]
    until: Mapped[datetime]
    replicas: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]


class SiteStartupRow(Base):
    """How long a service replica takes to serve at a site (image pull, model load), as a
    moving average of what the controller measured: remembered across restarts."""

    __tablename__ = "site_startups"

    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    seconds: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime]
